"""Recipe mixture -> one materialised Parquet dataset with a digest and a lineage manifest.

Deterministic for a seed: per-source subsampling (``max_pairs``) draws from a generator
seeded by (seed, source key); the validation split is chosen by pair id (or, with
``validation_unit: prompt``, by prompt, so every pair and rated response of a prompt shares it),
so a row keeps its split whatever else is in the mixture; the final row order is a seeded permutation.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_contracts import MIXTURE, validate
from rmcore import io
from rmcore.config import ConfigError, config_hash, to_dict
from rmcore.data.pairing import canonical_json
from rmcore.data.sources.base import CleanOptions, Pairing
from rmcore.data.stats import stats_markdown, stats_row, total_row
from rmcore.fingerprint import rmcore_fingerprint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SourceSpec:
    """One source in a recipe: which split, how it is paired, how much of it."""

    source: str
    """rmflow source name (SPEC section 9), e.g. ``hh-rlhf/helpful-base``."""
    split: str = "train"
    pairing: Pairing | None = None
    """best-vs-random (v1) or all-pairs (v2); only for multi-response sources."""
    per_prompt: int | None = None
    """At most this many pairs per prompt (SHP)."""
    max_pairs: int | None = None
    """Seeded random subset of at most this many pairs (e.g. PKU-SafeRLHF 150K in v4)."""
    filter: str | None = None
    """A named row filter the source offers, e.g. Orca's ``argilla-recommended``."""
    files: tuple[str, ...] | None = None
    """Paths (globs allowed) relative to the data dir that hold this split instead of the hub
    layout, e.g. ``extra/hh-rlhf-train-samples/helpful_train_sample.jsonl``; read in sorted
    order and cleaned by the source's own rules. Needs a local data dir (--data-dir)."""

    def __post_init__(self) -> None:
        for key in ("per_prompt", "max_pairs"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"source {self.source!r}: {key} must be a positive integer, got {value}")
        if self.files is not None:
            paths = self.files
            if isinstance(paths, str) or not all(isinstance(f, str) and f.strip() for f in paths):
                raise ConfigError(
                    f"source {self.source!r}: files must be a list of paths relative to the data dir, got "
                    f"{paths!r}; e.g. files: [extra/hh-rlhf-train-samples/helpful_train_sample.jsonl]"
                )
            if not paths:
                raise ConfigError(f"source {self.source!r}: files is empty; list a path or leave it out")
            object.__setattr__(self, "files", tuple(self.files))  # hashable even when built from a list

    @property
    def files_digest(self) -> str | None:
        """Short digest of the sorted ``files`` list (None without files): names the entry apart
        from the same source read from the hub layout, in labels, cache keys and folders."""
        if self.files is None:
            return None
        return hashlib.sha256("\n".join(sorted(set(self.files))).encode()).hexdigest()[:10]

    @property
    def key(self) -> str:
        """Stable name of this entry: source, split and options (subset label in the mixture)."""
        parts = [self.source, self.split]
        if self.pairing:
            parts.append(self.pairing)
        if self.per_prompt:
            parts.append(f"{self.per_prompt}-per-prompt")
        if self.filter:
            parts.append(f"filter-{self.filter}")
        if self.max_pairs:
            parts.append(f"max-{self.max_pairs}")
        if self.files is not None:
            parts.append(f"files-{self.files_digest}")
        return "/".join(parts)

    def clean_options(self, seed: int) -> CleanOptions:
        return CleanOptions(pairing=self.pairing, per_prompt=self.per_prompt, filter=self.filter, seed=seed)


@dataclass(frozen=True)
class MixtureConfig:
    """The data section of a recipe."""

    name: str
    sources: tuple[SourceSpec, ...]
    seed: int = 42
    validation_fraction: float = 0.05
    """Share of pairs held out as split ``validation`` for training's eval (see ``validation_unit``)."""
    heldout: tuple[SourceSpec, ...] = field(default_factory=tuple)
    """Test splits scored by the evaluation stage (held-out accuracy per source)."""
    require_all: bool = False
    """Fail when a source is missing instead of building from what is available."""
    validation_unit: Literal["pair", "prompt"] = "pair"
    """What the validation split holds out: ``pair`` (by pair id; each pair on its own) or
    ``prompt`` (by a digest of the prompt messages: every pair of a prompt, and every rated
    response of it (``rmcore.data.rated_mixture``), in the same split). Use ``prompt`` to compare
    bt, listwise and regression models on the same held-out prompts."""

    def __post_init__(self) -> None:
        if self.validation_unit not in ("pair", "prompt"):
            raise ConfigError(
                f"mixture {self.name!r}: validation_unit must be 'pair' or 'prompt', got {self.validation_unit!r}"
            )
        if not self.sources:
            raise ConfigError(f"mixture {self.name!r}: 'sources' is empty; name at least one source")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ConfigError(f"mixture {self.name!r}: validation_fraction must be in [0, 1)")
        if self.seed < 0:
            raise ConfigError(f"mixture {self.name!r}: seed must be >= 0 (numpy seeds), got {self.seed}")
        keys = [s.key for s in self.sources]
        if len(set(keys)) != len(keys):
            raise ConfigError(f"mixture {self.name!r}: a source entry is listed twice: {keys}")


@dataclass(frozen=True)
class CleanedInput:
    """One cleaned source as the mixture stage receives it (paths and digests)."""

    key: str
    pairs_path: Path
    digest: str
    stats: dict


@dataclass(frozen=True)
class MixtureResult:
    path: Path
    manifest_path: Path
    stats_path: Path
    digest: str
    counts: dict[str, int]
    total: int
    missing: list[str]
    stats_rows: list[dict]


def _seed_for(seed: int, key: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{key}".encode()).digest()[:8], "little")


def subsample(table: pa.Table, max_pairs: int | None, seed: int, key: str) -> pa.Table:
    """At most ``max_pairs`` rows, a seeded choice fixed by (seed, key), in their original order."""
    if max_pairs is None or table.num_rows <= max_pairs:
        return table
    rng = np.random.default_rng(_seed_for(seed, key))
    keep = np.sort(rng.choice(table.num_rows, size=max_pairs, replace=False))
    return table.take(pa.array(keep))


def _validation_mask(pair_ids: pa.ChunkedArray, fraction: float) -> np.ndarray:
    if fraction <= 0:
        return np.zeros(len(pair_ids), dtype=bool)
    prefix = pc.utf8_slice_codeunits(pair_ids, 0, 8).to_pylist()
    buckets = np.fromiter((int(p, 16) for p in prefix), dtype=np.uint64, count=len(prefix))
    return buckets < np.uint64(fraction * 2**32)


def prompt_validation_mask(prompts: list, fraction: float) -> np.ndarray:
    """True where a prompt (a message list) falls in the validation share ``fraction``: the first
    4 bytes of sha256(canonical JSON of the prompt) below ``fraction * 2**32``. The same prompt
    always gets the same answer, in the pair mixture and in the rated mixture alike."""
    if fraction <= 0:
        return np.zeros(len(prompts), dtype=bool)
    texts = [canonical_json(p) for p in prompts]
    bucket = {t: int(hashlib.sha256(t.encode()).hexdigest()[:8], 16) for t in set(texts)}
    buckets = np.fromiter((bucket[t] for t in texts), dtype=np.uint64, count=len(texts))
    return buckets < np.uint64(fraction * 2**32)


def validation_mask(table: pa.Table, config: MixtureConfig) -> np.ndarray:
    """The validation rows of a mixture table by the recipe's ``validation_unit``."""
    if config.validation_unit == "prompt":
        return prompt_validation_mask(table.column("prompt").to_pylist(), config.validation_fraction)
    return _validation_mask(table.column("pair_id"), config.validation_fraction)


def materialise_mixture(
    config: MixtureConfig, inputs: list[CleanedInput], out_dir: Path, *, missing: list[str] | None = None
) -> MixtureResult:
    """Concatenate cleaned sources as the recipe says; write mixture, manifest and stats."""
    specs = {s.key: s for s in config.sources}
    missing = list(missing or [])
    if missing and config.require_all:
        raise FileNotFoundError(f"mixture {config.name!r}: sources not available: {', '.join(missing)}")
    parts, counts, stats_rows, empty = [], {}, [], []
    for item in sorted(inputs, key=lambda i: list(specs).index(i.key)):
        spec = specs[item.key]
        pairs = subsample(io.read_table(item.pairs_path), spec.max_pairs, config.seed, spec.key)
        if pairs.num_rows == 0:  # every row dropped or quarantined: as good as missing
            if config.require_all:
                raise ValueError(
                    f"mixture {config.name!r}: source {spec.key} gave no pairs ({item.pairs_path}) and "
                    "data.require_all is true. Fix: see its clean summary for why every row was dropped"
                )
            empty.append(spec.key)
        parts.append(pairs.append_column("subset", pa.array([spec.key] * pairs.num_rows, pa.string())))
        counts[spec.key] = pairs.num_rows
        row = dict(item.stats, source=spec.key, pairs=pairs.num_rows)
        if spec.max_pairs and item.stats["pairs"] > pairs.num_rows:
            dropped = {
                **json.loads(row["dropped"]),
                "max_pairs_subsample": item.stats["pairs"] - pairs.num_rows,
            }
            row = stats_row(
                spec.key,
                pairs,
                rows_in=item.stats["rows_in"],
                dropped=dropped,
                quarantined=item.stats["quarantined"],
                raw_rows=item.stats["raw_rows"],
                unit=item.stats["unit"],
            )
        stats_rows.append(row)
    if not parts:
        raise FileNotFoundError(
            f"mixture {config.name!r}: none of its sources is available ({', '.join(missing)})"
        )
    table = pa.concat_tables(parts, promote_options="default")
    is_val = validation_mask(table, config)
    table = table.set_column(
        table.schema.get_field_index("split"), "split", pa.array(np.where(is_val, "validation", "train"))
    )
    order = np.random.default_rng(_seed_for(config.seed, "order")).permutation(table.num_rows)
    table = validate(table.take(pa.array(order)), MIXTURE, where=f"mixture {config.name}")
    digest = io.table_digest(table)
    stats_rows.append(total_row(stats_rows, name=f"mixture {config.name}"))

    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "mixture.parquet"
    io.write_table(table, path, MIXTURE)
    stats_path = out_dir / "stats.json"
    io.write_json(stats_rows, stats_path)
    io.write_text(stats_markdown(stats_rows, title=f"Mixture {config.name}"), out_dir / "stats.md")
    manifest = {
        "mixture": config.name,
        "digest": digest,
        "rows": table.num_rows,
        "validation_rows": int(is_val.sum()),
        "counts": counts,
        "missing": missing,
        "empty": empty,
        "recipe": to_dict(config),
        "recipe_hash": config_hash(config),
        "inputs": [{"key": i.key, "path": str(i.pairs_path), "digest": i.digest} for i in inputs],
        "rmcore": rmcore_fingerprint(),
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    manifest_path = out_dir / "manifest.json"
    io.write_json(manifest, manifest_path)
    log.info(
        "mixture %s: %d pairs from %d sources (digest %s)",
        config.name,
        table.num_rows,
        len(counts),
        digest[:12],
    )
    if missing:
        log.warning("mixture %s: sources not available and left out: %s", config.name, ", ".join(missing))
    if empty:
        log.warning("mixture %s: sources that gave no pairs: %s", config.name, ", ".join(empty))
    return MixtureResult(path, manifest_path, stats_path, digest, counts, table.num_rows, missing, stats_rows)
