"""Data-stage tasks: download, clean + pair, mixture. Paths and digests in and out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.logging import get_run_logger

from rmcore import io
from rmcore.data import stages
from rmcore.data.mixtures import CleanedInput, MixtureConfig, SourceSpec, materialise_mixture
from tasks import integrity
from tasks.caching import Stage, build_once


def _slug(source: str) -> str:
    return source.replace("/", "__")


def _download_intact(raw_dir: Path) -> bool:
    """Every file as published, and raw.parquet still matching its download manifest."""
    return integrity.intact(raw_dir) and stages.download_intact(raw_dir)


DOWNLOAD = Stage(
    "download",
    key_params=("source", "split", "files", "input_digest", "work"),
    folder=lambda p: Path("raw") / _slug(p["source"]) / p["split"],
    code=("rmcore.data.stages",),
    intact=_download_intact,
)
CLEAN = Stage(
    "clean",
    key_params=("spec", "raw_digest", "seed", "work"),
    folder=lambda p: Path("clean") / _slug(p["spec"].source) / p["spec"].split,
    code=("rmcore.data.stages",),
)
MIXTURE = Stage(
    "mixture",
    key_params=("config", "input_digests", "missing", "work"),
    folder=lambda p: Path("mixtures") / p["config"].name,
    code=("rmcore.data.mixtures",),
)


_REBUILD = "RECIPE --data-dir DATA --out WORK"
"""The arguments of the rebuild command named in an input error (the run's own recipe and folders)."""


def _retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect ``retry_condition_fn``: retry a failed download unless its error is permanent
    (``stages.retry_can_help``); a corrupt file fails at once instead of after every backoff."""
    error = state.data
    if isinstance(error, BaseException) and not stages.retry_can_help(error):
        get_run_logger().warning("not retried, the error is permanent: %s", error)
        return False
    return True


def _download_run_name(parameters: dict[str, Any]) -> str:
    """``download SOURCE [SPLIT]``, plus ``from FILES`` for a recipe entry's listed files."""
    name = f"download {parameters['source']} [{parameters['split']}]"
    files = parameters.get("files")
    return f"{name} from {', '.join(files)}" if files else name


@DOWNLOAD.task(
    task_run_name=_download_run_name,
    retries=3,
    retry_delay_seconds=[2, 8, 30],
    retry_jitter_factor=0.5,
    retry_condition_fn=_retry_transient,
)
def download_task(
    source: str,
    split: str,
    data_dir: str | None,
    input_digest: str,
    work: str,
    files: tuple[str, ...] | None = None,
) -> dict:
    """Fetch one source split into raw Parquet + manifest (transient errors retried with backoff and jitter).

    ``files``: the recipe entry's paths under ``data_dir`` read instead of the hub layout.
    """
    out = DOWNLOAD.output_dir(locals())
    build_once(
        out,
        lambda tmp: stages.download_source(
            source, split, Path(data_dir) if data_dir else None, tmp, files=files, publish_dir=out
        ),
        intact=DOWNLOAD.intact,
    )
    manifest = io.read_json(out / "manifest.json")
    return {
        "source": source,
        "split": split,
        "files": list(files) if files is not None else None,
        "raw_dir": str(out),
        "digest": manifest["sha256"],
        "rows": manifest["rows"],
    }


@CLEAN.task(task_run_name="clean {spec.key}")
def clean_task(spec: SourceSpec, raw_dir: str, raw_digest: str, seed: int, work: str) -> dict:
    """Clean + pair one source split with the recipe's rules; every row accounted for."""
    out = CLEAN.output_dir(locals())

    def build(tmp: Path) -> None:
        integrity.check_file(Path(raw_dir) / "raw.parquet", raw_digest, command=f"rmflow download {_REBUILD}")
        options = spec.clean_options(seed)
        stages.clean_downloaded(spec.source, spec.split, Path(raw_dir), options, tmp, publish_dir=out)

    build_once(out, build, intact=CLEAN.intact)
    return {**io.read_json(out / "summary.json"), "key": spec.key}  # its counts: rmcore's "cleaned" line


@MIXTURE.task(task_run_name="mixture {config.name}")
def mixture_task(
    config: MixtureConfig, cleaned: list[dict], input_digests: list[str], missing: list[str], work: str
) -> dict:
    """Materialise the recipe's mixture from cleaned sources; digest + lineage manifest + stats."""
    out = MIXTURE.output_dir(locals())
    inputs = [CleanedInput(c["key"], Path(c["output"]), c["digest"], c["stats"]) for c in cleaned]

    def build(tmp: Path) -> None:
        for item in inputs:
            integrity.check_table(item.pairs_path, item.digest, command=f"rmflow mix {_REBUILD}")
        materialise_mixture(config, inputs, tmp, missing=missing)

    build_once(out, build, intact=MIXTURE.intact)
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
