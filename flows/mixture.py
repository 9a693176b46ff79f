"""Stage 3 as its own flow: materialise the recipe's mixture (earlier stages from cache)."""

from __future__ import annotations

from prefect import flow

from flows.context import resolve
from flows.data_stages import run_data_stages
from flows.naming import run_name


@flow(name="rmflow-mixture", flow_run_name=run_name, log_prints=True, persist_result=False, result_serializer="json")
def mixture_flow(
    recipe: str = "demo", data_dir: str = "", work_dir: str = ""
) -> dict:
    """download -> clean -> mixture; publishes the dataset stats table as an artifact.

    Args:
        recipe: A shipped recipe by name (demo, v1-v4, smollm2-cpu, helpsteer-bt|listwise|regression) or the path of a
            recipe YAML (deployments/recipes/*.yaml shows the form).
        data_dir: Where the preference data comes from: a hub-mirror folder (e.g. ../shared/data),
            or "hub" for the Hugging Face hub at pinned revisions. Empty: $RMFLOW_DATA_DIR, else
            the built-in GENERATED sample.
        work_dir: Where stage outputs go (content-addressed, so reruns reuse them). Empty:
            $RMFLOW_WORK_DIR, else ./runs.
    """
    ctx = resolve(recipe, data_dir, work_dir)
    return run_data_stages(ctx)
