"""The data stages composed from tasks; shared by the stage flows and the pipeline."""

from __future__ import annotations

from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging import get_run_logger

from flows.context import RunContext
from rmcore import io
from rmcore.data.mixtures import SourceSpec
from rmcore.data.rated_mixture import rated_specs
from rmcore.data.stages import source_fingerprint
from rmcore.data.stats import stats_display_rows, stats_markdown
from tasks.data import clean_task, download_task, mixture_task
from tasks.rated import rated_task

Input = tuple[str, str, tuple[str, ...] | None]
"""What one download reads: (source, split, the recipe entry's ``files`` or None for the hub layout)."""


def _input(spec: SourceSpec) -> Input:
    return (spec.source, spec.split, spec.files)


def _inputs(ctx: RunContext, specs: tuple[SourceSpec, ...]) -> dict[Input, str]:
    """Each input the specs read once -> the recipe entry naming it (for error messages)."""
    seen: dict[Input, str] = {}
    for section in ("sources", "heldout"):
        for i, spec in enumerate(getattr(ctx.recipe.data, section)):
            if spec in specs:
                where = f"{ctx.recipe.path or ctx.recipe.name}: data.{section}[{i}] ({spec.key})"
                seen.setdefault(_input(spec), where)
    return seen


def run_downloads(ctx: RunContext, *, heldout: bool = True) -> tuple[dict[Input, dict], list[str]]:
    """Download every (source, split, files) the recipe names; report what the data dir lacks.

    Every input is fingerprinted before any download starts, so listed ``files`` that are
    missing or outside the data dir (or given without one) fail the run before any stage runs.
    """
    logger = get_run_logger()
    specs = ctx.recipe.data.sources + (ctx.recipe.data.heldout if heldout else ())
    digests = {
        key: source_fingerprint(key[0], key[1], ctx.data_dir, key[2], where=where)
        for key, where in _inputs(ctx, specs).items()
    }
    futures, missing = {}, []
    for (source, split, files), digest in digests.items():
        if digest == "missing":
            missing.append(f"{source} [{split}]")
            continue
        futures[(source, split, files)] = download_task.submit(
            source, split, str(ctx.data_dir) if ctx.data_dir else None, digest, str(ctx.work), files
        )
    if missing:
        logger.warning("not in %s, left out: %s", ctx.data_label, ", ".join(missing))
    return {k: ctx.tally.result(f"download {k[0]} [{k[1]}]", f) for k, f in futures.items()}, missing


def run_cleaning(
    ctx: RunContext, downloads: dict[Input, dict], specs: tuple[SourceSpec, ...]
) -> dict[str, dict]:
    """Clean + pair every available spec, in parallel."""
    futures = {
        spec.key: clean_task.submit(
            spec,
            downloads[_input(spec)]["raw_dir"],
            downloads[_input(spec)]["digest"],
            ctx.recipe.data.seed,
            str(ctx.work),
        )
        for spec in specs
        if _input(spec) in downloads
    }
    return {k: ctx.tally.result(f"clean {k}", f) for k, f in futures.items()}


def run_mixture(ctx: RunContext, cleaned: dict[str, dict], missing: list[str]) -> dict:
    """Materialise the mixture; publish its stats table as a Prefect artifact."""
    config = ctx.recipe.data
    inputs = [cleaned[s.key] for s in config.sources if s.key in cleaned]
    lacking = [s.key for s in config.sources if s.key not in cleaned]
    mixture = ctx.tally.call(
        "mixture", mixture_task, config, inputs, [c["digest"] for c in inputs], lacking, str(ctx.work)
    )
    publish_stats(ctx, mixture)
    return mixture


def publish_stats(ctx: RunContext, mixture: dict) -> None:
    rows = io.read_json(mixture["stats"])
    key = f"stats-{ctx.recipe.name}".lower().replace("_", "-")
    create_table_artifact(
        key=key,
        table=stats_display_rows(rows),
        description=f"Dataset stats, mixture {ctx.recipe.name}; data: {ctx.data_label}",
    )
    note = f"\n**Data:** {ctx.data_label}\n\n**Mixture digest:** `{mixture['digest']}`\n"
    if mixture["missing"]:
        note += f"\n**Not available, left out:** {', '.join(mixture['missing'])}\n"
    create_markdown_artifact(
        key=f"{key}-md",
        markdown=stats_markdown(rows, title=f"Mixture {ctx.recipe.name}") + note,
        description=f"Mixture {ctx.recipe.name}: {mixture.get('rows', 0):,} pairs, per source; {ctx.data_label}",
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
        "rated": run_rated(ctx, downloads),
        "heldout": heldout,
        "cleaned": cleaned,
        "downloads": list(downloads.values()),
        "missing": missing,
        "data": ctx.data_label,
    }


def run_rated(ctx: RunContext, downloads: dict[Input, dict]) -> dict | None:
    """The rated responses a regression model trains on (None unless ``train.model_type`` is regression)."""
    if ctx.recipe.train is None or ctx.recipe.train.model_type != "regression":
        return None
    available = [downloads[_input(s)] for s in rated_specs(ctx.recipe.data) if _input(s) in downloads]
    return ctx.tally.call(
        "rated",
        rated_task,
        ctx.recipe.data,
        [d["raw_dir"] for d in available],
        [d["digest"] for d in available],
        str(ctx.work),
    )
