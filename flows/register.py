"""Stage 6 as its own flow: log, register and gate a recipe's model (earlier stages from cache)."""

from __future__ import annotations

from prefect import flow

from flows.naming import run_name
from flows.pipeline import pipeline_flow


@flow(name="rmflow-register", flow_run_name=run_name, log_prints=True)
def register_flow(
    recipe: str = "deployments/recipes/demo.yaml", data_dir: str | None = None, work_dir: str | None = None
) -> dict:
    """Registration needs the whole lineage (MLflow run, inputs, scores): it runs the pipeline,
    whose earlier stages come from cache, so only registration does new work."""
    return pipeline_flow(recipe=recipe, data_dir=data_dir, work_dir=work_dir)
