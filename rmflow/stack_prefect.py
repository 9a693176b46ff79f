"""The Prefect side of the local stack: work pools, deployments, and what the API reports.

Talks to the server's REST API with the standard library (so ``rmflow status`` stays fast)
and deploys with Prefect's own ``prefect deploy --all``, the command users run by hand.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rmflow.stack_procs import log_tail

POOLS = ("cpu", "gpu")
"""Work pools of the local stack; both are process pools here (see deployments/README.md)."""


def api(api_url: str, method: str, path: str, body: Any = None, timeout: float = 10.0) -> Any:
    """Call the Prefect REST API; returns the decoded JSON (None for an empty body)."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    # A stack bound beyond loopback requires the server's auth string (rmflow.stack.check_exposure).
    auth = os.environ.get("PREFECT_API_AUTH_STRING") or os.environ.get("PREFECT_SERVER_API_AUTH_STRING")
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/{path.lstrip('/')}", data=data, method=method, headers=headers
    )
    with urllib.request.urlopen(request, timeout=timeout) as response:
        raw = response.read()
    return json.loads(raw) if raw else None


def ensure_process_pool(api_url: str, name: str) -> bool:
    """Create the process work pool ``name`` unless it exists; True if it was created."""
    try:
        api(api_url, "GET", f"/work_pools/{name}")
        return False
    except urllib.error.HTTPError as e:
        if e.code != 404:
            raise
    from prefect.workers.process import ProcessWorker

    body = {
        "name": name,
        "type": "process",
        "description": f"rmflow local '{name}' pool (process worker)",
        "base_job_template": ProcessWorker.get_default_base_job_template(),
    }
    try:
        api(api_url, "POST", "/work_pools/", body)
    except urllib.error.HTTPError as e:
        if e.code != 409:  # created meanwhile by a worker: fine
            raise
        return False
    return True


def pools(api_url: str) -> dict[str, str]:
    """Work pool name -> type, as the server reports them."""
    return {p["name"]: p["type"] for p in api(api_url, "POST", "/work_pools/filter", {})}


def deployments(api_url: str) -> list[dict[str, Any]]:
    """Each deployment as ``{name, flow, pool, entrypoint, schedules: [{cron, active}]}``."""
    flows = {f["id"]: f["name"] for f in api(api_url, "POST", "/flows/filter", {})}
    found = []
    for d in api(api_url, "POST", "/deployments/filter", {}):
        found.append(
            {
                "name": d["name"],
                "flow": flows.get(d["flow_id"], "?"),
                "pool": d.get("work_pool_name"),
                "entrypoint": d.get("entrypoint"),
                "schedules": [
                    {"cron": (s.get("schedule") or {}).get("cron"), "active": s.get("active")}
                    for s in d.get("schedules") or []
                ],
            }
        )
    return sorted(found, key=lambda d: d["name"])


def recent_runs(api_url: str, ui_url: str, limit: int = 5) -> list[dict[str, Any]]:
    """The latest flow runs, newest first: name, flow, state and the UI link."""
    flows = {f["id"]: f["name"] for f in api(api_url, "POST", "/flows/filter", {})}
    runs = api(api_url, "POST", "/flow_runs/filter", {"sort": "EXPECTED_START_TIME_DESC", "limit": limit})
    return [
        {
            "name": r["name"],
            "flow": flows.get(r["flow_id"], "?"),
            "state": (r.get("state") or {}).get("name"),
            "url": f"{ui_url}/runs/flow-run/{r['id']}",
        }
        for r in runs
    ]


def deploy_all(project_dir: Path, prefect_file: Path, env: Mapping[str, str], log: Path) -> None:
    """Run ``prefect deploy --all`` for ``prefect_file`` from ``project_dir``; log to ``log``.

    Raises RuntimeError naming the log and its last line when Prefect refuses.
    """
    cmd = [sys.executable, "-m", "prefect", "deploy", "--all", "--no-prompt",
           "--prefect-file", str(prefect_file)]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"\n=== rmflow: {' '.join(cmd)} (in {project_dir})\n".encode())
        out.flush()
        code = subprocess.call(cmd, cwd=project_dir, env=dict(env), stdout=out,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    if code != 0:
        tail = log_tail(log, 15)
        last = next((line for line in reversed(tail.splitlines()) if line.strip()), "")
        raise RuntimeError(
            f"prefect deploy of {prefect_file} failed (exit {code}): {last.strip()} "
            f"(full output in {log})"
        )
