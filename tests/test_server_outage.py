"""The Prefect server or the MLflow server goes away: before or in the middle of a pipeline run.

Real servers in subprocesses on 127.0.0.1, killed with SIGKILL (a crash, not a shutdown);
the run goes through ``rmflow run`` in a subprocess, as a user starts it. What must hold:

- the run fails with exit status 1 and a one-line reason that names the server's URL;
- nothing is half-registered: no model version exists after the failed run;
- once the server is back, a rerun completes and the registry holds exactly one version,
  whose artifacts load and score.

Client retries are cut short (MLFLOW_HTTP_REQUEST_MAX_RETRIES=0, PREFECT_CLIENT_MAX_RETRIES=1)
so the tests fail fast; by default MLflow retries for minutes and a short outage passes unseen.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from outage_helpers import (
    MODEL_NAME,
    mlflow_server,
    prefect_server,
    small_pipeline_recipe,
    start_rmflow_run,
    wait_for_training,
)
from stack_helpers import free_port

SERVER_VARS = ("PREFECT_API_URL", "MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The CLI's environment: the test isolation, its own homes, short client retries."""
    env = {
        **{k: v for k, v in os.environ.items() if k not in SERVER_VARS},
        "RMFLOW_HOME": str(tmp_path / "rmflow-home"),  # no local stack there: nothing to pick up
        "PREFECT_HOME": str(tmp_path / "prefect-client"),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
        "MLFLOW_HTTP_REQUEST_TIMEOUT": "10",
        "PREFECT_CLIENT_MAX_RETRIES": "1",
        **extra,
    }
    return env


def _reason(stderr: str) -> str:
    """The CLI's one-line reason (exactly one such line on stderr; Prefect may log after it)."""
    lines = [line for line in stderr.splitlines() if line.startswith("rmflow run: error: ")]
    assert len(lines) == 1, stderr[-3000:]
    return lines[0]


def _finish(proc, timeout: float = 900) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out, err


def _versions(tracking_uri: str) -> list:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    return client.search_model_versions(f"name = '{MODEL_NAME}'")


def _scores_one_row(model_uri: str, tracking_uri: str) -> float:
    """Load a registered version through the server (all its artifacts) and score one response."""
    import mlflow
    import numpy as np
    import pandas as pd

    saved = {k: os.environ.get(k) for k in SERVER_VARS}
    mlflow.set_tracking_uri(tracking_uri)
    mlflow.set_registry_uri(tracking_uri)
    try:
        model = mlflow.pyfunc.load_model(model_uri)
        rewards = model.predict(pd.DataFrame([{"prompt": "How do I bake bread?", "response": "Knead, rise, bake."}]))
    finally:  # set_*_uri also export env vars: restore them (later subprocesses inherit os.environ)
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    values = np.asarray(rewards, dtype=float).ravel()
    assert values.shape == (1,) and np.isfinite(values[0])
    return float(values[0])


def _kill_when_registered(server, uri: str, proc, timeout: float = 900) -> None:
    """Kill the server the moment model version 1 exists (alias, gate, leaderboards still to come)."""
    deadline = time.monotonic() + timeout
    while not _versions(uri):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"no model version appeared (run ended: {proc.poll()}):\n{proc.stderr.read()[-3000:]}")
        time.sleep(0.1)
    server.kill()


# --- the MLflow tracking server ------------------------------------------------------------


@pytest.mark.slow
def test_mlflow_server_down_before_the_run_is_named(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    run = small_pipeline_recipe(tmp_path)
    env = _env(tmp_path, MLFLOW_TRACKING_URI=f"http://127.0.0.1:{port}")
    code, _, err = _finish(start_rmflow_run(run, env))
    assert code == 1
    reason = _reason(err)
    assert reason.startswith("rmflow run: error: ") and f"http://127.0.0.1:{port}/" in reason, reason
    assert "Connection refused" in reason
    assert not list(Path(run["work"]).glob("models/*"))  # it never got as far as training


@pytest.mark.slow
def test_mlflow_server_killed_mid_run_then_rerun_registers_exactly_one_version(tmp_path: Path) -> None:
    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    env = _env(tmp_path, MLFLOW_TRACKING_URI=uri)
    store = tmp_path / "mlflow-store"
    store.mkdir()
    run = small_pipeline_recipe(tmp_path, epochs=3)
    server = mlflow_server(store, port, env).start()
    try:
        # 1. The tracking server crashes while the model trains.
        proc = start_rmflow_run(run, env)
        wait_for_training(run["work"], proc)
        server.kill()
        code, _, err = _finish(proc)
        assert code == 1, err[-3000:]
        reason = _reason(err)
        assert f"{uri}/api/" in reason and "Connection refused" in reason, reason
        server.start()  # back, on the same store
        assert _versions(uri) == []  # nothing half-registered

        # 2. It crashes again right after version 1 is created (alias, gate, leaderboards pending).
        proc = start_rmflow_run(run, env)
        _kill_when_registered(server, uri, proc)
        code, _, err = _finish(proc)
        assert code == 1, err[-3000:]
        assert f"{uri}/api/" in _reason(err)
        server.start()
        assert [str(v.version) for v in _versions(uri)] == ["1"]

        # 3. The rerun completes and reuses that version: exactly one, and it loads and scores.
        code, out, err = _finish(start_rmflow_run(run, env, "--json"))
        assert code == 0, err[-3000:]
        registered = json.loads(out)["registered"]
        assert (registered["version"], registered["created"], registered["champion"]) == (1, False, 1)
        assert [str(v.version) for v in _versions(uri)] == ["1"]
        _scores_one_row(f"models:/{MODEL_NAME}/1", uri)  # its artifacts are whole
    finally:
        server.kill()


# --- the Prefect API -----------------------------------------------------------------------


def test_prefect_api_down_before_the_run_is_named(tmp_path: Path) -> None:
    api = f"http://127.0.0.1:{free_port()}/api"
    run = small_pipeline_recipe(tmp_path)
    env = _env(tmp_path, PREFECT_API_URL=api, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}")
    code, _, err = _finish(start_rmflow_run(run, env), timeout=300)
    assert code == 1
    reason = _reason(err)
    assert reason.startswith("rmflow run: error: ") and api in reason, reason
    assert len(err.strip().splitlines()) <= 3, err  # a reason, not a traceback
    assert not (tmp_path / "work").exists() and not (tmp_path / "mlflow.db").exists()  # no work started


@pytest.mark.slow
def test_prefect_server_killed_mid_run_then_rerun_completes(tmp_path: Path) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = _env(tmp_path, PREFECT_API_URL=api, MLFLOW_TRACKING_URI=tracking)
    run = small_pipeline_recipe(tmp_path, epochs=3)
    server = prefect_server(tmp_path, port, env).start()
    try:
        proc = start_rmflow_run(run, env)
        wait_for_training(run["work"], proc)
        server.kill()  # the Prefect server crashes while the model trains
        code, _, err = _finish(proc)
        assert code == 1, err[-3000:]
        reason = _reason(err)
        assert reason.startswith("rmflow run: error: the Prefect API at ") and api in reason, reason
        assert "is not reachable" in reason and "rerun once it is back" in reason
        assert _versions(tracking) == []  # nothing half-registered

        server.start()  # back, on the same database
        code, out, err = _finish(start_rmflow_run(run, env, "--json"))
        assert code == 0, err[-3000:]
        assert json.loads(out)["registered"]["version"] == 1
        assert [str(v.version) for v in _versions(tracking)] == ["1"]
    finally:
        server.kill()


def test_a_lost_prefect_connection_is_reported_with_the_api_url() -> None:
    """The CLI's translation of httpx's bare "Connection refused", however deep in the chain."""
    import httpx
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from rmflow.commands.run import prefect_api_lost

    try:
        try:
            raise httpx.ConnectError("[Errno 111] Connection refused")
        except httpx.ConnectError as inner:
            raise RuntimeError("state proposal failed") from inner
    except RuntimeError as outer:
        with temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:4299/api"}):
            lost = prefect_api_lost(outer)
    assert str(lost).startswith("the Prefect API at http://127.0.0.1:4299/api is not reachable ([Errno 111]")
    assert prefect_api_lost(ValueError("a bug, not an outage")) is None
