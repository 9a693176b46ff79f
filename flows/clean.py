"""Stage 2 as its own flow: clean + pair every source of a recipe (downloads come from cache)."""

from __future__ import annotations

from prefect import flow

from flows.context import resolve
from flows.data_stages import run_cleaning, run_downloads
from flows.naming import run_name


@flow(name="rmflow-clean", flow_run_name=run_name, log_prints=True)
def clean_flow(
    recipe: str = "deployments/recipes/demo.yaml", data_dir: str | None = None, work_dir: str | None = None
) -> dict:
    """Clean and pair each source with the recipe's rules; reruns only sources whose input changed."""
    ctx = resolve(recipe, data_dir, work_dir)
    downloads, missing = run_downloads(ctx)
    cleaned = run_cleaning(ctx, downloads, ctx.recipe.data.sources + ctx.recipe.data.heldout)
    return {"cleaned": cleaned, "missing": missing, "data": ctx.data_label}
