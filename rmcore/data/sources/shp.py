"""stanfordnlp/SHP: Reddit comment pairs; chosen = the side ``labels`` prefers.

Rows (one JSON-lines file per subreddit folder and split): ``post_id, domain,
upvote_ratio, history, c_root_id_A/B, created_at_utc_A/B, score_A, score_B,
human_ref_A, human_ref_B, labels`` (1: A preferred, 0: B), ``seconds_difference,
score_ratio``. Rules, in order: missing/mistyped fields, NaN scores, labels other
than 0/1 -> quarantined; identical comments -> ``chosen_equals_rejected``;
``score_ratio <= 2`` -> ``score_ratio_le_2``; then at most N pairs per ``post_id``
(a seeded choice) -> ``per_prompt_cap``: N = ``per_prompt`` (``--per-prompt``), else 1 (the
recipe's v1; v2 sets 5). The rows are pairs already: ``pairing`` does not apply and is refused.
Scores: the comment scores (upvotes) of each side.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rmcore.data.sources.base import SINGLE_PAIR_OPTIONS, CleanOptions, CleanResult
from rmcore.data.sources.tables import Drop, Quarantine, clean_rows, require_number, require_str, single_turn

RULES = ("chosen_equals_rejected", "score_ratio_le_2", "per_prompt_cap")


def default_cap(options: CleanOptions) -> int:
    """``per_prompt``, else 1 (the recipe's v1; v2 says ``per_prompt: 5``). SHP rows are pairs
    already, so ``pairing`` does not apply (refused by ``check_options``)."""
    return options.per_prompt if options.per_prompt is not None else 1


def pair_from_shp(row: dict[str, Any]) -> dict[str, Any]:
    require_str(row, "post_id")
    history = require_str(row, "history")
    ref_a, ref_b = require_str(row, "human_ref_A"), require_str(row, "human_ref_B")
    score_a, score_b = require_number(row, "score_A"), require_number(row, "score_B")
    ratio = require_number(row, "score_ratio")
    label = row.get("labels")
    if label is None:
        raise Quarantine("missing_field", "labels")
    if isinstance(label, bool) or label not in (0, 1):
        raise Quarantine("bad_label", f"labels is {label!r}, expected 0 or 1")
    if ref_a == ref_b:
        raise Drop("chosen_equals_rejected")
    if ratio <= 2:
        raise Drop("score_ratio_le_2")
    (win, s_win), (lose, s_lose) = (
        ((ref_a, score_a), (ref_b, score_b)) if label == 1 else ((ref_b, score_b), (ref_a, score_a))
    )
    msgs, chosen = single_turn(history, win)
    _, rejected = single_turn(history, lose)
    return {
        "prompt": msgs,
        "chosen": chosen,
        "rejected": rejected,
        "chosen_score": s_win,
        "rejected_score": s_lose,
    }


@dataclass(frozen=True)
class SHP:
    name: str = "shp"
    hub_id: str = "stanfordnlp/SHP"
    revision: str = "e94b5f32602712d78ed494fe79105b1959396686"
    """main since 2023-10-10 (``<subreddit>/{train,validation,test}.json``); public scripts pin it too."""
    splits: tuple[str, ...] = ("train", "validation", "test")
    options: frozenset[str] = SINGLE_PAIR_OPTIONS
    streams: bool = False
    columns: tuple[str, ...] | None = None

    def file_patterns(self, split: str) -> list[str]:
        return [f"*/{split}.json"]

    def clean(self, raw: pa.Table, options: CleanOptions, *, split: str) -> CleanResult:
        return clean_rows(
            self.name,
            split,
            raw,
            pair_from_shp,
            rules=RULES,
            options=options,
            cap=default_cap(options),
            cap_key=lambda row: row["post_id"],
        )
