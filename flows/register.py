"""Stage 6 as its own flow: log, register and gate a recipe's model (earlier stages from cache)."""

from __future__ import annotations

from prefect import flow

from flows.naming import run_name
from flows.pipeline import pipeline_flow


@flow(name="rmflow-register", flow_run_name=run_name, log_prints=True, persist_result=False, result_serializer="json")
def register_flow(
    recipe: str = "demo", data_dir: str = "", work_dir: str = ""
) -> dict:
    """Registration needs the whole lineage (MLflow run, inputs, scores): it runs the pipeline,
    whose earlier stages come from cache, so only registration does new work.

    Args:
        recipe: A shipped recipe by name (demo, v1-v4, smollm2-cpu, helpsteer-bt|listwise|regression) or the path of a
            recipe YAML (deployments/recipes/*.yaml shows the form).
        data_dir: Where the preference data comes from: a hub-mirror folder (e.g. ../shared/data),
            or "hub" for the Hugging Face hub at pinned revisions. Empty: $RMFLOW_DATA_DIR, else
            the built-in GENERATED sample.
        work_dir: Where stage outputs go (content-addressed, so reruns reuse them). Empty:
            $RMFLOW_WORK_DIR, else ./runs.
    """
    return pipeline_flow(recipe=recipe, data_dir=data_dir, work_dir=work_dir)
