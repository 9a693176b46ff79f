"""``rmflow run RECIPE``: the end-to-end pipeline (download -> ... -> register) for a recipe.

When the local stack is up (``rmflow up``) the run goes to its Prefect server and MLflow
server, so it shows in both UIs; otherwise a temporary Prefect API runs as a child that ends
with this process (``rmflow.temporary_prefect``) and MLflow writes to the local SQLite store
under $RMFLOW_HOME.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from rmflow.commands.common import add_data_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "run",
        help="run the end-to-end pipeline for a recipe",
        description="download -> clean + pair -> mixture -> train -> evaluate -> register, every stage cached "
        "by content. RECIPE: a YAML path or a shipped name (demo, v1, v2, v3, v4).",
    )
    p.add_argument("recipe", help="recipe YAML path or shipped recipe name")
    add_data_args(p)
    p.set_defaults(func=run, render=render)


def use_running_stack() -> dict | None:
    """Point this process at the local stack when it runs (env of its workers)."""
    from rmflow import stack

    state = stack.status()
    if not state["processes"][stack.PREFECT]["healthy"]:
        return None
    saved = stack.saved_config(stack.default_home()) or {}
    cfg = stack.StackConfig(
        home=stack.default_home(),
        host=saved.get("host", "127.0.0.1"),
        prefect_port=int(saved.get("prefect_port", 4200)),
        mlflow_port=int(saved.get("mlflow_port", 5000)),
    )
    os.environ.update(
        {k: v for k, v in stack.child_env(cfg).items() if k.startswith(("PREFECT_", "MLFLOW_", "RMFLOW_"))}
    )
    return state


def run(args: argparse.Namespace) -> dict:
    from rmflow.commands.common import load_checked_recipe

    load_checked_recipe(args.recipe, args.data_dir, train=True)  # refused before any work (or server) starts
    state = use_running_stack()
    from prefect.settings import PREFECT_API_URL

    from flows.pipeline import pipeline_flow

    try:
        with contextlib.nullcontext() if state or PREFECT_API_URL.value() else temporary_api():
            summary = pipeline_flow(recipe=args.recipe, data_dir=args.data_dir or "", work_dir=args.out or "")
    except Exception as e:
        lost = prefect_api_lost(e)
        if lost is None:
            raise
        raise lost from e
    if state:
        summary["prefect_ui"] = state["prefect_url"]
        summary["mlflow_ui"] = state["mlflow_url"]
    return summary


def temporary_api() -> contextlib.AbstractContextManager[str]:
    """No stack and no PREFECT_API_URL: a Prefect API that ends with this process, even on kill -9
    (Prefect's own ephemeral one outlived it)."""
    from rmflow.stack import default_home
    from rmflow.temporary_prefect import temporary_prefect_api

    timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS") or 180)
    return temporary_prefect_api(default_home(), timeout)


def prefect_api_lost(exc: BaseException) -> RuntimeError | None:
    """A one-line reason naming the Prefect API when the run failed because it is not reachable.

    httpx only says "[Errno 111] Connection refused"; the user needs to know which server.
    """
    import httpx
    from prefect.settings import PREFECT_API_URL

    seen, cause = set(), exc
    while cause is not None and id(cause) not in seen:
        if isinstance(
            cause, (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError, httpx.ReadError)
        ):
            url = PREFECT_API_URL.value() or "the ephemeral Prefect API"
            return RuntimeError(
                f"the Prefect API at {url} is not reachable ({cause}); stages that "
                "finished are cached: rerun once it is back (`rmflow status` shows the local stack)"
            )
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return None


def render(s: dict) -> None:
    from flows.pipeline import summary_markdown
    from tracking.lineage import UI_VIEW

    out = sys.stdout
    out.write("\n" + summary_markdown(s))
    out.write(f"\nWhere to look:\n  data used:        {s['data']}\n")
    if s.get("prefect_ui"):
        out.write(f"  Prefect UI:       {s['prefect_ui']}/runs\n")
        out.write(f"  MLflow UI:        {s['mlflow_ui']}/#/models/{s['registered']['name']}{UI_VIEW}\n")
    else:
        out.write(f"  MLflow store:     {s['tracking_uri']}\n")
    out.write(f"  MLflow run:       {s['mlflow_run_id']}\n")
    alias = s["registered"].get("champion_alias", "champion")  # champion-<type> for listwise/regression
    out.write(
        f"  champion model:   models:/{s['registered']['name']}@{alias} (v{s['registered']['champion']})\n"
    )
    out.write(f"  RewardBench table: {s['evaluation_dir']}/rewardbench/rewardbench.md\n")
    out.write(
        f"  score a response: rmflow score models:/{s['registered']['name']}@{alias} --prompt ... --response ...\n"
    )
