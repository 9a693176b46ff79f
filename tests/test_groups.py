"""Ranked groups for listwise training, regrouped from the all-pairs pairing."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from test_sources_helpsteer import ROWS

from rmcore.data.groups import GroupingError, dense_tiers, group_stats, groups_from_pairs
from rmcore.data.sources import CleanOptions
from rmcore.data.sources.helpsteer import HelpSteer

SHARED_HELPSTEER = Path(__file__).parents[2] / "shared" / "data" / "nvidia" / "HelpSteer" / "train.jsonl"


def test_dense_tiers_rank_best_first_and_share_ties() -> None:
    assert dense_tiers([3.0, 1.0, 3.0, 2.0]) == [0, 2, 0, 1]
    assert dense_tiers([0.5]) == [0]


def test_helpsteer_hand_rows_regroup_into_one_ranked_prompt() -> None:
    # P1: A 4, C 3, B 2, D 2 (B and D tie; 5 pairs A>B, A>C, A>D, C>B, C>D); P3's two responses
    # have the same text (no pair), P2 has one response: neither makes a group.
    pairs = HelpSteer().clean(pa.Table.from_pylist(ROWS), CleanOptions(pairing="all-pairs"), split="train").pairs
    table, report = groups_from_pairs(pairs)
    groups = table.to_pylist()
    assert len(groups) == 1 and report == {"merged_answers": 0}
    (group,) = groups
    answers = {r[-1]["content"]: (s, t) for r, s, t in zip(group["responses"], group["scores"], group["tiers"])}
    assert answers == {"A": (4.0, 0), "C": (3.0, 1), "B": (2.0, 2), "D": (2.0, 2)}
    assert group["prompt"] == [{"role": "user", "content": "P1"}]
    assert group["responses"][0][0] == {"role": "user", "content": "P1"}  # whole conversations
    # 4 responses, one tie, and exactly the 5 pairs the pairing made
    assert group_stats(table) == {
        "groups": 1, "responses": 4, "mean_group_size": 4.0, "groups_with_ties": 1, "ordered_pairs": 5}


def test_an_answer_scored_twice_is_one_response_with_the_mean_score_and_is_counted() -> None:
    pairs = HelpSteer().clean(pa.Table.from_pylist(ROWS), CleanOptions(pairing="all-pairs"), split="train").pairs
    rows = pairs.to_pylist()
    index = next(i for i, r in enumerate(rows) if r["chosen"][-1]["content"] == "C")
    rows[index]["chosen_score"] = 2.0  # C rated 3 in its other pair: one response C, score 2.5
    table, report = groups_from_pairs(pa.Table.from_pylist(rows, schema=pairs.schema))
    (group,) = table.to_pylist()
    answers = {r[-1]["content"]: (s, t) for r, s, t in zip(group["responses"], group["scores"], group["tiers"])}
    assert answers["C"] == (2.5, 1) and report == {"merged_answers": 1}
    rows[0]["rejected_score"] = None
    with pytest.raises(GroupingError, match=r"mix: pair 0 has no usable rejected_score"):
        groups_from_pairs(pa.Table.from_pylist(rows, schema=pairs.schema), where="mix")


@pytest.mark.skipif(not SHARED_HELPSTEER.exists(), reason=f"{SHARED_HELPSTEER} absent (the shared real-data mirror)")
def test_real_helpsteer_groups_encode_exactly_the_all_pairs_comparisons() -> None:
    import json

    raw = pa.Table.from_pylist([json.loads(line) for line in SHARED_HELPSTEER.read_text().splitlines()])
    pairs = HelpSteer().clean(raw, CleanOptions(pairing="all-pairs"), split="train").pairs
    groups, report = groups_from_pairs(pairs, where=str(SHARED_HELPSTEER))
    # an independent count of answers rated twice for one prompt (same text, several scores)
    seen: dict[tuple[str, str], set[float]] = {}
    for p in pairs.to_pylist():
        for side in ("chosen", "rejected"):
            seen.setdefault((json.dumps(p["prompt"]), p[side][-1]["content"]), set()).add(p[f"{side}_score"])
    twice = {prompt for (prompt, _), scores in seen.items() if len(scores) > 1}
    assert report["merged_answers"] == sum(len(s) > 1 for s in seen.values()) > 0
    # the groups without such an answer encode exactly their prompts' pairs, nothing more
    clean = groups.filter(pa.array([json.dumps(p) not in twice for p in groups.column("prompt").to_pylist()]))
    distinct = {(json.dumps(p["prompt"]), p["chosen"][-1]["content"], p["rejected"][-1]["content"])
                for p in pairs.to_pylist()}  # a response given twice with one score pairs twice
    clean_pairs = sum(prompt not in twice for prompt, _, _ in distinct)
    assert group_stats(clean)["ordered_pairs"] == clean_pairs
    assert groups.num_rows == len({json.dumps(p) for p in pairs.column("prompt").to_pylist()})
    assert all(len(r) >= 2 for r in groups.column("responses").to_pylist())
    assert all(min(t) == 0 and max(t) >= 1 for t in groups.column("tiers").to_pylist())
