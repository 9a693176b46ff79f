"""Stage 4 as its own flow: train on a recipe's mixture (data stages from cache) or a given mixture."""

from __future__ import annotations

import socket
from pathlib import Path

from prefect import flow

from flows.context import resolve
from flows.data_stages import run_data_stages
from flows.model_stages import train_here
from flows.naming import run_name
from rmcore import io
from rmcore.recipe import require_train


@flow(
    name="rmflow-train",
    flow_run_name=run_name,
    log_prints=True,
    persist_result=False,
    result_serializer="json",
)
def train_flow(
    recipe: str = "demo",
    data_dir: str = "",
    work_dir: str = "",
    mixture_path: str = "",
    mixture_digest: str = "",
    mlflow_run_id: str = "",
    rated_path: str = "",
    rated_digest: str = "",
) -> dict:
    """Train the recipe's reward model (here: this flow run is where training runs).

    Args:
        recipe: A shipped recipe by name (demo, v1-v4, smollm2-cpu, helpsteer-bt|listwise|regression) or the path of a
            recipe YAML (deployments/recipes/*.yaml shows the form).
        data_dir: Where the preference data comes from: a hub-mirror folder (e.g. ../shared/data),
            or "hub" for the Hugging Face hub at pinned revisions. Empty: $RMFLOW_DATA_DIR, else
            the built-in GENERATED sample.
        work_dir: Where stage outputs go (content-addressed, so reruns reuse them). Empty:
            $RMFLOW_WORK_DIR, else ./runs.
        mixture_path: Train on this mixture Parquet instead of running the recipe's data stages
            (the pipeline passes its own when it dispatches training to a work pool). Empty: the
            recipe's data stages (from cache when unchanged).
        mixture_digest: The digest the pipeline recorded for mixture_path; checked here before
            training (empty: not checked).
        mlflow_run_id: Log the training curves to this MLflow run (the pipeline's). Empty: none.
        rated_path: With mixture_path, for a regression recipe: the rated-responses Parquet the
            pipeline built (its digest in rated_digest, checked before training).
        rated_digest: The digest the pipeline recorded for rated_path.
    """
    ctx = resolve(recipe, data_dir, work_dir)
    require_train(ctx.recipe)  # before any data stage runs
    if mixture_path:
        mixture = {"path": mixture_path, "digest": _readable_mixture(mixture_path, mixture_digest, ctx.work)}
        rated = {"path": rated_path, "digest": rated_digest} if rated_path else None
    else:
        data = run_data_stages(ctx)
        mixture, rated = data["mixture"], data.get("rated")
    return train_here(ctx, mixture, mlflow_run_id or None, rated)


def _readable_mixture(path: str, digest: str | None, work: Path) -> str:
    """The mixture's digest, once this worker has read it (and it is the one the pipeline built)."""
    if not Path(path).is_file():
        raise FileNotFoundError(
            f"the mixture {path} is not visible from this worker ({socket.gethostname()}): the work dir "
            f"{work} must be storage that the pipeline's pool and this pool both mount at the same path"
        )
    found = io.table_digest(io.read_table(path, "mixture"))
    if digest and found != digest:
        raise ValueError(
            f"the mixture {path} read here has digest {found[:16]}, not the {digest[:16]} the pipeline "
            "built: the work dir is not the same storage on both pools, or the file changed since"
        )
    return found
