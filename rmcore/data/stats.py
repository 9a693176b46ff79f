"""The dataset stats table (SPEC section 6; the recipe's section 3.1 table).

Lengths are whitespace-delimited words of the whole conversation (prompt + answer):
cleaning happens before any tokenizer is chosen, so words are the honest unit here.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

LENGTH_UNIT = "words"


def conversation_lengths(messages: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """Words per row of a list<struct<role, content>> column, vectorised."""
    arr = messages.combine_chunks() if isinstance(messages, pa.ChunkedArray) else messages
    n = len(arr)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    flat = pc.list_flatten(arr)
    parents = pc.list_parent_indices(arr).to_numpy()
    contents = pc.struct_field(flat, "content")
    words = pc.fill_null(pc.count_substring_regex(contents, r"\S+"), 0).to_numpy(zero_copy_only=False)
    return np.bincount(parents, weights=words, minlength=n).astype(np.int64)


def stats_row(
    source: str,
    pairs: pa.Table,
    *,
    rows_in: int,
    dropped: Mapping[str, int],
    quarantined: int,
    raw_rows: int | None = None,
    unit: str = "row",
) -> dict:
    """One row of the stats table (contract SOURCE_STATS) for a set of pairs.

    ``unit``: what ``rows_in`` counts. Sources with several responses per prompt
    (UltraFeedback, HelpSteer) account for candidate comparisons; ``raw_rows`` is then
    the number of rows read.
    """
    chosen = conversation_lengths(pairs.column("chosen"))
    rejected = conversation_lengths(pairs.column("rejected"))
    has = len(chosen) > 0
    return {
        "source": source,
        "raw_rows": int(rows_in if raw_rows is None else raw_rows),
        "unit": unit,
        "rows_in": int(rows_in),
        "pairs": int(pairs.num_rows),
        "mean_len_chosen": round(float(chosen.mean()), 1) if has else 0.0,
        "mean_len_rejected": round(float(rejected.mean()), 1) if has else 0.0,
        "max_len": int(max(chosen.max(), rejected.max())) if has else 0,
        "dropped": json.dumps(dict(sorted(dropped.items())), sort_keys=True),
        "quarantined": int(quarantined),
    }


def total_row(rows: Iterable[Mapping], name: str = "total") -> dict:
    """Pair-weighted totals over several stats rows (a mixture line)."""
    rows = list(rows)
    pairs = sum(r["pairs"] for r in rows)
    dropped: dict[str, int] = {}
    for r in rows:
        for rule, count in json.loads(r["dropped"]).items():
            dropped[rule] = dropped.get(rule, 0) + count

    def weighted(key: str) -> float:
        return round(sum(r[key] * r["pairs"] for r in rows) / pairs, 1) if pairs else 0.0

    units = {r["unit"] for r in rows}
    return {
        "source": name,
        "raw_rows": sum(r["raw_rows"] for r in rows),
        "unit": units.pop() if len(units) == 1 else "mixed",
        "rows_in": sum(r["rows_in"] for r in rows),
        "pairs": pairs,
        "mean_len_chosen": weighted("mean_len_chosen"),
        "mean_len_rejected": weighted("mean_len_rejected"),
        "max_len": max((r["max_len"] for r in rows), default=0),
        "dropped": json.dumps(dict(sorted(dropped.items())), sort_keys=True),
        "quarantined": sum(r["quarantined"] for r in rows),
    }


def rules_text(dropped: Mapping[str, int]) -> str:
    """Drops as "rule: n, rule: n" (rules that dropped nothing left out), "-" if none."""
    return ", ".join(f"{k}: {v:,}" for k, v in dropped.items() if v) or "-"


def dropped_text(row: Mapping) -> str:
    """A stats row's drops (a JSON column) as ``rules_text``."""
    return rules_text(json.loads(row["dropped"]))


def stats_display_rows(rows: Iterable[Mapping]) -> list[dict]:
    """The stats rows with their columns in reading order (what a person looks for first):
    source, pairs, rows in (and what a row counts), raw rows, mean lengths, max length, quarantined, drops as text.
    For the Prefect table artifact, whose columns follow the keys' order."""
    return [
        {
            "source": r["source"],
            "pairs": r["pairs"],
            "rows in": r["rows_in"],
            "counted as": r["unit"],
            "raw rows": r["raw_rows"],
            f"mean len chosen ({LENGTH_UNIT})": r["mean_len_chosen"],
            "mean len rejected": r["mean_len_rejected"],
            "max len": r["max_len"],
            "quarantined": r["quarantined"],
            "dropped (rule: n)": dropped_text(r),
        }
        for r in rows
    ]


def stats_markdown(rows: Iterable[Mapping], *, title: str | None = None) -> str:
    """The stats table as markdown (Prefect artifact, README, closing notes)."""
    lines = [f"### {title}", ""] if title else []
    lines += [
        (
            f"| source | raw rows | accounted (unit) | pairs | mean len chosen ({LENGTH_UNIT}) "
            "| mean len rejected | max len | dropped (rule: n) | quarantined |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['source']} | {r['raw_rows']:,} | {r['rows_in']:,} ({r['unit']}) | {r['pairs']:,} | "
            f"{r['mean_len_chosen']} | "
            f"{r['mean_len_rejected']} | {r['max_len']:,} | {dropped_text(r)} | {r['quarantined']:,} |"
        )
    return "\n".join(lines) + "\n"
