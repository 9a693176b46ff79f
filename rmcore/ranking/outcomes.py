"""Readers: real preference data -> an outcomes table (item_a, item_b, winner).

Every reader returns a table that matches contract ``ranking_outcomes``: ``winner`` is
the name in ``item_a``, the name in ``item_b``, or ``"tie"``.

- Chatbot Arena battles: ``model_a``/``model_b`` with one-hot ``winner_model_a``,
  ``winner_model_b``, ``winner_tie`` (lmsys-arena-human-preference-55k), or a ``winner``
  column of ``model_a``/``model_b``/``tie``/``tie (bothbad)`` (LMSYS clean battles).
- RewardBench: the model that wrote ``chosen`` beats the one that wrote ``rejected``.
- UltraFeedback raw rows: per prompt, every unordered pair of completions, the one with
  the higher fine-grained score wins (equal scores: a tie). Each pair is counted once,
  so standard errors are not overstated by double counting.
- Reward-model versions head to head: on each preference pair, a version that ranks
  chosen above rejected beats one that does not; both right or both wrong is a tie.
- Generic: a CSV/Parquet/JSONL file that already has item_a, item_b, winner.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv
import pyarrow.json
import pyarrow.parquet as pq

from data_contracts.schemas import RANKING_OUTCOMES, validate
from rmcore.ranking.counts import TIE

log = logging.getLogger(__name__)

ARENA_ONE_HOT = ("model_a", "model_b", "winner_model_a", "winner_model_b", "winner_tie")
ARENA_WINNER = ("model_a", "model_b", "winner")
REWARDBENCH = ("chosen_model", "rejected_model")
GENERIC = ("item_a", "item_b", "winner")
ULTRAFEEDBACK = ("completions",)
SCORES = ("score_chosen", "score_rejected")
NAME_COLUMNS = ("item_a", "item_b", "winner", "model_a", "model_b", "chosen_model", "rejected_model")
FORMATS = ("arena", "rewardbench", "ultrafeedback", "generic", "scores")


def outcomes_table(item_a: Sequence[str], item_b: Sequence[str], winner: Sequence[str]) -> pa.Table:
    table = pa.table(
        {
            "item_a": pa.array(item_a, pa.string()),
            "item_b": pa.array(item_b, pa.string()),
            "winner": pa.array(winner, pa.string()),
        }
    )
    return validate(table, RANKING_OUTCOMES, where="outcomes")


def read_rows(path: str | Path) -> pa.Table:
    """Read Parquet, JSONL/JSON (one object per line) or CSV into a table."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file")
    suffixes = "".join(path.suffixes).lower()
    if suffixes.endswith(".parquet"):
        return pq.read_table(path)
    if suffixes.endswith(".csv"):
        # Item names stay text even when they look like numbers or nulls ("1", "NA").
        names = {c: pa.string() for c in NAME_COLUMNS}
        options = pyarrow.csv.ConvertOptions(strings_can_be_null=False, null_values=[], column_types=names)
        return pyarrow.csv.read_csv(path, convert_options=options)
    if suffixes.endswith((".jsonl", ".json", ".ndjson")):
        try:
            return pyarrow.json.read_json(path)
        except pa.ArrowInvalid:  # types differ across rows (e.g. ids 7 and "tie"): parse row by row
            return pa.Table.from_pylist([_names_as_str(row) for row in _json_lines(path)])
    raise ValueError(f"{path}: unknown file type; use .parquet, .jsonl/.json or .csv")


def _names_as_str(row: dict[str, Any]) -> dict[str, Any]:
    for key in NAME_COLUMNS:
        if row.get(key) is not None and not isinstance(row[key], str):
            row[key] = str(row[key])
    return row


def _json_lines(path: Path) -> Iterable[dict[str, Any]]:
    with path.open() as f:
        for line_no, line in enumerate(f, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {line_no}: not valid JSON ({e.msg})") from None


def detect_format(columns: Iterable[str]) -> str:
    """Which reader fits a table with these columns (generic wins when its columns are present)."""
    have = set(columns)
    for name, needed in (
        ("generic", GENERIC),
        ("arena", ARENA_ONE_HOT),
        ("arena", ARENA_WINNER),
        ("rewardbench", REWARDBENCH),
        ("ultrafeedback", ULTRAFEEDBACK),
        ("scores", SCORES),
    ):
        if have.issuperset(needed):
            return name
    raise ValueError(
        f"cannot tell what these columns hold: {sorted(have)}; expected item_a/item_b/winner (generic),"
        " model_a/model_b/winner_model_a/winner_model_b/winner_tie (arena), chosen_model/rejected_model"
        " (RewardBench) or completions (UltraFeedback)"
    )


def outcomes_from_arena(table: pa.Table) -> pa.Table:
    """Arena battles -> outcomes. One-hot winner columns must have exactly one 1 per row."""
    model_a = table.column("model_a").to_pylist()
    model_b = table.column("model_b").to_pylist()
    if "winner_model_a" in table.column_names:
        flags = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in ARENA_ONE_HOT[2:]], axis=1)
        bad = flags.sum(axis=1) != 1
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise ValueError(
                f"arena row {row}: winner_model_a/winner_model_b/winner_tie = {flags[row].tolist()}, expected"
                f" exactly one 1 ({int(bad.sum())} such rows); fix or drop those rows"
            )
        pick = flags.argmax(axis=1)
    else:
        codes = {"model_a": 0, "model_b": 1, "tie": 2, "tie (bothbad)": 2}
        pick = []
        for row, value in enumerate(table.column("winner").to_pylist()):
            if value not in codes:
                raise ValueError(f"arena row {row}: winner {value!r} is not one of {sorted(codes)}")
            pick.append(codes[value])
    winner = [a if k == 0 else b if k == 1 else TIE for a, b, k in zip(model_a, model_b, pick)]
    return outcomes_table(model_a, model_b, winner)


def outcomes_from_rewardbench(table: pa.Table) -> pa.Table:
    """RewardBench rows -> outcomes: ``chosen_model`` beats ``rejected_model``."""
    chosen, rejected = table.column("chosen_model"), table.column("rejected_model")
    for name, col in (("chosen_model", chosen), ("rejected_model", rejected)):
        if col.null_count:
            row = int(np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"rewardbench row {row}: {name} is null; every pair needs both model names")
    return outcomes_table(chosen.to_pylist(), rejected.to_pylist(), chosen.to_pylist())


def completion_rating(completion: Mapping[str, Any]) -> float | None:
    """UltraFeedback: ``fine-grained_score`` (the mean of the aspect ratings) or that mean recomputed."""
    score = completion.get("fine-grained_score")
    if isinstance(score, (int, float)) and not isinstance(score, bool) and np.isfinite(score):
        return float(score)
    ratings = []
    for aspect in (completion.get("annotations") or {}).values():
        try:
            ratings.append(float((aspect or {}).get("Rating")))
        except (TypeError, ValueError):  # "N/A" or missing: not a rating
            continue
    return float(np.mean(ratings)) if ratings else None


def outcomes_from_ultrafeedback(rows: pa.Table | Iterable[Mapping[str, Any]]) -> pa.Table:
    """UltraFeedback raw rows -> every unordered pair of rated completions of a prompt."""
    if isinstance(rows, pa.Table):
        rows = rows.select(["completions"]).to_pylist()
    item_a, item_b, winner = [], [], []
    for row in rows:
        rated = [(c.get("model"), completion_rating(c)) for c in row.get("completions") or []]
        rated = [(m, r) for m, r in rated if m is not None and r is not None]
        for (ma, ra), (mb, rb) in itertools.combinations(rated, 2):
            item_a.append(ma)
            item_b.append(mb)
            winner.append(ma if ra > rb else mb if rb > ra else TIE)
    return outcomes_table(item_a, item_b, winner)


def outcomes_from_versions(margins: Mapping[str, Sequence[float] | np.ndarray]) -> pa.Table:
    """Reward-model versions head to head over the same preference pairs.

    ``margins[name][k]`` is that version's score of chosen minus rejected on pair k. For
    every two versions and every pair: the one that is right (margin > 0) while the other
    is not wins; both right or both wrong is a tie.
    """
    names = list(margins)
    if len(names) < 2:
        raise ValueError(f"head to head needs at least two versions, got {names}")
    arrays = {k: np.asarray(margins[k], dtype=np.float64) for k in names}
    sizes = {k: v.size for k, v in arrays.items()}
    if len(set(sizes.values())) != 1:
        raise ValueError(f"versions scored different numbers of pairs: {sizes}; score the same pairs")
    item_a, item_b, winner = [], [], []
    for va, vb in itertools.combinations(names, 2):
        right_a, right_b = arrays[va] > 0, arrays[vb] > 0
        item_a += [va] * right_a.size
        item_b += [vb] * right_a.size
        winner += np.where(right_a & ~right_b, va, np.where(right_b & ~right_a, vb, TIE)).tolist()
    return outcomes_table(item_a, item_b, winner)


def head_to_head(margins_a: np.ndarray, margins_b: np.ndarray) -> dict[str, int]:
    """Per-pair agreement with the label of two versions: both right, only a, only b, neither."""
    right_a, right_b = np.asarray(margins_a) > 0, np.asarray(margins_b) > 0
    if right_a.shape != right_b.shape:
        raise ValueError(f"margins cover different pairs: {right_a.shape} vs {right_b.shape}")
    return {
        "pairs": int(right_a.size),
        "both_right": int((right_a & right_b).sum()),
        "only_a_right": int((right_a & ~right_b).sum()),
        "only_b_right": int((right_b & ~right_a).sum()),
        "both_wrong": int((~right_a & ~right_b).sum()),
    }


def margins_from_score_tables(tables: Mapping[str, pa.Table]) -> dict[str, np.ndarray]:
    """Score tables (rewardbench ``subset, id`` or held-out ``pair_id`` keyed) -> aligned margins."""
    aligned: dict[str, np.ndarray] = {}
    reference_keys: list[Any] | None = None
    for name, table in tables.items():
        key_cols = ["subset", "id"] if {"subset", "id"} <= set(table.column_names) else ["pair_id"]
        if not set(key_cols) <= set(table.column_names):
            raise ValueError(
                f"{name}: a score table needs subset+id or pair_id to align pairs across versions"
            )
        keys = list(zip(*(table.column(c).to_pylist() for c in key_cols)))
        margin = dict(zip(keys, (pc.subtract(table["score_chosen"], table["score_rejected"])).to_pylist()))
        if reference_keys is None:
            reference_keys = sorted(margin)
        elif set(margin) != set(reference_keys):
            missing = len(set(reference_keys) - set(margin))
            raise ValueError(
                f"{name}: scored a different set of pairs ({missing} of the first version's missing)"
            )
        aligned[name] = np.array([margin[k] for k in reference_keys], dtype=np.float64)
    return aligned


def names_as_text(table: pa.Table) -> pa.Table:
    """Cast item-name columns that a reader typed as numbers (JSON ids like 7) to strings."""
    for k, field in enumerate(table.schema):
        if (
            field.name in NAME_COLUMNS
            and not pa.types.is_string(field.type)
            and not pa.types.is_null(field.type)
        ):
            table = table.set_column(k, field.name, pc.cast(table.column(k), pa.string()))
    return table


def outcomes_from_rows(table: pa.Table, fmt: str = "auto", *, where: str = "table") -> pa.Table:
    """Outcomes from a table in any known format (``fmt="auto"`` picks it from the columns)."""
    fmt = detect_format(table.column_names) if fmt == "auto" else fmt
    table = names_as_text(table)
    if fmt == "generic":
        return validate(table.select(list(GENERIC)), RANKING_OUTCOMES, where=where)
    if fmt == "arena":
        return outcomes_from_arena(table)
    if fmt == "rewardbench":
        return outcomes_from_rewardbench(table)
    if fmt == "ultrafeedback":
        return outcomes_from_ultrafeedback(table)
    if fmt == "scores":
        raise ValueError(f"{where} holds reward-model scores: pass two or more score files to rank versions")
    raise ValueError(f"format {fmt!r}: use one of auto, {', '.join(FORMATS)}")


def outcomes_from_file(path: str | Path, fmt: str = "auto") -> pa.Table:
    """Read one file of battles / RewardBench rows / UltraFeedback rows / generic outcomes."""
    try:
        return outcomes_from_rows(read_rows(path), fmt, where=str(path))
    except (KeyError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def outcomes_from_files(paths: Sequence[str | Path], fmt: str = "auto") -> pa.Table:
    """One file: its outcomes. Several score files: their versions head to head (named by path).

    Several outcome files are concatenated.
    """
    tables = {str(p): read_rows(p) for p in paths}
    kinds = {p: (detect_format(t.column_names) if fmt == "auto" else fmt) for p, t in tables.items()}
    if len(paths) > 1 and all(k == "scores" for k in kinds.values()):
        return outcomes_from_versions(margins_from_score_tables(tables))
    parts = []
    for p, t in tables.items():
        try:
            parts.append(outcomes_from_rows(t, kinds[p], where=p))
        except (KeyError, ValueError) as e:
            raise ValueError(f"{p}: {e}") from None
    return pa.concat_tables(parts)
