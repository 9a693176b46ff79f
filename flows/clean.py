"""Stage 2 as its own flow: clean + pair every source of a recipe (downloads come from cache)."""

from __future__ import annotations

from prefect import flow

from flows.context import resolve
from flows.data_stages import run_cleaning, run_downloads
from flows.naming import run_name


@flow(name="rmflow-clean", flow_run_name=run_name, log_prints=True, persist_result=False, result_serializer="json")
def clean_flow(
    recipe: str = "demo", data_dir: str = "", work_dir: str = ""
) -> dict:
    """Clean and pair each source with the recipe's rules; reruns only sources whose input changed.

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
    downloads, missing = run_downloads(ctx)
    cleaned = run_cleaning(ctx, downloads, ctx.recipe.data.sources + ctx.recipe.data.heldout)
    return {"cleaned": cleaned, "missing": missing, "data": ctx.data_label}
