"""Stage 3 as its own flow: materialise the recipe's mixture (earlier stages from cache)."""

from __future__ import annotations

from prefect import flow

from flows.context import resolve
from flows.data_stages import run_data_stages
from flows.naming import run_name


@flow(name="rmflow-mixture", flow_run_name=run_name, log_prints=True)
def mixture_flow(
    recipe: str = "deployments/recipes/demo.yaml", data_dir: str | None = None, work_dir: str | None = None
) -> dict:
    """download -> clean -> mixture; publishes the dataset stats table as an artifact."""
    ctx = resolve(recipe, data_dir, work_dir)
    return run_data_stages(ctx)
