"""SHP: score_ratio > 2, at most N pairs per post_id, chosen by labels (hand-written hub rows)."""

from __future__ import annotations

import math

import pyarrow as pa
import pytest

from rmcore.data.sources import CleanOptions
from rmcore.data.sources.base import check_options
from rmcore.data.sources.shp import SHP


def shp_row(post: str, a: str, b: str, labels: int | None, ratio: float, history: str | None = "Q?") -> dict:
    """One row in the hub's exact field set (stanfordnlp/SHP card)."""
    return {
        "post_id": post, "domain": "askculinary_train", "upvote_ratio": 0.9, "history": history,
        "c_root_id_A": "ca", "c_root_id_B": "cb", "created_at_utc_A": 1, "created_at_utc_B": 2,
        "score_A": 30, "score_B": 10, "human_ref_A": a, "human_ref_B": b, "labels": labels,
        "seconds_difference": 1.0, "score_ratio": ratio,
    }  # fmt: skip


ROWS = [
    shp_row("p1", "A0", "B0", 1, 3.0),  # 0 candidate, chosen A
    shp_row("p1", "A1", "B1", 0, 2.0),  # 1 score_ratio_le_2 (2 is not > 2)
    shp_row("p1", "A2", "B2", 0, 5.0),  # 2 candidate, chosen B
    shp_row("p2", "A3", "B3", 1, 2.5),  # 3 candidate
    shp_row("p3", "same", "same", 1, 9.0),  # 4 chosen_equals_rejected
    shp_row("p3", "A5", "B5", 2, 9.0),  # 5 quarantined: bad label
    shp_row("p4", "A6", "B6", 1, math.nan),  # 6 quarantined: NaN ratio
    shp_row("p4", "A7", "B7", 1, 3.0, history=None),  # 7 quarantined: missing history
]


def test_v1_keeps_one_pair_per_post() -> None:
    result = SHP().clean(pa.Table.from_pylist(ROWS), CleanOptions(seed=1), split="train")
    assert result.rows_in == 8
    assert result.dropped == {"chosen_equals_rejected": 1, "score_ratio_le_2": 1, "per_prompt_cap": 1}
    assert result.quarantined == 3
    assert [r.split(":")[0] for r in result.quarantine["reason"].to_pylist()] == [
        "bad_label",
        "nan_score",
        "missing_field",
    ]
    kept = result.pairs["source_row"].to_pylist()
    assert len(kept) == 2 and 3 in kept and ({0, 2} & set(kept))
    again = SHP().clean(pa.Table.from_pylist(ROWS), CleanOptions(seed=1), split="train")
    assert again.pairs["pair_id"].to_pylist() == result.pairs["pair_id"].to_pylist()


def test_v2_cap_five_keeps_all_three_and_labels_pick_the_side() -> None:
    result = SHP().clean(pa.Table.from_pylist(ROWS), CleanOptions(per_prompt=5), split="train")
    assert result.kept == 3 and result.dropped["per_prompt_cap"] == 0
    by_row = {p["source_row"]: p for p in result.pairs.to_pylist()}
    assert by_row[0]["chosen"][-1]["content"] == "A0" and by_row[0]["chosen_score"] == 30.0
    assert by_row[2]["chosen"][-1]["content"] == "B2" and by_row[2]["rejected_score"] == 30.0
    assert by_row[0]["prompt"] == [{"role": "user", "content": "Q?"}]


def test_explicit_per_prompt_caps_and_pairing_is_refused() -> None:
    result = SHP().clean(pa.Table.from_pylist(ROWS), CleanOptions(per_prompt=1), split="train")
    assert result.kept == 2 and result.dropped["per_prompt_cap"] == 1
    with pytest.raises(ValueError, match=r"pairing: source 'shp' does not use 'pairing'.*takes: per_prompt"):
        check_options(SHP(), CleanOptions(pairing="all-pairs"))
