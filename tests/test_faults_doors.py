"""Doors the fault trials opened (issue 18, items 6-10), each shut and held shut by a test.

- ``rmflow up --host 0.0.0.0`` without authentication is refused before anything starts.
- A recipe's local ``model`` is resolved once (symlinks followed), checked, and that path is
  what training loads; a missing one is refused before any stage.
- An empty source file is an error naming it, never a source of 0 pairs.
- ``kill -9`` of ``rmflow run`` takes its temporary Prefect server with it.
"""

from __future__ import annotations

import base64
import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from rmcore.config import PROJECT_ROOT, ConfigError
from rmcore.recipe import load_recipe
from rmflow import stack, stack_prefect, stack_procs

# --------------------------------------------------------------------- 6: exposing the stack

AUTH_ENV = ("PREFECT_SERVER_API_AUTH_STRING", "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD")


def _no_spawn(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make starting a stack process fail loudly (and start nothing): the names asked for."""
    asked: list[str] = []

    def spawn(name, *args, **kwargs):
        asked.append(name)
        raise AssertionError(f"`up` started {name} bound to a public address")

    monkeypatch.setattr(stack_procs, "spawn", spawn)
    return asked


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "my-box.example.org", ""])
def test_up_refuses_a_public_host_without_authentication(
    host: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in AUTH_ENV:
        monkeypatch.delenv(key, raising=False)
    asked = _no_spawn(monkeypatch)
    cfg = stack.StackConfig(home=tmp_path / "home", host=host, project_dir=PROJECT_ROOT)
    with pytest.raises(RuntimeError) as refused:
        stack.up(cfg)
    message = str(refused.value)
    assert message.startswith("refusing --host")
    for needed in (*AUTH_ENV, "deployments/README.md", "127.0.0.1"):
        assert needed in message
    assert asked == []
    assert not (tmp_path / "home").exists()  # nothing written, nothing started


def test_half_configured_authentication_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stack, "mlflow_auth_installed", lambda: True)
    prefect_only = {"PREFECT_SERVER_API_AUTH_STRING": "admin:s3cret"}
    gaps = stack.exposure_gaps("0.0.0.0", prefect_only)
    assert len(gaps) == 1 and gaps[0].startswith("MLflow")
    gaps = stack.exposure_gaps("0.0.0.0", {"PREFECT_SERVER_API_AUTH_STRING": "admin:", "MLFLOW_TRACKING_USERNAME": "a",
                                           "MLFLOW_TRACKING_PASSWORD": "b"})
    assert len(gaps) == 1 and gaps[0].startswith("Prefect")  # no password in the auth string
    monkeypatch.setattr(stack, "mlflow_auth_installed", lambda: False)
    full = {"PREFECT_SERVER_API_AUTH_STRING": "admin:s3cret", "MLFLOW_TRACKING_USERNAME": "admin",
            "MLFLOW_TRACKING_PASSWORD": "pw"}
    assert stack.exposure_gaps("0.0.0.0", full) == ["MLflow: its basic-auth app needs flask-wtf (pip install 'mlflow[auth]')"]
    for loopback in ("127.0.0.1", "127.0.0.2", "::1", "localhost"):
        assert stack.exposure_gaps(loopback, {}) == []


def test_an_exposed_stack_runs_both_servers_with_authentication(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "admin:s3cret")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "ada")
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "pw")
    cfg = stack.StackConfig(home=tmp_path, host="0.0.0.0")
    env = stack.child_env(cfg)
    assert env["PREFECT_API_AUTH_STRING"] == "admin:s3cret"  # workers and deploy authenticate
    assert env["MLFLOW_AUTH_ADMIN_PASSWORD"] == "pw"
    mlflow_cmd = stack.commands(cfg)[stack.MLFLOW]
    assert mlflow_cmd[mlflow_cmd.index("--app-name") + 1] == "basic-auth"
    stack.write_mlflow_auth_config(cfg, env)
    ini = Path(env["MLFLOW_AUTH_CONFIG_PATH"]).read_text()
    assert "admin_username = ada" in ini and "pw" not in ini  # no secret on disk
    loopback = stack.StackConfig(home=tmp_path)
    assert "--app-name" not in stack.commands(loopback)[stack.MLFLOW]
    assert "MLFLOW_AUTH_CONFIG_PATH" not in stack.child_env(loopback)


def test_stack_api_calls_send_the_auth_string(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str | None] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.headers.get("Authorization"))
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
        monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "admin:s3cret")
        stack_prefect.api(f"http://127.0.0.1:{server.server_port}/api", "GET", "/work_pools/cpu")
    finally:
        server.shutdown()
    assert seen == ["Basic " + base64.b64encode(b"admin:s3cret").decode()]


# --------------------------------------------------------------------- 8: model paths


def _recipe(path: Path, model: str) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "doors", "data": {"sources": [{"source": "shp"}]}, "train": {"model": model},
    }))  # fmt: skip
    return path


def test_a_relative_model_is_loaded_where_it_was_checked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``./x`` is relative to the project wherever the run starts, and training gets that path."""
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "deployments" / "recipes").mkdir(parents=True)  # a decoy beside the cwd
    monkeypatch.chdir(elsewhere)
    loaded = load_recipe(_recipe(tmp_path / "r.yaml", "./deployments/recipes"))
    assert loaded.train.model == str(PROJECT_ROOT / "deployments" / "recipes")


@pytest.mark.parametrize("model", ["./link", "link", "tmp/x"])
def test_a_model_folder_in_the_current_directory_cannot_escape(
    model: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``./link -> /etc`` and ``tmp/x -> /etc`` in the cwd: refused, never handed to the loader."""
    cwd = tmp_path / "cwd"
    (cwd / "tmp").mkdir(parents=True)
    (cwd / "link").symlink_to("/etc", target_is_directory=True)
    (cwd / "tmp" / "x").symlink_to("/etc", target_is_directory=True)
    monkeypatch.chdir(cwd)
    with pytest.raises(ConfigError, match=r"train\.model: .* does not exist .*relative to"):
        load_recipe(_recipe(tmp_path / "r.yaml", model))


def test_a_model_path_without_dot_slash_is_a_path_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``deployments/recipes`` names a folder of the project: resolved and checked like ``./...``."""
    monkeypatch.chdir(tmp_path)
    loaded = load_recipe(_recipe(tmp_path / "r.yaml", "deployments/recipes"))
    assert loaded.train.model == str(PROJECT_ROOT / "deployments" / "recipes")
    assert load_recipe(_recipe(tmp_path / "r.yaml", "google/gemma-2b-it")).train.model == "google/gemma-2b-it"


def test_a_missing_local_model_is_refused_before_any_stage(tmp_path: Path) -> None:
    from rmflow.commands.common import load_checked_recipe

    recipe = _recipe(tmp_path / "r.yaml", str(tmp_path / "no-such-model"))
    with pytest.raises(ConfigError, match="no-such-model.*does not exist"):
        load_checked_recipe(str(recipe), None, train=True)  # what `rmflow run` does first
    (tmp_path / "no-such-model").mkdir()
    assert load_checked_recipe(str(recipe), None, train=True).train.model == str(tmp_path / "no-such-model")


# --------------------------------------------------------------------- 7: empty sources


def _hh_file(data_dir: Path, name: str) -> Path:
    path = data_dir / "Anthropic" / "hh-rlhf" / "helpful-base" / name
    path.parent.mkdir(parents=True)
    return path


def test_an_empty_source_file_is_an_error_naming_it(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from rmflow.cli import main

    empty = _hh_file(tmp_path / "data", "train.jsonl")
    empty.write_bytes(b"")
    code = main(["clean", "hh-rlhf/helpful-base", "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 1
    assert f"{empty}: holds no rows" in err
    assert not (tmp_path / "out").exists()


def test_an_empty_parquet_source_fails_its_download_for_good(tmp_path: Path) -> None:
    from rmcore.data.sources.mirror import EmptySourceFile
    from rmcore.data.stages import download_source, retry_can_help

    empty = _hh_file(tmp_path / "data", "train.parquet")
    pq.write_table(pa.table({"chosen": pa.array([], pa.string()), "rejected": pa.array([], pa.string())}), empty)
    with pytest.raises(EmptySourceFile, match=f"{empty}: holds no rows") as failed:
        download_source("hh-rlhf/helpful-base", "train", tmp_path / "data", tmp_path / "raw")
    assert not retry_can_help(failed.value)  # permanent: the flow does not retry it


def test_a_source_that_gave_no_pairs_fails_a_mixture_that_requires_all(tmp_path: Path) -> None:
    from data_contracts import PAIRS
    from rmcore import io
    from rmcore.data.mixtures import CleanedInput, MixtureConfig, SourceSpec, materialise_mixture

    pairs = tmp_path / "pairs.parquet"
    io.write_table(PAIRS.schema.empty_table(), pairs, PAIRS)
    spec = SourceSpec(source="shp")
    config = MixtureConfig(name="doors", sources=(spec,), require_all=True)
    item = CleanedInput(key=spec.key, pairs_path=pairs, digest="0", stats={})
    with pytest.raises(ValueError, match=f"source {spec.key} gave no pairs .*require_all"):
        materialise_mixture(config, [item], tmp_path / "mix")


# --------------------------------------------------------------------- 9: the temporary server


def _server_pids(root: int) -> list[int]:
    found = []
    for pid in stack_procs.descendants(root):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"prefect.server.api.server:create_app" in cmdline:
            found.append(pid)
    return found


def _start_run(tmp_path: Path) -> subprocess.Popen:
    """``rmflow run demo`` with no stack up, in its own session; output in run.log."""
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "RMFLOW_HOME": str(tmp_path / "home"),
           "RMFLOW_WORK_DIR": str(tmp_path / "work")}
    env.pop("PREFECT_API_URL", None)
    with open(tmp_path / "run.log", "wb") as log:
        return subprocess.Popen([sys.executable, "-m", "rmflow.cli", "run", "demo"], cwd=tmp_path, env=env,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


@pytest.mark.slow
def test_kill_9_of_rmflow_run_takes_its_temporary_prefect_server_with_it(tmp_path: Path) -> None:
    proc = _start_run(tmp_path)
    servers: list[int] = []
    try:
        deadline = time.monotonic() + 300
        while not servers and proc.poll() is None and time.monotonic() < deadline:
            servers = _server_pids(proc.pid)
            time.sleep(0.2)
        assert servers, f"no Prefect server started; {(tmp_path / 'run.log').read_text()[-2000:]}"
        time.sleep(2)  # let it get going (it holds its database by now)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(stack_procs.is_alive(p) for p in servers) and time.monotonic() < deadline:
            time.sleep(0.2)
        left = [p for p in servers if stack_procs.is_alive(p)]
        assert left == [], f"the temporary Prefect server outlived `rmflow run`: {left}"
    finally:
        for pid in [*servers, *stack_procs.descendants(proc.pid)]:
            if stack_procs.is_alive(pid):
                os.kill(pid, signal.SIGKILL)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_a_failed_temporary_server_start_stays_off_the_console(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    """Two runs racing on one database: the loser's traceback goes to the log, retried quietly."""
    from rmflow import temporary_prefect

    crash = "import sys; sys.stderr.write('Traceback (most recent call last):\\nNoSuchTableError: x\\n'); sys.exit(1)"
    monkeypatch.setattr(temporary_prefect, "server_command", lambda port: [sys.executable, "-c", crash])
    monkeypatch.setattr(temporary_prefect.time, "sleep", lambda s: None)
    log = tmp_path / "logs" / "prefect-temporary.log"
    with pytest.raises(RuntimeError, match=f"did not start in 3 attempts .*NoSuchTableError.*{log}"):
        temporary_prefect.start(log, timeout=30)
    assert "Traceback" not in capfd.readouterr().err
    assert log.read_text().count("NoSuchTableError") == temporary_prefect.ATTEMPTS


# --------------------------------------------------------------------- 10: smaller doors


def test_a_missing_rewardbench_subset_names_the_file_and_the_option(tmp_path: Path) -> None:
    from rmcore.data.sample_rewardbench import write_rewardbench_sample
    from rmcore.evaluate.official import IncompleteSetError
    from rmcore.evaluate.rewardbench import evaluate_rewardbench

    path = write_rewardbench_sample(tmp_path / "data", per_subset=1)
    table = pq.read_table(path)
    partial = tmp_path / "partial.parquet"
    pq.write_table(table.filter(pa.compute.not_equal(table["subset"], "donotanswer")), partial)
    with pytest.raises(IncompleteSetError) as refused:
        evaluate_rewardbench(tmp_path / "no-model", partial, tmp_path / "out")  # refused before the model loads
    message = str(refused.value)
    assert str(partial) in message and "donotanswer" in message
    assert "eval.allow_missing_subsets: true" in message and "--allow-missing-subsets" in message


def test_a_killed_registration_leaves_no_unfinished_logged_model(mlflow_uri: str, tmp_path: Path) -> None:
    """Killed while logging (the logged model stays PENDING): the retry deletes it, then logs anew."""
    import mlflow
    from mlflow.entities import LoggedModelStatus
    from mlflow_helpers import tiny_reward_dir

    import tracking
    from tracking import registry

    run_id = tracking.start_pipeline_run("pipe-doors", config=tracking.TrackingConfig(tracking_uri=mlflow_uri))
    c = tracking.client()
    experiment_id = c.get_run(run_id).info.experiment_id
    dead = c.create_logged_model(experiment_id, name=registry.MODEL_ARTIFACT, source_run_id=run_id)
    assert dead.status == LoggedModelStatus.PENDING  # what a kill during log_model leaves
    result = registry.register_reward_model(
        tiny_reward_dir(tmp_path / "m"), name="doors", run_id=run_id, tags={}, rewardbench_overall=50.0
    )
    models = c.search_logged_models(experiment_ids=[experiment_id])
    assert [m.status for m in models] == [LoggedModelStatus.READY]
    assert mlflow.get_logged_model(models[0].model_id).source_run_id == run_id and result.created
