"""``rmflow up`` / ``rmflow down`` / ``rmflow status``: the local Prefect + MLflow stack."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def _home(args: argparse.Namespace) -> Path:
    from rmflow.stack import default_home

    return Path(args.home).resolve() if args.home else default_home()


def _up(args: argparse.Namespace) -> dict[str, Any]:
    from rmflow.stack import StackConfig, default_project_dir

    cfg = StackConfig(
        home=_home(args),
        host=args.host,
        prefect_port=args.prefect_port,
        mlflow_port=args.mlflow_port,
        project_dir=Path(args.project_dir).resolve() if args.project_dir else default_project_dir(),
        prefect_file=args.prefect_file,
        timeout=args.timeout,
    )
    from rmflow.stack import up

    return up(cfg, redeploy=args.redeploy)


def _down(args: argparse.Namespace) -> dict[str, Any]:
    from rmflow.stack import down

    return down(_home(args), timeout=args.timeout)


def _status(args: argparse.Namespace) -> dict[str, Any]:
    from rmflow.stack import status

    return status(_home(args))


def _render_status(result: dict[str, Any]) -> None:
    out = sys.stdout
    if result.get("already_up"):
        out.write("rmflow: the stack is already up (nothing started)\n")
    elif "started" in result:
        out.write(f"rmflow: started {', '.join(result['started']) or 'nothing'}\n")
    for name, p in result["processes"].items():
        state = "running" if p["alive"] else "stopped"
        if "healthy" in p:
            state += ", healthy" if p["healthy"] else ", NOT healthy"
        url = f"  {p['url']}" if p.get("url") and p["alive"] else ""
        out.write(f"  {name:<15} pid {p['pid'] or '-':<8} {state}{url}\n")
    if "pools" in result:
        out.write(f"  work pools: {', '.join(f'{n} ({t})' for n, t in sorted(result['pools'].items()))}\n")
        names = [f"{d['flow']}/{d['name']}" for d in result.get("deployments", [])]
        out.write(f"  deployments ({len(names)}): {', '.join(names)}\n")
    for run in result.get("recent_runs", []):
        out.write(f"  run {run['name']} ({run['flow']}): {run['state']}  {run['url']}\n")
    if result.get("startup_seconds"):
        times = ", ".join(f"{k} {v} s" for k, v in result["startup_seconds"].items())
        out.write(f"  start-up: {times}\n")
    if result["processes"]["prefect-server"]["alive"]:
        from tracking.lineage import UI_VIEW  # MLflow's model-training view, not its GenAI one

        out.write(f"Prefect UI: {result['prefect_url']}\nMLflow UI:  {result['mlflow_url']}/#/{UI_VIEW}\n")
    out.write(f"home: {result['home']} (logs in {result['home']}/logs)\n")


def _render_down(result: dict[str, Any]) -> None:
    if not result["stopped"]:
        sys.stdout.write(f"rmflow: nothing recorded as running in {result['home']}\n")
    for name, how in result["stopped"].items():
        sys.stdout.write(f"  {name:<15} {how}\n")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", help="stack home: logs, pids, databases (default $RMFLOW_HOME or ./.rmflow)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def register(sub: argparse._SubParsersAction) -> None:
    """Add the ``up``, ``down`` and ``status`` subcommands."""
    p = sub.add_parser(
        "up",
        help="start the local stack (Prefect + MLflow servers, work pools, deployments, workers)",
        description="Start in the background a Prefect server (SQLite) and an MLflow server (SQLite + "
        "local artifacts), create the work pools cpu and gpu, deploy deployments/prefect.yaml and "
        "start one worker per pool. Logs in <home>/logs, pids in <home>/pids. Idempotent.",
    )
    _common(p)
    p.add_argument("--host", default="127.0.0.1", help="address both servers bind to (default loopback only); any other "
                   "is refused unless both servers get a password (see deployments/README.md)")
    p.add_argument("--prefect-port", type=int, default=4200, help="Prefect server port (default 4200)")
    p.add_argument("--mlflow-port", type=int, default=5000, help="MLflow server port (default 5000)")
    p.add_argument("--project-dir", help="directory with deployments/prefect.yaml (default: found from cwd)")
    p.add_argument("--prefect-file", default="deployments/prefect.yaml",
                   help="deployments file relative to the project dir")
    p.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for each server to be healthy")
    p.add_argument("--redeploy", action="store_true", help="re-run prefect deploy even if the stack is up")
    p.set_defaults(func=_up, render=_render_status)

    p = sub.add_parser("down", help="stop exactly the processes 'rmflow up' started (by pid file)",
                       description="SIGTERM each recorded process group, SIGKILL after --timeout; "
                       "remove the pid files. Databases and logs stay.")
    _common(p)
    p.add_argument("--timeout", type=float, default=15.0, help="seconds between SIGTERM and SIGKILL")
    p.set_defaults(func=_down, render=_render_down)

    p = sub.add_parser("status", help="what of the local stack runs: pids, URLs, health, pools, deployments")
    _common(p)
    p.set_defaults(func=_status, render=_render_status)
