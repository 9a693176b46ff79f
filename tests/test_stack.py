"""The local stack: `rmflow up/status/down` against real Prefect and MLflow servers.

The slow test brings the whole stack up on free ports with a temporary home, checks what
runs and where it listens, that `up` is idempotent, and that `down` stops every process it
started and frees the ports. The fast tests cover process stopping and refusals.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stack_helpers import (
    LOOPBACK_V4,
    REPO,
    entrypoints,
    free_port,
    listeners,
    project_for_stack,
    rmflow,
    rmflow_fails,
)

from rmflow import stack, stack_procs

EXPECTED_PROCESSES = {"prefect-server", "mlflow-server", "worker-cpu", "worker-gpu"}


# --- fast: processes, pid files, refusals -------------------------------------------------


def _spawn_stubborn(home: Path) -> int:
    """A process group whose leader ignores SIGTERM and whose child sleeps: both must go."""
    code = "import signal,subprocess,time;signal.signal(signal.SIGTERM,signal.SIG_IGN);" \
           "subprocess.Popen(['sleep','300']);time.sleep(300)"
    return stack_procs.spawn("stubborn", [sys.executable, "-c", code], os.environ, home, home)


def test_stop_kills_a_group_that_ignores_sigterm(tmp_path: Path) -> None:
    pid = _spawn_stubborn(tmp_path)
    time.sleep(1.0)  # let it install its handler and start its child
    children = stack_procs.descendants(pid)
    assert len(children) == 1
    assert stack_procs.stop(pid, timeout=1.0) == "killed"
    assert not stack_procs.is_alive(pid)
    assert not stack_procs.is_alive(children[0])


def test_stop_terminates_a_plain_process(tmp_path: Path) -> None:
    pid = stack_procs.spawn("sleeper", ["sleep", "300"], os.environ, tmp_path, tmp_path)
    assert stack_procs.read_pid(tmp_path, "sleeper") == pid
    assert stack_procs.stop(pid, timeout=10) == "terminated"
    assert not stack_procs.is_alive(pid)


def test_down_spares_a_process_that_reused_a_recorded_pid(tmp_path: Path) -> None:
    """A pid file whose start time does not match the live process is not ours: no signal."""
    other = subprocess.Popen(["sleep", "300"])
    try:
        (tmp_path / "pids").mkdir()
        (tmp_path / "pids" / "worker-cpu.pid").write_text(f"{other.pid}\n")
        (tmp_path / "pids" / "worker-cpu.start").write_text("1\n")  # booted at tick 1: not it
        result = stack.down(tmp_path, timeout=1)
        assert result["stopped"] == {"worker-cpu": "not running"}
        assert other.poll() is None
        assert list((tmp_path / "pids").iterdir()) == []
    finally:
        other.kill()
        other.wait()


def test_down_with_nothing_recorded(tmp_path: Path) -> None:
    assert rmflow("down", "--home", str(tmp_path)) == {"home": str(tmp_path), "stopped": {}}


def test_status_with_nothing_started(tmp_path: Path) -> None:
    result = rmflow("status", "--home", str(tmp_path))
    assert result["running"] is False
    assert set(result["processes"]) == EXPECTED_PROCESSES
    assert all(p["pid"] is None and not p["alive"] for p in result["processes"].values())
    assert "pools" not in result


def test_up_refuses_a_port_taken_by_another_process(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        taken = s.getsockname()[1]
        err = rmflow_fails("up", "--home", str(tmp_path / "home"), "--prefect-port", str(taken),
                           "--mlflow-port", str(free_port()))
    assert f"port {taken} on 127.0.0.1 is taken by another process" in err
    assert "--prefect-port" in err
    assert len(err.strip().splitlines()) == 1
    assert list((tmp_path / "home" / "pids").glob("*.pid")) == []


def test_config_rejects_one_port_for_both(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cannot share port 4300"):
        stack.StackConfig(home=tmp_path, prefect_port=4300, mlflow_port=4300)


def test_child_env_points_every_client_at_the_stack(tmp_path: Path) -> None:
    cfg = stack.StackConfig(home=tmp_path, host="0.0.0.0", prefect_port=4301, mlflow_port=5001)
    env = stack.child_env(cfg)
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4301/api"
    assert env["MLFLOW_TRACKING_URI"] == "http://127.0.0.1:5001"
    assert env["PREFECT_HOME"] == str(tmp_path / "prefect")
    assert env["PREFECT_LOCAL_STORAGE_PATH"] == str(tmp_path / "results")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert env["MLFLOW_DISABLE_TELEMETRY"] == "true"
    server = stack.commands(cfg)["prefect-server"]
    assert server[server.index("--host") + 1] == "0.0.0.0"


# --- slow: the real stack ------------------------------------------------------------------


@pytest.fixture(scope="module")
def live_stack(tmp_path_factory: pytest.TempPathFactory):
    """`rmflow up` on free ports in a temporary home; `rmflow down` afterwards in any case."""
    tmp = tmp_path_factory.mktemp("stack")
    project, real = project_for_stack(tmp)
    home = tmp / "home"
    ports = {"prefect": free_port(), "mlflow": free_port()}
    args = ["--home", str(home), "--project-dir", str(project),
            "--prefect-port", str(ports["prefect"]), "--mlflow-port", str(ports["mlflow"])]
    try:
        result = rmflow("up", *args)
        yield {"home": home, "ports": ports, "args": args, "up": result, "real_flows": real}
    finally:
        subprocess.run([sys.executable, "-m", "rmflow.cli", "down", "--home", str(home)],
                       check=False, capture_output=True, timeout=120)


@pytest.mark.slow
def test_stack_up_status_idempotent_down(live_stack: dict) -> None:
    home, ports, up = live_stack["home"], live_stack["ports"], live_stack["up"]
    prefect_url = f"http://127.0.0.1:{ports['prefect']}"
    # Everything started, healthy, at the URLs asked for.
    assert set(up["started"]) == EXPECTED_PROCESSES
    assert up["already_up"] is False
    assert up["prefect_url"] == prefect_url
    assert up["mlflow_url"] == f"http://127.0.0.1:{ports['mlflow']}"
    assert up["running"] is True
    assert up["processes"]["prefect-server"]["healthy"] is True
    assert up["processes"]["mlflow-server"]["healthy"] is True
    assert {"prefect-server", "mlflow-server", "deploy", "workers"} <= set(up["startup_seconds"])
    # Both servers listen on loopback only.
    assert listeners(ports["prefect"]) == {LOOPBACK_V4}
    assert listeners(ports["mlflow"]) == {LOOPBACK_V4}
    # Pools and one deployment per prefect.yaml entry, train on gpu, the schedule paused.
    assert up["pools"] == {"cpu": "process", "gpu": "process"}
    deployments = {d["name"]: d for d in up["deployments"]}
    assert set(deployments) == set(entrypoints())
    assert {name: d["entrypoint"] for name, d in deployments.items()} == entrypoints()
    assert {name for name, d in deployments.items() if d["pool"] == "gpu"} == {"train"}
    assert deployments["pipeline"]["schedules"] == [{"cron": "0 3 * * 1", "active": False}]
    # Logs and pid files where the docs say.
    for name in EXPECTED_PROCESSES:
        assert (home / "logs" / f"{name}.log").stat().st_size > 0
        assert stack_procs.read_pid(home, name) == up["processes"][name]["pid"]
    assert json.loads((home / "stack.json").read_text())["prefect_port"] == ports["prefect"]

    # A second `up` starts nothing and says so; status agrees.
    again = rmflow("up", *live_stack["args"])
    assert again["already_up"] is True and again["started"] == []
    status = rmflow("status", "--home", str(home))
    assert status["running"] is True
    assert status["recent_runs"] == []
    assert {n: p["pid"] for n, p in status["processes"].items()} == \
        {n: p["pid"] for n, p in up["processes"].items()}

    # `down` stops every process (and its children) and frees both ports.
    families = {n: [p["pid"], *stack_procs.descendants(p["pid"])] for n, p in up["processes"].items()}
    assert all(len(f) >= 1 for f in families.values())
    down = rmflow("down", "--home", str(home))
    assert down["stopped"] == {name: "terminated" for name in EXPECTED_PROCESSES}
    for name, family in families.items():
        assert [pid for pid in family if stack_procs.is_alive(pid)] == [], name
    assert list((home / "pids").glob("*.pid")) == []
    assert listeners(ports["prefect"]) == set()
    assert listeners(ports["mlflow"]) == set()
    assert rmflow("status", "--home", str(home))["running"] is False



def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def test_up_that_times_out_says_where_to_look_and_leaves_nothing_running(tmp_path: Path) -> None:
    home = tmp_path / "home"
    prefect_port = free_port()
    err = rmflow_fails("up", "--home", str(home), "--project-dir", str(REPO),
                       "--prefect-port", str(prefect_port), "--mlflow-port", str(free_port()),
                       "--timeout", "0.5")
    reason = err.strip().splitlines()[-1]
    assert reason.startswith("rmflow up: error: ")
    assert "not healthy at http://127.0.0.1:" in reason and "after 0.5 s" in reason
    assert f"see {home / 'logs'}/" in reason
    assert "last lines of" in err  # the log tail went to stderr before the one-line reason
    assert list((home / "pids").glob("*.pid")) == []
    assert _processes_mentioning(str(home)) == []
    assert listeners(prefect_port) == set()
