"""argilla/distilabel-capybara-dpo-7k-binarized: message-list pairs rated 1-5 by GPT-4.

Rows: ``chosen``/``rejected`` (full conversations, lists of {content, role}, the last
turn the assistant's answer), ``rating_chosen``, ``rating_rejected``. Rules, in order:
malformed message lists, missing or NaN ratings -> quarantined; conversations that
differ before the answer -> quarantined ``prompt_mismatch``; identical conversations
-> ``chosen_equals_rejected``; equal ratings -> ``equal_scores`` (the recipe's rule);
chosen rated below rejected -> ``chosen_rated_lower`` (the label contradicts its scores).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rmcore.data.sources.base import SINGLE_PAIR_OPTIONS, CleanOptions, CleanResult
from rmcore.data.sources.tables import Drop, Quarantine, clean_rows, require_messages, require_number

RULES = ("chosen_equals_rejected", "equal_scores", "chosen_rated_lower")


def pair_from_rated_conversations(row: dict[str, Any]) -> dict[str, Any]:
    chosen = require_messages(row, "chosen")
    rejected = require_messages(row, "rejected")
    score_c = require_number(row, "rating_chosen")
    score_r = require_number(row, "rating_rejected")
    if chosen[:-1] != rejected[:-1]:
        raise Quarantine("prompt_mismatch", "chosen and rejected conversations differ before the answer")
    if chosen == rejected:
        raise Drop("chosen_equals_rejected")
    if score_c == score_r:
        raise Drop("equal_scores")
    if score_c < score_r:
        raise Drop("chosen_rated_lower")
    return {
        "prompt": chosen[:-1],
        "chosen": chosen,
        "rejected": rejected,
        "chosen_score": score_c,
        "rejected_score": score_r,
    }


@dataclass(frozen=True)
class Capybara:
    name: str = "capybara"
    hub_id: str = "argilla/distilabel-capybara-dpo-7k-binarized"
    revision: str = "8957fe79f19178a857460c2a9f2ada9618b41a65"
    """The only full commit sha of this repo found in public sources (a stored hub commit page, a
    README commit); no loader pins it, and its file layout could not be seen offline: check it
    on the hub before relying on it (deployments/README.md, pinned revisions)."""
    splits: tuple[str, ...] = ("train",)
    options: frozenset[str] = SINGLE_PAIR_OPTIONS
    streams: bool = False
    columns: tuple[str, ...] | None = None

    def file_patterns(self, split: str) -> list[str]:
        return [f"data/{split}-*.parquet"]

    def clean(self, raw: pa.Table, options: CleanOptions, *, split: str) -> CleanResult:
        return clean_rows(self.name, split, raw, pair_from_rated_conversations, rules=RULES, options=options)
