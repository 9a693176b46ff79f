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
ratings -> ``equal_scores``; chosen rated below rejected -> ``chosen_rated_lower``. With the
option ``filter: argilla-recommended``, a rated non-tie pair whose ``chosen_score`` is below 8 or
that is ``in_gsm8k_train`` is dropped as ``argilla_filter`` first (argilla's recommendation).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rmcore.data.sources.base import SINGLE_PAIR_OPTIONS, CleanOptions, CleanResult
from rmcore.data.sources.tables import Drop, Quarantine, clean_rows, require_str, single_turn

RULES = ("chosen_equals_rejected", "status_tie", "unrated_pair", "equal_scores", "chosen_rated_lower")
ARGILLA_FILTER = "argilla-recommended"
"""The filter argilla's dataset card recommends: ``chosen_score >= 8`` and not ``in_gsm8k_train``.
The recipe's 6,405 Orca pairs are fewer than the ~11.6K non-tie rows, so RLHFlow filtered by a rule
its post does not name; this one is offered, not assumed (off by default)."""
FILTERED = "argilla_filter"


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


def _passes_argilla_filter(row: dict[str, Any]) -> bool:
    score = row.get("chosen_score")
    if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
        return False
    return score >= 8 and row.get("in_gsm8k_train") is not True


def pair_from_orca(row: dict[str, Any], *, argilla_filter: bool = False) -> dict[str, Any]:
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
    if argilla_filter and not _passes_argilla_filter(row):
        raise Drop(FILTERED)
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
    options: frozenset[str] = SINGLE_PAIR_OPTIONS | {"filter"}
    filters: tuple[str, ...] = (ARGILLA_FILTER,)
    streams: bool = False
    columns: tuple[str, ...] | None = None

    def file_patterns(self, split: str) -> list[str]:
        return [f"data/{split}-*.parquet"]

    def clean(self, raw: pa.Table, options: CleanOptions, *, split: str) -> CleanResult:
        if options.filter == ARGILLA_FILTER:
            convert = functools.partial(pair_from_orca, argilla_filter=True)
            return clean_rows(self.name, split, raw, convert, rules=(*RULES, FILTERED), options=options)
        return clean_rows(self.name, split, raw, pair_from_orca, rules=RULES, options=options)
