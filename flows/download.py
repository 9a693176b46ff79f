"""Stage 1 as its own flow: fetch every source split a recipe names (mirror or hub)."""

from __future__ import annotations

from prefect import flow

from flows.context import resolve
from flows.data_stages import run_downloads
from flows.naming import run_name


@flow(name="rmflow-download", flow_run_name=run_name, log_prints=True)
def download_flow(
    recipe: str = "deployments/recipes/demo.yaml", data_dir: str | None = None, work_dir: str | None = None
) -> dict:
    """Download the recipe's sources to raw Parquet + manifests (cached by input content)."""
    ctx = resolve(recipe, data_dir, work_dir)
    downloads, missing = run_downloads(ctx)
    return {"downloads": list(downloads.values()), "missing": missing, "data": ctx.data_label}
