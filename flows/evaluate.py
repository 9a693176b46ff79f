"""Stage 5 as its own flow: evaluate a recipe's model (earlier stages from cache) or a given model."""

from __future__ import annotations

from prefect import flow

from flows.context import resolve
from flows.data_stages import run_data_stages
from flows.model_stages import run_evaluate, run_train
from flows.naming import run_name
from rmcore.recipe import require_train
from tracking.registry import model_dir_digest


@flow(name="rmflow-evaluate", flow_run_name=run_name, log_prints=True, persist_result=False, result_serializer="json")
def evaluate_flow(
    recipe: str = "deployments/recipes/demo.yaml",
    data_dir: str | None = None,
    work_dir: str | None = None,
    model_dir: str | None = None,
) -> dict:
    """RewardBench + held-out accuracy with length bias. model_dir: evaluate this model folder."""
    ctx = resolve(recipe, data_dir, work_dir)
    if not model_dir:
        require_train(ctx.recipe)  # it trains (or reuses) the recipe's model: refuse before any data stage
    data = run_data_stages(ctx)
    if model_dir:
        trained = {"model_dir": model_dir, "model_digest": model_dir_digest(model_dir)}
    else:
        trained = run_train(ctx, data["mixture"], run_id=None)
    return run_evaluate(ctx, trained, data["heldout"], run_id=None)
