"""argilla/distilabel-intel-orca-dpo-pairs: GPT-4 re-rated Orca pairs.

Rows: ``system, input, chosen, rejected`` (strings), ``generations`` (the two answers
as rated), ``rating`` (one float per generation), ``status`` (``tie`` / ``unchanged`` /
``swapped``), ``chosen_score`` and more. Scores: each side's rating, found by matching
its text in ``generations`` (else ``chosen_score`` and the other rating). Rules, in
order: missing or non-string text fields -> quarantined; identical answers ->
``chosen_equals_rejected``; ``status == "tie"`` -> ``status_tie`` (whatever the rating);
no ``rating`` at all -> ``unrated_pair`` (about 42 of the 12,859 rows: the labeller gave
no rating, and their status marks them as ties: a tie, not an error); a rating that
cannot be read (wrong type, NaN, not matching either answer) -> quarantined; equal
ratings -> ``equal_scores``; chosen rated below rejected -> ``chosen_rated_lower``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rmcore.data.sources.base import SINGLE_PAIR_OPTIONS, CleanOptions, CleanResult
from rmcore.data.sources.tables import Drop, Quarantine, clean_rows, require_str, single_turn

RULES = ("chosen_equals_rejected", "status_tie", "unrated_pair", "equal_scores", "chosen_rated_lower")


def _side_scores(row: dict[str, Any], chosen: str, rejected: str) -> tuple[float, float]:
    ratings = row.get("rating")
    if not isinstance(ratings, list) or len(ratings) != 2:
        raise Quarantine("wrong_type", "rating must be a list of two numbers")
    if any(
        r is None or isinstance(r, bool) or not isinstance(r, (int, float)) or math.isnan(r) for r in ratings
    ):
        raise Quarantine("nan_score", f"rating is {ratings}")
    generations = row.get("generations") or []
    if isinstance(generations, list) and chosen in generations and rejected in generations:
        return float(ratings[generations.index(chosen)]), float(ratings[generations.index(rejected)])
    score = row.get("chosen_score")
    if isinstance(score, (int, float)) and not isinstance(score, bool) and score in ratings:
        other = list(ratings)
        other.remove(score)
        return float(score), float(other[0])
    raise Quarantine("unmatched_ratings", "neither generations nor chosen_score tell which rating is whose")


def pair_from_orca(row: dict[str, Any]) -> dict[str, Any]:
    prompt = require_str(row, "input")
    system = row.get("system")
    if system is not None and not isinstance(system, str):
        raise Quarantine("wrong_type", "system is not a string")
    chosen_text, rejected_text = require_str(row, "chosen"), require_str(row, "rejected")
    if chosen_text == rejected_text:
        raise Drop("chosen_equals_rejected")
    if row.get("status") == "tie":
        raise Drop("status_tie")
    if row.get("rating") is None:
        raise Drop("unrated_pair")
    score_c, score_r = _side_scores(row, chosen_text, rejected_text)
    if score_c == score_r:
        raise Drop("equal_scores")
    if score_c < score_r:
        raise Drop("chosen_rated_lower")
    msgs, chosen = single_turn(prompt, chosen_text, system or None)
    _, rejected = single_turn(prompt, rejected_text, system or None)
    return {
        "prompt": msgs,
        "chosen": chosen,
        "rejected": rejected,
        "chosen_score": score_c,
        "rejected_score": score_r,
    }


@dataclass(frozen=True)
class Orca:
    name: str = "orca"
    hub_id: str = "argilla/distilabel-intel-orca-dpo-pairs"
    revision: str = "081de9022db8bb1fb7de27f7d789b60cba6dbac5"
    """"Update README.md", 2024-01-22 (the hub's commit list); the data file
    ``data/train-00000-of-00001.parquet`` is unchanged since 4053239 (2024-01-09)."""
    splits: tuple[str, ...] = ("train",)
    options: frozenset[str] = SINGLE_PAIR_OPTIONS
    streams: bool = False
    columns: tuple[str, ...] | None = None

    def file_patterns(self, split: str) -> list[str]:
        return [f"data/{split}-*.parquet"]

    def clean(self, raw: pa.Table, options: CleanOptions, *, split: str) -> CleanResult:
        return clean_rows(self.name, split, raw, pair_from_orca, rules=RULES, options=options)
