"""Helpers for the local-stack tests: free ports, a stand-in project, the CLI, listeners, Chromium.

Until the lead's flows exist, ``project_for_stack`` builds a temporary project that holds the
real deployments/prefect.yaml and recipes plus stand-in flows at the same entrypoints (the
pipeline stand-in logs an MLflow run and registers a model), so the stack, the deployments
and the browser checks run against real Prefect and MLflow servers either way.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
PREFECT_YAML = REPO / "deployments" / "prefect.yaml"
CHROMIUM = Path(os.environ.get("RMFLOW_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--hide-scrollbars", "--window-size=1400,900",
]

STUB_FLOW = '''"""Stand-in for the lead's {stage} flow (same entrypoint and parameters)."""
from prefect import flow


@flow(name="rmflow-{stage}")
def {func}(recipe: str = "deployments/recipes/demo.yaml", data_dir: str | None = None) -> dict:
    """Stand-in {stage} stage."""
    return {{"stage": "{stage}", "recipe": recipe}}
'''

STUB_PIPELINE = '''"""Stand-in end-to-end flow: one MLflow run and a registered model with alias champion."""
import mlflow
from mlflow import MlflowClient
from prefect import flow, task

MODEL = "rmflow-stand-in-reward-model"


@task
def register(recipe: str) -> dict:
    mlflow.set_experiment("rmflow-stand-in")
    with mlflow.start_run(run_name="stand-in-pipeline") as run:
        mlflow.log_param("recipe", recipe)
        mlflow.log_metric("rewardbench_overall", 0.5)
    client = MlflowClient()
    try:
        client.create_registered_model(MODEL)
    except mlflow.exceptions.MlflowException:
        pass
    version = client.create_model_version(MODEL, source=f"runs:/{run.info.run_id}/model", run_id=run.info.run_id)
    client.set_registered_model_alias(MODEL, "champion", version.version)
    return {"run_id": run.info.run_id, "model": MODEL, "version": version.version}


@flow(name="rmflow-pipeline")
def pipeline_flow(recipe: str = "deployments/recipes/demo.yaml", data_dir: str | None = None) -> dict:
    """Stand-in pipeline."""
    return register(recipe)
'''


def entrypoints() -> dict[str, str]:
    """Deployment name -> entrypoint, from deployments/prefect.yaml."""
    spec = yaml.safe_load(PREFECT_YAML.read_text())
    return {d["name"]: d["entrypoint"] for d in spec["deployments"]}


def flows_ready() -> bool:
    """True when every entrypoint's file exists in the repository (the lead's flows landed)."""
    return all((REPO / e.split(":")[0]).is_file() for e in entrypoints().values())


def stub_project(root: Path) -> Path:
    """A project with the real prefect.yaml + recipes and stand-in flows at every entrypoint."""
    (root / "deployments").mkdir(parents=True)
    shutil.copy(PREFECT_YAML, root / "deployments" / "prefect.yaml")
    shutil.copytree(REPO / "deployments" / "recipes", root / "deployments" / "recipes")
    (root / "flows").mkdir()
    for entry in entrypoints().values():
        path, func = entry.split(":")
        stage = func.removesuffix("_flow")
        text = STUB_PIPELINE if stage == "pipeline" else STUB_FLOW.format(stage=stage, func=func)
        (root / path).write_text(text)
    return root


def project_for_stack(tmp: Path) -> tuple[Path, bool]:
    """The repository if its flows exist, else a stand-in project; and whether it is real.

    RMFLOW_TEST_STAND_IN_FLOWS=1 forces the stand-in (seconds instead of a demo training run).
    """
    if flows_ready() and os.environ.get("RMFLOW_TEST_STAND_IN_FLOWS") != "1":
        return REPO, True
    return stub_project(tmp / "project"), False


def free_port() -> int:
    """A TCP port nothing listens on right now (the kernel's pick)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rmflow(*args: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``rmflow ARGS --json`` in a subprocess; its JSON result (fails the test on error)."""
    proc = subprocess.run(
        [sys.executable, "-m", "rmflow.cli", *args, "--json"],
        check=False, capture_output=True, text=True, timeout=timeout, cwd=REPO,
    )
    if proc.returncode != 0:
        raise AssertionError(f"rmflow {' '.join(args)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def rmflow_fails(*args: str, timeout: float = 120) -> str:
    """Run ``rmflow ARGS`` expecting failure; its stderr."""
    proc = subprocess.run([sys.executable, "-m", "rmflow.cli", *args], check=False, capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    return proc.stderr


def listeners(port: int) -> set[str]:
    """Local addresses (hex, as /proc/net/tcp* prints them) that LISTEN on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                found.add(address)
    return found


LOOPBACK_V4 = "0100007F"  # 127.0.0.1 in /proc/net/tcp's little-endian hex


def get_json(url: str, body: Any = None, timeout: float = 10, busy_retries: int = 10) -> Any:
    """GET (or POST ``body``) JSON; a 503 (the SQLite-backed server busy on a loaded machine) is
    retried a few times before it fails the test."""
    data = None if body is None else json.dumps(body).encode()
    for attempt in range(busy_retries + 1):
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            if e.code != 503 or attempt == busy_retries:
                raise
            time.sleep(2.0)
    raise AssertionError("unreachable")


def run_deployment(
    api_url: str, flow_name: str, deployment: str, timeout: float, parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Start a run of a deployment through the REST API (as the UI's form does) and wait for a final state."""
    dep = get_json(f"{api_url}/deployments/name/{flow_name}/{deployment}")
    body = {"parameters": parameters} if parameters else {}
    run = get_json(f"{api_url}/deployments/{dep['id']}/create_flow_run", body)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = get_json(f"{api_url}/flow_runs/{run['id']}")
        if run["state"] and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        time.sleep(2)
    raise AssertionError(f"flow run {run['id']} of {flow_name}/{deployment} not finished in {timeout} s")


def chromium(url: str, screenshot: Path | None = None, budget_ms: int = 20000) -> str:
    """Load ``url`` in headless Chromium; the DOM after scripts ran (and a PNG + the DOM beside it if asked)."""
    with tempfile.TemporaryDirectory(prefix="rmflow-chromium-") as profile:
        base = [str(CHROMIUM), *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}"]
        dom = subprocess.run([*base, "--dump-dom", url], check=False, capture_output=True, text=True, timeout=180)
        if screenshot is not None:
            subprocess.run([*base, f"--screenshot={screenshot}", url], check=False, capture_output=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    if screenshot is not None:
        screenshot.with_suffix(".html").write_text(dom.stdout)  # beside the PNG, for reading after a failure
    return dom.stdout
