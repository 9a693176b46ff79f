"""Training where the GPUs are: the pipeline runs its train stage as a flow run on a work pool.

With ``train.work_pool: gpu`` the pipeline (on the ``cpu`` pool) does not train in its own
process. It checks the content-addressed cache first (an unchanged rerun never wakes a GPU
worker), then starts a flow run of the ``rmflow-train`` deployment that lives on that pool,
linked as a subflow of the pipeline run (the UI shows it under the pipeline), and waits for it.
The child trains into the shared work dir under the same key, so the pipeline then reads the
finished model folder from the cache; no Prefect result crosses between the two.

A child that fails, crashes or is cancelled fails the pipeline with the child's name, state
and link; a pipeline that is cancelled (or interrupted, or times out) cancels the child.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowFilter, FlowFilterName, WorkPoolFilter, WorkPoolFilterName
from prefect.deployments import run_deployment
from prefect.logging import get_run_logger
from prefect.settings import PREFECT_UI_URL
from prefect.states import Cancelling

from flows.context import RunContext
from tasks.caching import is_usable
from tasks.train import TRAIN

TRAIN_FLOW = "rmflow-train"
POLL_SECONDS = 2.0
WAIT_LOG_SECONDS = 30.0


class DispatchError(RuntimeError):
    """The train flow run on the work pool could not start, failed, or timed out."""


def cached_model_dir(ctx: RunContext, mixture: dict, rated: dict | None = None) -> bool:
    """Whether the train stage's output for this config and mixture is complete in the work dir."""
    inputs = {
        "train": ctx.recipe.train,
        "mixture_digest": mixture["digest"],
        "rated_digest": rated["digest"] if rated else None,
        "work": str(ctx.work),
    }
    return is_usable(TRAIN.output_dir(inputs), TRAIN.intact)


def train_deployment(pool: str) -> str:
    """``rmflow-train/<name>``: the deployment of the train flow on work pool ``pool``."""
    with get_client(sync_client=True) as client:
        found = client.read_deployments(
            flow_filter=FlowFilter(name=FlowFilterName(any_=[TRAIN_FLOW])),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
        )
    if not found:
        raise DispatchError(
            f"train.work_pool is {pool!r} but no deployment of the {TRAIN_FLOW} flow runs on that pool. "
            f"Fix: deploy it (`rmflow up` does, from deployments/prefect.yaml; or `prefect deploy` with "
            f"work_pool: {pool}), or remove train.work_pool to train in the pipeline's own process"
        )
    return f"{TRAIN_FLOW}/{min(d.name for d in found)}"


def flow_run_link(flow_run_id: Any) -> str:
    """The Prefect UI page of a flow run (the API id when no UI URL is configured)."""
    ui = PREFECT_UI_URL.value()
    return f"{ui.rstrip('/')}/runs/flow-run/{flow_run_id}" if ui else f"flow run id {flow_run_id}"


def train_on_pool(
    ctx: RunContext, mixture: dict, mlflow_run_id: str | None, rated: dict | None = None
) -> str | None:
    """Run the train stage on ``ctx.recipe.train.work_pool`` unless its output is cached; returns
    the child flow run's id (None on a cache hit). Raises DispatchError if it does not complete."""
    train = ctx.recipe.train
    logger = get_run_logger()
    if cached_model_dir(ctx, mixture, rated):
        logger.info(
            "train stage cached for mixture %s: no flow run on pool %r",
            mixture["digest"][:16],
            train.work_pool,
        )
        return None
    name = train_deployment(train.work_pool)
    parameters = {
        "recipe": ctx.recipe.path or "",
        "data_dir": str(ctx.data_dir) if ctx.data_dir else "hub",
        "work_dir": str(ctx.work),
        "mixture_path": mixture["path"],
        "mixture_digest": mixture["digest"],
        "mlflow_run_id": mlflow_run_id or "",
        "rated_path": rated["path"] if rated else "",
        "rated_digest": rated["digest"] if rated else "",
    }
    child = run_deployment(name, parameters=parameters, timeout=0, as_subflow=True, tags=["rmflow", "train"])
    link = flow_run_link(child.id)
    logger.info("training on work pool %r: flow run %r of %s (%s)", train.work_pool, child.name, name, link)
    try:
        run = _wait(child.id, child.name, train.dispatch_timeout_s, logger)
    except BaseException as e:  # cancelled, interrupted or timed out: the child must not train on
        _cancel(child.id, f"the pipeline run stopped ({type(e).__name__})")
        raise
    state = run.state
    if not state.is_completed():
        # the name the run has now (a flow renames its run when it starts: flows.naming)
        raise DispatchError(
            f"the train flow run {run.name!r} on work pool {train.work_pool!r} ended {state.name}"
            f"{': ' + state.message if state.message else ''}. See {link}"
        )
    return str(child.id)


def _wait(flow_run_id: Any, name: str, timeout_s: float, logger) -> Any:
    started = last_log = time.monotonic()
    with get_client(sync_client=True) as client:
        while True:
            run = client.read_flow_run(flow_run_id)
            if run.state is not None and run.state.is_final():
                return run
            waited = time.monotonic() - started
            if timeout_s and waited > timeout_s:
                raise DispatchError(
                    f"the train flow run {name!r} did not finish within train.dispatch_timeout_s = {timeout_s:g} s "
                    f"(state {run.state.name if run.state else 'unknown'}); it was cancelled. See {flow_run_link(flow_run_id)}"
                )
            if time.monotonic() - last_log >= WAIT_LOG_SECONDS:
                logger.info(
                    "waiting for train flow run %r: %s for %s",
                    run.name or name, run.state.name if run.state else "unknown", timedelta(seconds=int(waited)),
                )  # fmt: skip
                last_log = time.monotonic()
            time.sleep(POLL_SECONDS)


def _cancel(flow_run_id: Any, why: str) -> None:
    """Ask the child's worker to stop it (best effort while already failing; Prefect's server
    also cancels the subflow runs of a cancelled flow run)."""
    try:
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(flow_run_id, Cancelling(message=why), force=True)
    except Exception as e:  # noqa: BLE001
        get_run_logger().warning("could not cancel train flow run %s: %s", flow_run_id, e)
