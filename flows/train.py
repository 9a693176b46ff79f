"""Stage 4 as its own flow: train on a recipe's mixture (data stages from cache) or a given mixture."""

from __future__ import annotations

from prefect import flow

from flows.context import resolve
from flows.data_stages import run_data_stages
from flows.model_stages import run_train
from rmcore import io
from rmcore.recipe import require_train


@flow(name="rmflow-train", log_prints=True)
def train_flow(
    recipe: str = "deployments/recipes/demo.yaml",
    data_dir: str | None = None,
    work_dir: str | None = None,
    mixture_path: str | None = None,
) -> dict:
    """Train the recipe's reward model. mixture_path: train on this mixture Parquet instead."""
    ctx = resolve(recipe, data_dir, work_dir)
    require_train(ctx.recipe)  # before any data stage runs
    if mixture_path:
        mixture = {"path": mixture_path, "digest": io.table_digest(io.read_table(mixture_path, "mixture"))}
    else:
        mixture = run_data_stages(ctx)["mixture"]
    return run_train(ctx, mixture, run_id=None)
