"""Helpers for the security and server-outage tests: a small pipeline recipe, real Prefect and
MLflow server subprocesses on 127.0.0.1 that a test can kill, and ``rmflow run`` in a subprocess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import yaml
from tiny import build_tiny_model_dir
from train_helpers import update_train

REPO = Path(__file__).resolve().parents[1]
MODEL_NAME = "outage-reward"


def small_pipeline_recipe(root: Path, *, epochs: int = 1, model_name: str = MODEL_NAME) -> dict[str, str]:
    """Tiny model, a small generated mirror, two sources: the whole chain in about a minute.

    Returns the paths ``recipe``, ``data`` and ``work`` (as strings, for flows and the CLI).
    """
    from rmcore.data.sample_data import write_sample_mirror
    from rmcore.data.sample_rewardbench import write_rewardbench_sample

    model = build_tiny_model_dir(root / "tiny")
    data = write_sample_mirror(root / "data", rows_per_source=40)
    write_rewardbench_sample(data, per_subset=1)
    recipe = yaml.safe_load((REPO / "deployments/recipes/demo.yaml").read_text())
    recipe["data"]["sources"] = [{"source": "helpsteer", "pairing": "all-pairs"}, {"source": "hh-rlhf/helpful-base"}]
    recipe["data"]["heldout"] = [{"source": "hh-rlhf/helpful-base", "split": "test"}]
    update_train(
        recipe["train"],
        model=str(model), max_length=64, bf16=False, micro_batch=8, global_batch=8, epochs=epochs
    )
    recipe["eval"].update(sample_per_subset=1, bf16=False, max_length=64)
    recipe["register"] = {"model_name": model_name}
    path = root / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return {"recipe": str(path), "data": str(data), "work": str(root / "work")}


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return response.status == 200
    except OSError:
        return False


class Server:
    """A real server subprocess in its own process group (so a kill takes its workers too)."""

    def __init__(self, cmd: list[str], health_url: str, log: Path, env: dict[str, str]) -> None:
        self.cmd, self.health_url, self.log, self.env = cmd, health_url, log, env
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 240) -> Server:
        handle = open(self.log, "a")  # noqa: SIM115 (the child keeps it)
        self.proc = subprocess.Popen(
            self.cmd, stdout=handle, stderr=subprocess.STDOUT, env=self.env, cwd=REPO, start_new_session=True
        )
        handle.close()
        deadline = time.monotonic() + timeout
        while not healthy(self.health_url):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"{self.cmd[2:4]} not healthy at {self.health_url}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.5)
        return self

    def kill(self) -> None:
        """SIGKILL the whole group (a crash, not a shutdown) and reap it."""
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=30)
        self.proc = None


def mlflow_server(root: Path, port: int, env: dict[str, str]) -> Server:
    """``mlflow server`` with SQLite + served artifacts under ``root`` (as ``rmflow up`` runs it)."""
    cmd = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--serve-artifacts", "--artifacts-destination", str(root / "artifacts"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    return Server(cmd, f"http://127.0.0.1:{port}/health", root / "mlflow-server.log", env)


def prefect_server(root: Path, port: int, env: dict[str, str]) -> Server:
    """``prefect server start`` with its SQLite DB under ``root`` (PREFECT_HOME)."""
    env = {**env, "PREFECT_HOME": str(root / "prefect"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    cmd = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port),
           "--analytics-off", "--no-prompt"]
    return Server(cmd, f"http://127.0.0.1:{port}/api/health", root / "prefect-server.log", env)


def start_rmflow_run(run: dict[str, str], env: dict[str, str], *extra: str) -> subprocess.Popen:
    """``rmflow run RECIPE --data-dir --out [extra]`` in a subprocess (text stdout/stderr pipes)."""
    cmd = [sys.executable, "-m", "rmflow.cli", "run", run["recipe"], "--data-dir", run["data"],
           "--out", run["work"], *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def wait_for_training(work: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    """Return once the training task has started writing (its ``models/<key>.partial`` folder)."""
    deadline = time.monotonic() + timeout
    while not list((Path(work) / "models").glob("*.partial")):
        if proc.poll() is not None:
            raise AssertionError(f"rmflow run ended before training started:\n{proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("training did not start in time")
        time.sleep(0.2)
