"""Data-stage tasks: download, clean + pair, mixture. Paths and digests in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from rmcore import io
from rmcore.data import stages
from rmcore.data.mixtures import CleanedInput, MixtureConfig, SourceSpec, materialise_mixture
from tasks.caching import StageCache, build_once, stage_key


def _slug(source: str) -> str:
    return source.replace("/", "__")


def _download_dir(key: str, p: dict[str, Any]) -> Path:
    return Path(p["work"]) / "raw" / _slug(p["source"]) / p["split"] / key


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed download unless its error is permanent
    (``stages.retry_can_help``); a corrupt file fails at once instead of after every backoff."""
    error = state.data
    if isinstance(error, BaseException) and not stages.retry_can_help(error):
        get_run_logger().warning("not retried, the error is permanent: %s", error)
        return False
    return True


@task(
    name="download",
    task_run_name="download {source} [{split}]",
    cache_policy=StageCache(
        stage="download",
        key_params=("source", "split", "input_digest", "work"),
        output_of=_download_dir,
        intact=stages.download_intact,
    ),
    persist_result=True,
    result_serializer="json",
    retries=3,
    retry_delay_seconds=[2, 8, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_transient,
)
def download_task(source: str, split: str, data_dir: str | None, input_digest: str, work: str) -> dict:
    """Fetch one source split into raw Parquet + manifest (transient errors retried with backoff and jitter)."""
    params = {"source": source, "split": split, "input_digest": input_digest, "work": work}
    key = stage_key("download", **params)
    out = _download_dir(key, params)
    build_once(
        out,
        lambda tmp: stages.download_source(
            source, split, Path(data_dir) if data_dir else None, tmp, publish_dir=out
        ),
        intact=stages.download_intact,
    )
    manifest = io.read_json(out / "manifest.json")
    get_run_logger().info("%s/%s: %d raw rows from %s", source, split, manifest["rows"], manifest["origin"])
    return {
        "source": source,
        "split": split,
        "raw_dir": str(out),
        "digest": manifest["sha256"],
        "rows": manifest["rows"],
    }


def _clean_dir(key: str, p: dict[str, Any]) -> Path:
    return Path(p["work"]) / "clean" / _slug(p["spec"].source) / p["spec"].split / key


@task(
    name="clean",
    task_run_name="clean {spec.key}",
    cache_policy=StageCache(
        stage="clean", key_params=("spec", "raw_digest", "seed", "work"), output_of=_clean_dir
    ),
    persist_result=True,
    result_serializer="json",
)
def clean_task(spec: SourceSpec, raw_dir: str, raw_digest: str, seed: int, work: str) -> dict:
    """Clean + pair one source split with the recipe's rules; every row accounted for."""
    params = {"spec": spec, "raw_digest": raw_digest, "seed": seed, "work": work}
    key = stage_key("clean", **params)
    out = _clean_dir(key, params)
    build_once(
        out,
        lambda tmp: stages.clean_downloaded(
            spec.source, spec.split, Path(raw_dir), spec.clean_options(seed), tmp, publish_dir=out
        ),
    )
    summary = {**io.read_json(out / "summary.json"), "key": spec.key}
    get_run_logger().info(
        "%s: %d in, %d kept, dropped %s, %d quarantined",
        spec.key,
        summary["rows_in"],
        summary["kept"],
        summary["dropped"],
        summary["quarantined"],
    )
    return summary


def _mixture_dir(key: str, p: dict[str, Any]) -> Path:
    return Path(p["work"]) / "mixtures" / p["config"].name / key


@task(
    name="mixture",
    task_run_name="mixture {config.name}",
    cache_policy=StageCache(
        stage="mixture", key_params=("config", "input_digests", "missing", "work"), output_of=_mixture_dir
    ),
    persist_result=True,
    result_serializer="json",
)
def mixture_task(
    config: MixtureConfig, cleaned: list[dict], input_digests: list[str], missing: list[str], work: str
) -> dict:
    """Materialise the recipe's mixture from cleaned sources; digest + lineage manifest + stats."""
    params = {"config": config, "input_digests": input_digests, "missing": missing, "work": work}
    key = stage_key("mixture", **params)
    out = _mixture_dir(key, params)
    inputs = [CleanedInput(c["key"], Path(c["output"]), c["digest"], c["stats"]) for c in cleaned]
    build_once(out, lambda tmp: materialise_mixture(config, inputs, tmp, missing=missing))
    manifest = io.read_json(out / "manifest.json")
    return {
        "name": config.name,
        "path": str(out / "mixture.parquet"),
        "manifest": str(out / "manifest.json"),
        "stats": str(out / "stats.json"),
        "stats_markdown": str(out / "stats.md"),
        "digest": manifest["digest"],
        "rows": manifest["rows"],
        "counts": manifest["counts"],
        "missing": manifest["missing"],
    }
