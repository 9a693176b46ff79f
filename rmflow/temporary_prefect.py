"""The temporary Prefect API of ``rmflow run`` when no stack is up: a child that ends with its parent.

Prefect's own ephemeral server (``SubprocessASGIServer``) outlives a ``kill -9`` of the process
that started it (about 235 MB, reparented to init) and prints a server's traceback on the console
when two starts race on one SQLite database. This one runs the same app (``uvicorn`` with
``prefect.server.api.server:create_app``, UI off), started through ``with_parent`` so that on
Linux the kernel sends it SIGTERM when ``rmflow run`` dies however it dies; its output goes to
``<RMFLOW_HOME>/logs/prefect-temporary-<pid>.log``, and a start that fails (a race on the
database, a port taken meanwhile) is retried on a new port.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from rmflow.stack_procs import log_tail

log = logging.getLogger(__name__)

ATTEMPTS = 3


def free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_command(port: int) -> list[str]:
    """The uvicorn command Prefect's ephemeral server runs, as a child that ends with this process."""
    import prefect

    from rmcore.train.launch import with_parent

    return with_parent([
        "-m", "uvicorn", "--app-dir", str(Path(prefect.__file__).parent.parent),
        "--factory", "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(port),
        "--log-level", "error", "--lifespan", "on",
    ])  # fmt: skip


def server_env() -> dict[str, str]:
    """This process's environment and Prefect settings (profile included), as the ephemeral server gets."""
    from prefect.settings import get_current_settings

    env = {**os.environ, **get_current_settings().to_environment_variables(exclude_unset=True)}
    env.update(PREFECT_UI_ENABLED="0", PREFECT__SERVER_EPHEMERAL="1", PREFECT__SERVER_FINAL="1")
    env.pop("PREFECT_API_URL", None)
    return env


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start(log_path: Path, timeout: float) -> tuple[subprocess.Popen, str]:
    """Start the server; its process and API URL once healthy. RuntimeError naming the log if not."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = server_env()
    for attempt in range(1, ATTEMPTS + 1):
        port = free_port()
        url = f"http://127.0.0.1:{port}/api"
        with open(log_path, "ab") as out:
            out.write(f"\n=== rmflow: temporary Prefect API on {url} (attempt {attempt})\n".encode())
            out.flush()
            proc = subprocess.Popen(
                server_command(port), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
            )
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if _healthy(url):
                log.info("temporary Prefect API on %s (pid %d, log %s)", url, proc.pid, log_path)
                return proc, url
            time.sleep(0.2)
        stop(proc)
        if attempt < ATTEMPTS:  # e.g. another run migrating the same database: its traceback is in the log
            log.info("temporary Prefect API did not start (exit %s); retrying, see %s", proc.returncode, log_path)
            time.sleep(attempt)
    last = next((ln for ln in reversed(log_tail(log_path, 20).splitlines()) if ln.strip()), "")
    raise RuntimeError(
        f"the temporary Prefect API did not start in {ATTEMPTS} attempts ({last.strip()}); see {log_path}, "
        "or start the local stack with `rmflow up`"
    )


@contextlib.contextmanager
def temporary_prefect_api(home: Path, timeout: float) -> Iterator[str]:
    """A Prefect API for this process (and its children) while the block runs; stopped after it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    proc, url = start(home / "logs" / f"prefect-temporary-{os.getpid()}.log", timeout)
    previous = os.environ.get("PREFECT_API_URL")
    os.environ["PREFECT_API_URL"] = url  # for child processes
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        # Ship the run's last log lines and events while the server still answers.
        APILogWorker.drain_all(timeout=5)
        EventsWorker.drain_all(timeout=5)
        if previous is None:
            os.environ.pop("PREFECT_API_URL", None)
        else:
            os.environ["PREFECT_API_URL"] = previous
        stop(proc)
