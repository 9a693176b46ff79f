"""The data stages composed from tasks; shared by the stage flows and the pipeline."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from flows.context import RunContext
from rmcore import io
from rmcore.data.mixtures import SourceSpec
from rmcore.data.stages import source_fingerprint
from rmcore.data.stats import stats_markdown
from tasks.data import clean_task, download_task, mixture_task


def _splits(ctx: RunContext, specs: tuple[SourceSpec, ...]) -> list[tuple[str, str]]:
    seen: dict[tuple[str, str], None] = {}
    for spec in specs:
        seen[(spec.source, spec.split)] = None
    return list(seen)


def run_downloads(ctx: RunContext, *, heldout: bool = True) -> tuple[dict[tuple[str, str], dict], list[str]]:
    """Download every (source, split) the recipe names; report what the data dir lacks."""
    logger = get_run_logger()
    specs = ctx.recipe.data.sources + (ctx.recipe.data.heldout if heldout else ())
    futures, missing = {}, []
    for source, split in _splits(ctx, specs):
        digest = source_fingerprint(source, split, ctx.data_dir)
        if digest == "missing":
            missing.append(f"{source} [{split}]")
            continue
        futures[(source, split)] = download_task.submit(
            source, split, str(ctx.data_dir) if ctx.data_dir else None, digest, str(ctx.work)
        )
    if missing:
        logger.warning("not in %s, left out: %s", ctx.data_label, ", ".join(missing))
    return {k: f.result() for k, f in futures.items()}, missing


def run_cleaning(
    ctx: RunContext, downloads: dict[tuple[str, str], dict], specs: tuple[SourceSpec, ...]
) -> dict[str, dict]:
    """Clean + pair every available spec, in parallel."""
    futures = {
        spec.key: clean_task.submit(
            spec,
            downloads[(spec.source, spec.split)]["raw_dir"],
            downloads[(spec.source, spec.split)]["digest"],
            ctx.recipe.data.seed,
            str(ctx.work),
        )
        for spec in specs
        if (spec.source, spec.split) in downloads
    }
    return {k: f.result() for k, f in futures.items()}


def run_mixture(ctx: RunContext, cleaned: dict[str, dict], missing: list[str]) -> dict:
    """Materialise the mixture; publish its stats table as a Prefect artifact."""
    config = ctx.recipe.data
    inputs = [cleaned[s.key] for s in config.sources if s.key in cleaned]
    lacking = [s.key for s in config.sources if s.key not in cleaned]
    mixture = mixture_task(config, inputs, [c["digest"] for c in inputs], lacking, str(ctx.work))
    publish_stats(ctx, mixture)
    return mixture


def publish_stats(ctx: RunContext, mixture: dict) -> None:
    rows = io.read_json(mixture["stats"])
    key = f"stats-{ctx.recipe.name}".lower().replace("_", "-")
    create_table_artifact(
        key=key, table=rows, description=f"Dataset stats, mixture {ctx.recipe.name}; data: {ctx.data_label}"
    )
    note = f"\n**Data:** {ctx.data_label}\n\n**Mixture digest:** `{mixture['digest']}`\n"
    if mixture["missing"]:
        note += f"\n**Not available, left out:** {', '.join(mixture['missing'])}\n"
    create_markdown_artifact(
        key=f"{key}-md", markdown=stats_markdown(rows, title=f"Mixture {ctx.recipe.name}") + note
    )


def run_data_stages(ctx: RunContext) -> dict:
    """download -> clean -> mixture (+ the held-out test splits cleaned for evaluation)."""
    downloads, missing = run_downloads(ctx)
    config = ctx.recipe.data
    cleaned = run_cleaning(ctx, downloads, config.sources + config.heldout)
    mixture = run_mixture(
        ctx, {k: v for k, v in cleaned.items() if k in {s.key for s in config.sources}}, missing
    )
    heldout = {s.key: cleaned[s.key] for s in config.heldout if s.key in cleaned}
    return {
        "mixture": mixture,
        "heldout": heldout,
        "cleaned": cleaned,
        "downloads": list(downloads.values()),
        "missing": missing,
        "data": ctx.data_label,
    }
