"""The rated-responses stage (``model_type: regression``): paths and digests in and out."""

from __future__ import annotations

from pathlib import Path

from rmcore import io
from rmcore.data.mixtures import MixtureConfig, SourceSpec
from rmcore.data.rated_mixture import materialise_rated, rated_specs
from rmcore.data.stages import read_download
from tasks import integrity
from tasks.caching import Stage, build_once

RATED = Stage(
    "rated",
    key_params=("config", "raw_digests", "work"),
    folder=lambda p: Path("rated") / p["config"].name,
    code=("rmcore.data.rated_mixture", "rmcore.data.rated"),
)


@RATED.task(task_run_name="rated {config.name}")
def rated_task(config: MixtureConfig, raw_dirs: list[str], raw_digests: list[str], work: str) -> dict:
    """Rated responses of the recipe's rated sources, held out by prompt; digest + manifest.

    ``raw_dirs`` / ``raw_digests``: the downloads of the available ``rated_specs(config)`` (a
    download's manifest says which spec it is); a rated source not available is left out.
    """
    out = RATED.output_dir(locals())
    if len(raw_dirs) != len(raw_digests):
        raise ValueError(f"rated {config.name}: {len(raw_dirs)} raw dirs but {len(raw_digests)} digests")

    def build(tmp: Path) -> None:
        specs = _available_specs(config, raw_dirs)
        raws, unreadable = [], {}
        for spec, raw_dir, digest in zip(specs, raw_dirs, raw_digests):
            integrity.check_file(
                Path(raw_dir) / "raw.parquet",
                digest,
                command="rmflow download RECIPE --data-dir DATA --out WORK",
            )
            raw, bad = read_download(Path(raw_dir))
            raws.append((spec, raw))
            unreadable[spec.key] = bad
        materialise_rated(config, raws, tmp, unreadable=unreadable)

    build_once(out, build, intact=RATED.intact)
    manifest = io.read_json(out / "rated_manifest.json")
    return {
        "name": config.name,
        "path": str(out / "rated.parquet"),
        "manifest": str(out / "rated_manifest.json"),
        "quarantine": str(out / "quarantine.parquet"),
        "digest": manifest["digest"],
        "rows": manifest["rows"],
        "validation_rows": manifest["validation_rows"],
    }


def _available_specs(config: MixtureConfig, raw_dirs: list[str]) -> list[SourceSpec]:
    """The rated spec each download folder holds, by its manifest's source, split and listed files."""
    specs = {(s.source, s.split, s.files): s for s in rated_specs(config)}
    chosen = []
    for raw_dir in raw_dirs:
        manifest = io.read_json(Path(raw_dir) / "manifest.json")
        listed = manifest.get("listed_files")
        key = (manifest["source"], manifest["split"], tuple(listed) if listed is not None else None)
        if key not in specs:
            raise ValueError(
                f"rated {config.name}: {raw_dir} is the download of no rated source of the recipe"
            )
        chosen.append(specs[key])
    return chosen
