"""Load and check RewardBench v1 rows (the ``filtered`` split) before any scoring.

Sources: a local Parquet/JSONL file in the hub schema (``prompt, chosen, chosen_model,
rejected, rejected_model, subset, id``), a local hub-mirror directory holding
``allenai/reward-bench/data/filtered-00000-of-00001.parquet``, or the hub itself
(``allenai/reward-bench`` at a pinned revision, through ``datasets.load_dataset``).

Checks never let a broken file give a silently different score: unknown subsets,
duplicate (subset, id) keys and bad columns are errors naming the file, rows and fix;
rows with an empty prompt or answer are excluded and reported row by row. Rows are
keyed on (subset, id): id 3692 occurs in both donotanswer and hep-python.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from rmcore.evaluate.official import KNOWN_SUBSETS, ROW_COUNTS

log = logging.getLogger(__name__)

HUB_ID = "allenai/reward-bench"
HUB_SPLIT = "filtered"
MIRROR_FILE = Path("allenai/reward-bench/data/filtered-00000-of-00001.parquet")
REQUIRED_COLUMNS = ("prompt", "chosen", "rejected", "subset", "id")
TEXT_COLUMNS = ("prompt", "chosen", "rejected")


class RewardBenchDataError(ValueError):
    """The RewardBench input cannot be scored as given; the message names file, rows and fix."""


@dataclass
class RewardBenchRows:
    """Checked rows ready to score, and what was set aside on the way."""

    frame: pd.DataFrame
    """Columns subset, id, prompt, chosen, rejected (+ row: position in the input file)."""
    origin: str
    rows_in: int
    exclusions: list[dict] = field(default_factory=list)
    """One entry per row not scored: subset, id, row, reason."""
    sample: dict | None = None
    """{"per_subset": N, "seed": s, "rows": scored} when a stratified sample was taken."""


def _read_local(path: Path) -> pd.DataFrame:
    if path.is_dir():
        for candidate in (path / MIRROR_FILE, path / "data" / MIRROR_FILE.name):
            if candidate.is_file():
                return _read_local(candidate)
        raise RewardBenchDataError(
            f"{path}: directory holds no {MIRROR_FILE} (hub-mirror layout) nor data/{MIRROR_FILE.name}; "
            "pass the Parquet/JSONL file itself"
        )
    suffixes = "".join(path.suffixes[-2:]).lower()
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pandas()
        if suffixes.endswith((".jsonl", ".json", ".jsonl.gz", ".json.gz")):
            return pd.read_json(
                path, lines=".jsonl" in suffixes or path.suffix == ".jsonl", dtype={"id": "int64"}
            )
    except (ValueError, TypeError, OSError, UnicodeError) as e:  # not JSON/UTF-8/Parquet; ids not integers
        raise RewardBenchDataError(
            f"{path}: cannot be read as a RewardBench file in the hub schema ({type(e).__name__}: "
            f"{str(e).splitlines()[0] if str(e) else ''}); fix or re-download the file"
        ) from e
    raise RewardBenchDataError(f"{path}: unknown file type; give a .parquet or .jsonl file in the hub schema")


def _read_hub(name: str, revision: str | None) -> pd.DataFrame:
    if not revision:
        raise RewardBenchDataError(
            f"{name}: loading from the hub needs a pinned revision (a commit of {HUB_ID}); "
            "set hub_revision, or pass a local file"
        )
    from datasets import load_dataset

    return load_dataset(name, split=HUB_SPLIT, revision=revision).to_pandas()


def read_rewardbench(source: str | Path, *, revision: str | None = None) -> tuple[pd.DataFrame, str]:
    """Raw rows and a description of where they came from (path, or hub id@revision)."""
    path = Path(source)
    if path.exists():
        return _read_local(path), str(path)
    if str(source) == HUB_ID:
        return _read_hub(HUB_ID, revision), f"{HUB_ID}@{revision}"
    raise RewardBenchDataError(f"{source}: no such file or directory (and not the hub id {HUB_ID!r})")


def _is_empty(value) -> bool:
    return value is None or (isinstance(value, float) and np.isnan(value)) or not str(value).strip()


def _text_problem(value, column: str) -> str | None:
    """Why a prompt/answer cannot be scored (empty, or not text: never scored as its repr), else None."""
    if _is_empty(value):
        return f"empty {column}"
    if not isinstance(value, str):
        return f"{column} is not text ({type(value).__name__})"
    return None


def _check_columns(raw: pd.DataFrame, origin: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in raw.columns]
    if missing:
        hint = (
            " (a BiasScope-style file? rename question->prompt, response_A->chosen, response_B->rejected)"
            if ("question" in raw.columns)
            else ""
        )
        raise RewardBenchDataError(
            f"{origin}: missing column(s) {', '.join(missing)}; need {', '.join(REQUIRED_COLUMNS)}{hint}"
        )
    bad_subset = raw["subset"].isna()
    if bad_subset.any():
        rows = np.flatnonzero(bad_subset.to_numpy())[:5].tolist()
        raise RewardBenchDataError(
            f"{origin}: {int(bad_subset.sum())} row(s) without a subset, e.g. rows {rows}"
        )
    ids = pd.to_numeric(raw["id"], errors="coerce")
    with np.errstate(invalid="ignore"):
        bad_id = ids.isna() | (ids != ids.round()) | ~(ids.abs() < 2**63)  # also inf and beyond int64
    if bad_id.any():
        rows = np.flatnonzero(bad_id.to_numpy())[:5].tolist()
        raise RewardBenchDataError(
            f"{origin}: {int(bad_id.sum())} row(s) with a missing or non-integer id, e.g. rows {rows}"
        )


def _check_subsets_and_keys(frame: pd.DataFrame, origin: str) -> None:
    unknown = sorted(set(frame["subset"]) - set(KNOWN_SUBSETS))
    if unknown:
        counts = frame["subset"].value_counts()
        listed = ", ".join(f"{s} ({int(counts[s])} rows)" for s in unknown)
        raise RewardBenchDataError(
            f"{origin}: unknown subset(s) {listed}; RewardBench v1 subsets are the 23 of the filtered split "
            "plus the pref-test-sets names; remove those rows or fix the subset names"
        )
    dup = frame.duplicated(["subset", "id"], keep=False)
    if dup.any():
        keys = frame.loc[dup, ["subset", "id", "row"]].head(6).to_dict("records")
        raise RewardBenchDataError(
            f"{origin}: {int(dup.sum())} rows share a (subset, id) key, e.g. {keys}; "
            "each pair must appear once per subset (deduplicate the file)"
        )


def check_rewardbench(raw: pd.DataFrame, origin: str) -> RewardBenchRows:
    """Validate raw rows; return the scorable ones plus reported exclusions (empty texts)."""
    _check_columns(raw, origin)
    frame = pd.DataFrame(
        {
            "subset": raw["subset"].astype(str).to_numpy(),
            "id": pd.to_numeric(raw["id"]).astype("int64").to_numpy(),
            **{c: raw[c].to_numpy(dtype=object) for c in TEXT_COLUMNS},
            "row": np.arange(len(raw), dtype=np.int64),
        }
    )
    _check_subsets_and_keys(frame, origin)
    exclusions = []
    keep = np.ones(len(frame), dtype=bool)
    for column in TEXT_COLUMNS:
        reasons = frame[column].map(lambda v, c=column: _text_problem(v, c))
        for i in np.flatnonzero(reasons.notna().to_numpy() & keep):
            exclusions.append(
                {
                    "subset": frame.at[i, "subset"],
                    "id": int(frame.at[i, "id"]),
                    "row": int(i),
                    "reason": reasons.iat[i],
                }
            )
        keep &= reasons.isna().to_numpy()
    if exclusions:
        log.warning(
            "%s: %d row(s) excluded for empty or non-text fields (listed in the summary)",
            origin,
            len(exclusions),
        )
    return RewardBenchRows(frame[keep].reset_index(drop=True), origin, len(raw), exclusions)


def sample_per_subset(rows: RewardBenchRows, per_subset: int, *, seed: int = 0) -> RewardBenchRows:
    """A stratified sample: at most ``per_subset`` rows from every subset, seeded, file order kept."""
    rng = np.random.default_rng(seed)
    picked = []
    for _, group in sorted(rows.frame.groupby("subset", sort=False), key=lambda kv: kv[0]):
        take = min(per_subset, len(group))
        picked.append(np.sort(rng.choice(group.index.to_numpy(), size=take, replace=False)))
    index = np.sort(np.concatenate(picked)) if picked else np.array([], dtype=np.int64)
    frame = rows.frame.loc[index].reset_index(drop=True)
    sample = {"per_subset": per_subset, "seed": seed, "rows": len(frame)}
    return RewardBenchRows(frame, rows.origin, rows.rows_in, rows.exclusions, sample)


def count_mismatches(frame: pd.DataFrame) -> dict[str, dict[str, int]]:
    """Core subsets whose row count differs from the official filtered split's."""
    counts = frame["subset"].value_counts()
    return {
        s: {"rows": int(counts.get(s, 0)), "official": n}
        for s, n in ROW_COUNTS.items()
        if s in counts.index and int(counts[s]) != n
    }


def load_rewardbench(
    source: str | Path, *, revision: str | None = None, per_subset: int | None = None, seed: int = 0
) -> RewardBenchRows:
    """Read, check and (optionally) sample RewardBench rows."""
    raw, origin = read_rewardbench(source, revision=revision)
    rows = check_rewardbench(raw, origin)
    if per_subset is not None:
        rows = sample_per_subset(rows, per_subset, seed=seed)
    return rows


def conversations(frame: pd.DataFrame, column: str) -> list[list[dict[str, str]]]:
    """``[user prompt, assistant answer]`` for each row (the official core-set format)."""
    return [
        [{"role": "user", "content": str(p)}, {"role": "assistant", "content": str(a)}]
        for p, a in zip(frame["prompt"], frame[column])
    ]
