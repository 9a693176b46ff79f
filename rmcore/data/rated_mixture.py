"""Recipe -> the rated responses a regression reward model trains on, with the mixture's held-out prompts.

``model_type: regression`` learns from rated responses (``rmcore.data.rated``), not pairs. This
stage turns the recipe's rated sources (HelpSteer) into one RATED_RESPONSES Parquet, its
quarantine and a manifest. The split is chosen by prompt (``prompt_validation_mask``) with the
recipe's ``validation_fraction``: the same prompts a pair mixture with ``validation_unit: prompt``
holds out, so bt, listwise and regression models are compared on the same held-out prompts.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pyarrow as pa

from data_contracts import QUARANTINE, RATED_ATTRIBUTES, RATED_RESPONSES, validate
from rmcore import io
from rmcore.config import config_hash, to_dict
from rmcore.data.mixtures import MixtureConfig, SourceSpec, prompt_validation_mask
from rmcore.data.rated import rated_responses
from rmcore.fingerprint import rmcore_fingerprint

log = logging.getLogger(__name__)

RATED_SOURCES = ("helpsteer",)
"""Sources whose rows carry per-attribute ratings (``rmcore.data.rated``)."""


@dataclass(frozen=True)
class RatedMixtureResult:
    path: Path
    manifest_path: Path
    quarantine_path: Path
    digest: str
    rows: int
    validation_rows: int


def rated_specs(config: MixtureConfig) -> tuple[SourceSpec, ...]:
    """The recipe's sources that carry ratings, each input (source, split, files) once: two entries
    reading the same download (e.g. HelpSteer paired two ways) give its rated responses once."""
    seen, specs = set(), []
    for spec in config.sources:
        if spec.source in RATED_SOURCES and (spec.source, spec.split, spec.files) not in seen:
            seen.add((spec.source, spec.split, spec.files))
            specs.append(spec)
    return tuple(specs)


def _no_rated_source(config: MixtureConfig) -> ValueError:
    return ValueError(
        f"mixture {config.name!r}: no rated source among its sources "
        f"({', '.join(s.key for s in config.sources)}); model_type regression trains on rated responses. "
        f"Fix: add a rated source ({', '.join(RATED_SOURCES)}) to data.sources, e.g. {{source: helpsteer}}"
    )


def materialise_rated(
    config: MixtureConfig,
    raws: list[tuple[SourceSpec, pa.Table]],
    out_dir: Path,
    *,
    unreadable: Mapping[str, pa.Table] | None = None,
) -> RatedMixtureResult:
    """Rated responses of the recipe's rated sources; write rated.parquet, quarantine.parquet and
    rated_manifest.json.

    ``raws``: (recipe entry, its raw table) for the rated specs available (``rated_specs``).
    ``unreadable``: per entry key, the download's rows that could not be read (bad_rows.parquet);
    they join the quarantine and count in rows_in, so every raw row is accounted for.
    Every rated row of a source is used: an entry's ``max_pairs`` counts pairs of the pair
    mixture, not responses, and is not applied here. Rows keep their source order; the split is
    ``validation`` where ``prompt_validation_mask(prompt, validation_fraction)`` says so, else ``train``.
    """
    rated = rated_specs(config)
    if not rated:
        raise _no_rated_source(config)
    if not raws:
        raise FileNotFoundError(
            f"mixture {config.name!r}: none of its rated sources is available ({', '.join(s.key for s in rated)}). "
            "Fix: put the source's files in the data dir (or read the hub)"
        )
    unreadable = dict(unreadable or {})
    parts, quarantines, sources = [], [], {}
    missing_ratings = dict.fromkeys(RATED_ATTRIBUTES, 0)
    for spec, raw in raws:
        if spec not in rated:
            raise ValueError(f"mixture {config.name!r}: {spec.key} is not a rated source of the recipe")
        result = rated_responses(raw, source=spec.source, split=spec.split)
        bad = unreadable.get(spec.key)
        own = validate(result.quarantine, QUARANTINE, where=f"{spec.key} quarantine")
        quarantine = own if bad is None or bad.num_rows == 0 else pa.concat_tables([own, bad])
        parts.append(result.responses)
        quarantines.append(quarantine)
        sources[spec.key] = {
            "source": spec.source,
            "split": spec.split,
            "rows_in": result.rows_in + (0 if bad is None else bad.num_rows),
            "kept": result.responses.num_rows,
            "quarantined": quarantine.num_rows,
            "missing_ratings": result.missing_ratings,
        }
        for name, n in result.missing_ratings.items():
            missing_ratings[name] += n
    table = pa.concat_tables(parts)
    if table.num_rows == 0:
        reasons = pa.concat_tables(quarantines).column("reason").value_counts().to_pylist()
        raise ValueError(
            f"mixture {config.name!r}: every rated row was quarantined ({', '.join(sources)}): "
            + ", ".join(f"{r['values']}: {r['counts']}" for r in reasons)
            + ". Fix: check the source files hold prompt, response and 0-4 ratings"
        )
    is_val = prompt_validation_mask(table.column("prompt").to_pylist(), config.validation_fraction)
    table = table.set_column(
        table.schema.get_field_index("split"), "split", pa.array(np.where(is_val, "validation", "train"))
    )
    table = validate(table, RATED_RESPONSES, where=f"rated mixture {config.name}")
    digest = io.table_digest(table)

    out_dir.mkdir(parents=True, exist_ok=True)
    path, quarantine_path = out_dir / "rated.parquet", out_dir / "quarantine.parquet"
    io.write_table(table, path, RATED_RESPONSES)
    io.write_table(pa.concat_tables(quarantines), quarantine_path, QUARANTINE)
    manifest = {
        "mixture": config.name,
        "digest": digest,
        "rows": table.num_rows,
        "validation_rows": int(is_val.sum()),
        "validation_fraction": config.validation_fraction,
        "validation_unit": "prompt",
        "sources": sources,
        "missing_ratings": missing_ratings,
        "quarantine": quarantine_path.name,
        "recipe": to_dict(config),
        "recipe_hash": config_hash(config),
        "rmcore": rmcore_fingerprint(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest_path = out_dir / "rated_manifest.json"
    io.write_json(manifest, manifest_path)
    log.info(
        "rated mixture %s: %d responses (%d validation) from %s; %d quarantined (digest %s)",
        config.name,
        table.num_rows,
        manifest["validation_rows"],
        ", ".join(sources),
        sum(s["quarantined"] for s in sources.values()),
        digest[:12],
    )
    return RatedMixtureResult(
        path, manifest_path, quarantine_path, digest, table.num_rows, manifest["validation_rows"]
    )
