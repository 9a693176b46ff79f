"""The local stack: Prefect server + MLflow server + work pools + deployments + workers.

``up`` starts everything in the background under one home directory (``$RMFLOW_HOME``,
default ``./.rmflow``)::

    <home>/stack.json          host, ports, URLs, project dir (read by status and down)
    <home>/logs/<name>.log     output of each process (and deploy.log)
    <home>/pids/<name>.pid     pid of each process we started
    <home>/prefect/            PREFECT_HOME: the server's SQLite database
    <home>/mlflow/             MLflow's SQLite database and artifacts
    <home>/results/            PREFECT_LOCAL_STORAGE_PATH: persisted task results
    <home>/runs/               RMFLOW_WORK_DIR of flow runs (unless already set): stage outputs

``down`` stops exactly the processes recorded there; ``status`` reports them.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import json
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rmflow import stack_prefect, stack_procs

log = logging.getLogger(__name__)

PREFECT = "prefect-server"
MLFLOW = "mlflow-server"
SERVERS = (PREFECT, MLFLOW)
WORKERS = tuple(f"worker-{pool}" for pool in stack_prefect.POOLS)


PREFECT_AUTH_ENV = "PREFECT_SERVER_API_AUTH_STRING"
"""``user:password`` the Prefect server requires of every API call (its health check excepted)."""
MLFLOW_USER_ENV, MLFLOW_PASSWORD_ENV = "MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD"
"""The MLflow admin the basic-auth app is started with; every MLflow client sends them."""
EXPOSING = "deployments/README.md, 'Exposing the stack beyond this machine'"


def is_loopback(host: str) -> bool:
    """True for an address only this machine reaches (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or "": it may resolve to a public interface
        return False


def mlflow_auth_installed() -> bool:
    """MLflow's basic-auth app can start (it needs flask-wtf, which plain ``mlflow`` leaves out)."""
    return importlib.util.find_spec("flask_wtf") is not None


def exposure_gaps(host: str, env: Mapping[str, str]) -> list[str]:
    """What is missing for servers bound to ``host`` to refuse unauthenticated clients ([] if nothing).

    Bound beyond loopback, an open Prefect API lets anyone on the network start flow runs on the
    workers, whose environment holds the user's tokens; an open MLflow lets anyone read and
    replace models. So both servers need authentication there.
    """
    if is_loopback(host):
        return []
    gaps = []
    user, _, password = env.get(PREFECT_AUTH_ENV, "").partition(":")
    if not user or not password:
        gaps.append(f"Prefect: set {PREFECT_AUTH_ENV}=user:password (the server's API auth string)")
    if not env.get(MLFLOW_USER_ENV) or not env.get(MLFLOW_PASSWORD_ENV):
        gaps.append(
            f"MLflow: set {MLFLOW_USER_ENV} and {MLFLOW_PASSWORD_ENV} (the admin of MLflow's basic-auth app)"
        )
    if not mlflow_auth_installed():
        gaps.append("MLflow: its basic-auth app needs flask-wtf (pip install 'mlflow[auth]')")
    return gaps


def check_exposure(host: str, env: Mapping[str, str]) -> None:
    """Refuse to bind ``host`` beyond loopback unless both servers will require authentication."""
    gaps = exposure_gaps(host, env)
    if gaps:
        raise RuntimeError(
            f"refusing --host {host or repr(host)}: anyone who reaches it could start flow runs on the "
            f"workers (their environment holds your tokens) and replace models, with no password. "
            f"Missing: {'; '.join(gaps)}. Or keep --host 127.0.0.1 behind an authenticating reverse "
            f"proxy; see {EXPOSING}"
        )


def default_home() -> Path:
    """``$RMFLOW_HOME`` or ``./.rmflow``, absolute."""
    return Path(os.environ.get("RMFLOW_HOME") or ".rmflow").resolve()


def default_project_dir() -> Path:
    """The nearest directory holding deployments/prefect.yaml: cwd upwards, else this checkout."""
    for candidate in (Path.cwd(), *Path.cwd().parents):
        if (candidate / "deployments" / "prefect.yaml").is_file():
            return candidate
    return Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class StackConfig:
    """Where the stack lives and listens."""

    home: Path = field(default_factory=default_home)
    """Root of logs, pids, databases and results."""
    host: str = "127.0.0.1"
    """Address both servers bind to; loopback only unless asked (then both require a password:
    ``check_exposure``)."""
    prefect_port: int = 4200
    mlflow_port: int = 5000
    project_dir: Path = field(default_factory=default_project_dir)
    """Directory `prefect deploy` runs in; flow runs use it as their working directory."""
    prefect_file: str = "deployments/prefect.yaml"
    """The deployments file, relative to project_dir."""
    timeout: float = 180.0
    """Seconds to wait for each server (and the workers) to become healthy."""

    def __post_init__(self) -> None:
        for name in ("prefect_port", "mlflow_port"):
            port = getattr(self, name)
            if not 0 < port < 65536:
                raise ValueError(f"{name}={port} is not a TCP port (1..65535)")
        if self.prefect_port == self.mlflow_port:
            raise ValueError(f"Prefect and MLflow cannot share port {self.prefect_port}")

    @property
    def exposed(self) -> bool:
        """Bound beyond loopback: the servers run with authentication on."""
        return not is_loopback(self.host)

    @property
    def client_host(self) -> str:
        """The address clients use: loopback when the servers bind every interface."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def prefect_url(self) -> str:
        return f"http://{self.client_host}:{self.prefect_port}"

    @property
    def prefect_api_url(self) -> str:
        return f"{self.prefect_url}/api"

    @property
    def mlflow_url(self) -> str:
        return f"http://{self.client_host}:{self.mlflow_port}"


def child_env(cfg: StackConfig) -> dict[str, str]:
    """Environment of every stack process (and so of every flow run a worker starts)."""
    env = dict(os.environ)
    env.update(
        {
            "RMFLOW_HOME": str(cfg.home),
            "PREFECT_HOME": str(cfg.home / "prefect"),
            "PREFECT_API_URL": cfg.prefect_api_url,
            "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{cfg.home / 'prefect' / 'prefect.db'}",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_TO_API_ENABLED": "true",
            # rmcore logs through `logging`: ship its records to the flow-run logs in the UI.
            "PREFECT_LOGGING_EXTRA_LOGGERS": "rmcore,tasks,flows",
            # A string result_storage is read as a block slug; a path must go here instead.
            "PREFECT_LOCAL_STORAGE_PATH": str(cfg.home / "results"),
            "MLFLOW_TRACKING_URI": cfg.mlflow_url,
            "MLFLOW_DISABLE_TELEMETRY": "true",
            "DO_NOT_TRACK": "1",
            "PYTHONUNBUFFERED": "1",
        }
    )
    # Stage outputs of flow runs started from the UI: the user's choice, else under the home.
    env.setdefault("RMFLOW_WORK_DIR", str(cfg.home / "runs"))
    if cfg.exposed:  # the server's auth string is what every client sends; MLflow's admin from env
        if env.get(PREFECT_AUTH_ENV):
            env["PREFECT_API_AUTH_STRING"] = env[PREFECT_AUTH_ENV]
        env["MLFLOW_AUTH_CONFIG_PATH"] = str(mlflow_auth_config(cfg))
        if env.get(MLFLOW_PASSWORD_ENV):
            env.setdefault("MLFLOW_AUTH_ADMIN_PASSWORD", env[MLFLOW_PASSWORD_ENV])
    return env


def mlflow_auth_config(cfg: StackConfig) -> Path:
    """MLflow's basic-auth settings for this home (no secret in it: the admin password comes from
    the environment on the first start): the admin is $MLFLOW_TRACKING_USERNAME."""
    return cfg.home / "mlflow" / "basic_auth.ini"


def write_mlflow_auth_config(cfg: StackConfig, env: Mapping[str, str]) -> None:
    path = mlflow_auth_config(cfg)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = sqlite:///{cfg.home / 'mlflow' / 'basic_auth.db'}\n"
        f"admin_username = {env.get(MLFLOW_USER_ENV, '')}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )


def commands(cfg: StackConfig) -> dict[str, list[str]]:
    """The command line of each stack process, by name."""
    py = sys.executable
    mlflow_dir = cfg.home / "mlflow"
    cmds = {
        PREFECT: [
            py,
            "-m",
            "prefect",
            "server",
            "start",
            "--host",
            cfg.host,
            "--port",
            str(cfg.prefect_port),
            "--analytics-off",
            "--no-prompt",
        ],
        MLFLOW: [
            py,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            f"sqlite:///{mlflow_dir / 'mlflow.db'}",
            "--serve-artifacts",
            "--artifacts-destination",
            str(mlflow_dir / "artifacts"),
            "--host",
            cfg.host,
            "--port",
            str(cfg.mlflow_port),
            "--workers",
            "1",
            *(["--app-name", "basic-auth"] if cfg.exposed else []),
        ],
    }
    for pool, name in zip(stack_prefect.POOLS, WORKERS):
        cmds[name] = [
            py,
            "-m",
            "prefect",
            "worker",
            "start",
            "--pool",
            pool,
            "--type",
            "process",
            "--name",
            f"rmflow-{pool}",
            "--no-create-pool-if-not-found",
            "--no-prompt",
        ]
    return cmds


def health_urls(cfg: StackConfig) -> dict[str, str]:
    return {PREFECT: f"{cfg.prefect_api_url}/health", MLFLOW: f"{cfg.mlflow_url}/health"}


def _running(home: Path, name: str) -> int | None:
    """The pid of ``name`` if the process we recorded still runs, else None."""
    pid = stack_procs.read_pid(home, name)
    return pid if pid is not None and stack_procs.is_ours(home, name, pid) else None


def _fail(cfg: StackConfig, name: str, why: str, started: list[str]) -> RuntimeError:
    """Log the tail of ``name``'s log, stop what this `up` started, build the error."""
    log_path = cfg.home / "logs" / f"{name}.log"
    log.error("%s %s; last lines of %s:\n%s", name, why, log_path, stack_procs.log_tail(log_path))
    for other in started:
        pid = stack_procs.read_pid(cfg.home, other)
        if pid is not None and stack_procs.is_ours(cfg.home, other, pid):
            stack_procs.stop(pid, timeout=10)
        stack_procs.remove_pid(cfg.home, other)
    return RuntimeError(f"{name} {why}; see {log_path} (stopped what this 'up' started)")


def _wait_healthy(cfg: StackConfig, names: list[str], t0: float, started: list[str]) -> dict[str, float]:
    """Poll each server's health URL until it answers 200; seconds from t0 per server."""
    urls = health_urls(cfg)
    ready: dict[str, float] = {}
    deadline = time.monotonic() + cfg.timeout
    while len(ready) < len(names):
        for name in names:
            if name in ready:
                continue
            pid = stack_procs.read_pid(cfg.home, name)
            if pid is None or not stack_procs.is_alive(pid):
                raise _fail(cfg, name, "exited during start-up", started)
            if stack_procs.http_ok(urls[name]):
                ready[name] = round(time.monotonic() - t0, 1)
                log.info("%s healthy after %.1f s", name, ready[name])
        if len(ready) < len(names):
            if time.monotonic() > deadline:
                late = next(n for n in names if n not in ready)
                raise _fail(cfg, late, f"not healthy at {urls[late]} after {cfg.timeout:g} s", started)
            time.sleep(0.5)
    return ready


def _wait_workers(cfg: StackConfig, t0: float, started: list[str]) -> float:
    """Wait until every pool reports a live worker (status READY); seconds from t0."""
    deadline = time.monotonic() + cfg.timeout
    pending = set(stack_prefect.POOLS)
    while pending:
        for pool, name in zip(stack_prefect.POOLS, WORKERS):
            if pool not in pending:
                continue
            pid = stack_procs.read_pid(cfg.home, name)
            if pid is None or not stack_procs.is_alive(pid):
                raise _fail(cfg, name, "exited during start-up", started)
            if stack_prefect.api(cfg.prefect_api_url, "GET", f"/work_pools/{pool}").get("status") == "READY":
                pending.discard(pool)
        if pending:
            if time.monotonic() > deadline:
                name = f"worker-{min(pending)}"
                raise _fail(cfg, name, f"did not report to the Prefect server in {cfg.timeout:g} s", started)
            time.sleep(0.5)
    return round(time.monotonic() - t0, 1)


def _save(cfg: StackConfig) -> None:
    from rmcore.io import write_json  # atomic; imported here to keep `rmflow up` start-up light

    record = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    record.update(prefect_url=cfg.prefect_url, prefect_api_url=cfg.prefect_api_url, mlflow_url=cfg.mlflow_url)
    write_json(record, cfg.home / "stack.json")


def saved_config(home: Path) -> dict[str, Any] | None:
    """The settings ``rmflow up`` last started the stack in ``home`` with (None if never)."""
    try:
        return json.loads((home / "stack.json").read_text())
    except (OSError, ValueError):
        return None


def _check_same_stack(cfg: StackConfig) -> None:
    """Refuse to start a second stack in one home with other ports while the first runs."""
    saved = saved_config(cfg.home)
    if not saved or not any(_running(cfg.home, n) for n in (*SERVERS, *WORKERS)):
        return
    for key in ("host", "prefect_port", "mlflow_port"):
        if saved.get(key) != getattr(cfg, key):
            raise RuntimeError(
                f"a stack already runs from {cfg.home} with {key}={saved.get(key)} "
                f"(asked {getattr(cfg, key)}); run 'rmflow down' first or use another RMFLOW_HOME"
            )


def _start_servers(cfg: StackConfig, env: dict[str, str], cmds: dict[str, list[str]]) -> list[str]:
    """Spawn the servers that do not run yet (refusing ports someone else holds); their names."""
    to_start = [n for n in SERVERS if _running(cfg.home, n) is None]
    for name, port in ((PREFECT, cfg.prefect_port), (MLFLOW, cfg.mlflow_port)):
        if name in to_start and stack_procs.port_open(cfg.client_host, port):
            raise RuntimeError(
                f"port {port} on {cfg.client_host} is taken by another process "
                f"(not started from {cfg.home}); choose another with --{name.split('-')[0]}-port"
            )
    for name in to_start:
        stack_procs.spawn(name, cmds[name], env, cfg.project_dir, cfg.home)
    return to_start


def up(cfg: StackConfig, redeploy: bool = False) -> dict[str, Any]:
    """Start whatever part of the stack is not running, deploy, and wait until all is healthy.

    Idempotent: when everything already runs, nothing starts and the result says
    ``already_up: true`` (``redeploy`` re-runs ``prefect deploy`` anyway).
    """
    prefect_file = cfg.project_dir / cfg.prefect_file
    if not prefect_file.is_file():
        raise FileNotFoundError(f"deployments file {prefect_file} not found; pass --project-dir")
    check_exposure(cfg.host, os.environ)
    _check_same_stack(cfg)
    for sub in ("logs", "pids", "prefect", "mlflow", "results"):
        (cfg.home / sub).mkdir(parents=True, exist_ok=True)
    env, cmds, t0 = child_env(cfg), commands(cfg), time.monotonic()
    if cfg.exposed:
        write_mlflow_auth_config(cfg, env)
    started = _start_servers(cfg, env, cmds)
    _save(cfg)
    # Prefect first: pools, workers and deploy go on while MLflow is still starting.
    timings: dict[str, float] = _wait_healthy(cfg, [PREFECT], t0, started)
    workers_down = [n for n in WORKERS if _running(cfg.home, n) is None]
    already_up = not started and not workers_down
    setup = not already_up or redeploy
    for pool in stack_prefect.POOLS if setup else ():
        stack_prefect.ensure_process_pool(cfg.prefect_api_url, pool)
    for name in workers_down:
        stack_procs.spawn(name, cmds[name], env, cfg.project_dir, cfg.home)
        started.append(name)
    if setup:
        t_deploy = time.monotonic()
        try:
            stack_prefect.deploy_all(cfg.project_dir, prefect_file, env, cfg.home / "logs" / "deploy.log")
        except RuntimeError:
            _fail(cfg, "deploy", "failed", started)
            raise
        timings["deploy"] = round(time.monotonic() - t_deploy, 1)
    timings.update(_wait_healthy(cfg, [MLFLOW], t0, started))
    if workers_down:
        timings["workers"] = _wait_workers(cfg, t0, started)
    result = status(cfg.home)
    result.update(already_up=already_up, started=started, startup_seconds=timings)
    return result


def down(home: Path | None = None, timeout: float = 15.0) -> dict[str, Any]:
    """Stop every process recorded under ``home`` (workers first); remove their pid files."""
    home = home or default_home()
    stopped: dict[str, str] = {}
    names = stack_procs.recorded_names(home)
    for name in sorted(names, key=lambda n: (n in SERVERS, n)):
        pid = stack_procs.read_pid(home, name)
        if pid is None or not stack_procs.is_ours(home, name, pid):
            stopped[name] = "not running"
        else:
            stopped[name] = stack_procs.stop(pid, timeout)
            log.info("%s (pid %d) %s", name, pid, stopped[name])
        stack_procs.remove_pid(home, name)
    return {"home": str(home), "stopped": stopped}


def status(home: Path | None = None) -> dict[str, Any]:
    """What runs: per process pid, alive, URL and health; pools and deployments if reachable."""
    home = home or default_home()
    saved = saved_config(home) or {}
    urls = {PREFECT: saved.get("prefect_url"), MLFLOW: saved.get("mlflow_url")}
    health = {PREFECT: f"{saved.get('prefect_api_url')}/health", MLFLOW: f"{saved.get('mlflow_url')}/health"}
    processes: dict[str, dict[str, Any]] = {}
    for name in (*SERVERS, *WORKERS):
        pid = stack_procs.read_pid(home, name)
        alive = pid is not None and stack_procs.is_ours(home, name, pid)
        entry: dict[str, Any] = {"pid": pid, "alive": alive, "log": str(home / "logs" / f"{name}.log")}
        if name in SERVERS:
            entry["url"] = urls[name]
            entry["healthy"] = bool(alive and urls[name] and stack_procs.http_ok(health[name]))
        processes[name] = entry
    result: dict[str, Any] = {
        "home": str(home),
        "prefect_url": urls[PREFECT],
        "mlflow_url": urls[MLFLOW],
        "running": all(p["alive"] for p in processes.values()),
        "processes": processes,
    }
    if processes[PREFECT]["healthy"]:
        result["pools"] = stack_prefect.pools(saved["prefect_api_url"])
        result["deployments"] = stack_prefect.deployments(saved["prefect_api_url"])
        result["recent_runs"] = stack_prefect.recent_runs(saved["prefect_api_url"], saved["prefect_url"])
    return result
