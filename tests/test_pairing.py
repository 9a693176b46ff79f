"""Pair ids, candidate enumeration, best-vs-random / all-pairs and caps on hand-worked groups."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rmcore.data.pairing import (
    ALL_SCORES_EQUAL,
    EQUAL_SCORES,
    NOT_SELECTED,
    SAME_TEXT,
    UNRATED,
    all_candidates,
    cap_per_group,
    json_escape,
    pair_groups,
    pair_id,
    pairs_all,
    pairs_best_vs_random,
    single_turn_pair_ids,
)
from rmcore.io import digest_strings


def test_pair_id_is_digest_of_source_and_canonical_json() -> None:
    chosen = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    rejected = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "No"}]
    expected = digest_strings(
        "src",
        '[{"content":"Hi","role":"user"},{"content":"Hello","role":"assistant"}]',
        '[{"content":"Hi","role":"user"},{"content":"No","role":"assistant"}]',
    )
    assert pair_id("src", chosen, rejected) == expected
    assert pair_id("other", chosen, rejected) != expected
    assert pair_id("src", rejected, chosen) != expected


@settings(max_examples=150, deadline=None)
@given(st.lists(st.text(), min_size=1, max_size=5))
def test_json_escape_matches_json_dumps(texts: list[str]) -> None:
    got = json_escape(pa.array(texts, pa.string())).to_pylist()
    assert got == [json.dumps(t, ensure_ascii=False)[1:-1] for t in texts]


def test_vectorised_pair_ids_equal_python_pair_ids() -> None:
    prompts = ['say "hi"\n', "tab\there \\ back", "ctrl \x01 é ☃"]
    chosen = ["ok", "line1\nline2", "\x1f"]
    rejected = ["no", "", "é"]
    esc = [json_escape(pa.array(x, pa.string())) for x in (prompts, chosen, rejected)]
    ids = single_turn_pair_ids("s", *esc).to_pylist()
    for p, c, r, got in zip(prompts, chosen, rejected, ids):
        msgs = [{"role": "user", "content": p}]
        assert got == pair_id(
            "s", msgs + [{"role": "assistant", "content": c}], msgs + [{"role": "assistant", "content": r}]
        )


def test_all_candidates_enumerates_pairs_within_each_group() -> None:
    a, b, g = all_candidates(np.array([0, 3, 4, 6]))  # groups of 3, 1, 2 items
    assert list(zip(a.tolist(), b.tolist(), g.tolist())) == [(0, 1, 0), (0, 2, 0), (1, 2, 0), (4, 5, 2)]


def test_all_pairs_orients_by_score_and_drops_equal_and_same_text() -> None:
    # group 0: scores 3, 1, 3 -> (0,1) kept 0>1; (0,2) equal; (1,2) kept 2>1
    # group 1: two items with the same text -> chosen_equals_rejected
    offsets = np.array([0, 3, 5])
    scores = np.array([3.0, 1.0, 3.0, 2.0, 1.0])
    texts = pa.array(["a", "b", "c", "d", "d"])
    gp = pairs_all(offsets, scores, texts)
    assert list(zip(gp.chosen.tolist(), gp.rejected.tolist())) == [(0, 1), (2, 1)]
    assert gp.dropped == {UNRATED: 0, SAME_TEXT: 1, EQUAL_SCORES: 1}


def test_best_vs_random_draws_the_rejected_among_the_strictly_lower() -> None:
    offsets = np.array([0, 4])
    scores = np.array([1.0, 4.0, 2.0, 4.0])  # best = item 1 (first of the two 4s); lower: 0, 2 (3 ties)
    texts = pa.array(["a", "b", "c", "d"])
    low = pairs_best_vs_random(offsets, scores, texts, np.array([0.0]))  # k = floor(0 * 2) = 0 -> item 0
    assert (low.chosen.tolist(), low.rejected.tolist()) == ([1], [0])
    assert low.dropped == {UNRATED: 0, SAME_TEXT: 0, ALL_SCORES_EQUAL: 0, NOT_SELECTED: 5}
    mid = pairs_best_vs_random(offsets, scores, texts, np.array([0.5]))  # k = floor(0.5 * 2) = 1 -> item 2
    assert mid.rejected.tolist() == [2]
    top = pairs_best_vs_random(offsets, scores, texts, np.array([0.99]))  # k = 1 -> item 2, never the tied 3
    assert (top.chosen.tolist(), top.rejected.tolist()) == ([1], [2]) and top.dropped == low.dropped


def test_best_vs_random_gives_no_pair_when_all_scores_tie_and_one_pair_otherwise() -> None:
    # group 0: 3, 3, 3 -> nothing lower (3 candidates all_scores_equal); group 1: 5 and its copy
    # rated 2 -> the only lower item copies the chosen text (1 candidate chosen_equals_rejected);
    # group 2: 2, 1 -> one pair
    offsets = np.array([0, 3, 5, 7])
    scores = np.array([3.0, 3.0, 3.0, 5.0, 2.0, 2.0, 1.0])
    texts = pa.array(["a", "b", "c", "d", "d", "e", "f"])
    for u in (0.0, 0.4, 0.99):
        gp = pairs_best_vs_random(offsets, scores, texts, np.full(3, u))
        assert (gp.chosen.tolist(), gp.rejected.tolist(), gp.group.tolist()) == ([5], [6], [2])
        assert gp.dropped == {UNRATED: 0, SAME_TEXT: 1, ALL_SCORES_EQUAL: 3, NOT_SELECTED: 0}


def test_best_vs_random_keeps_the_same_count_for_every_seed() -> None:
    """Published for UltraFeedback: 62,793 pairs from 63,967 prompts; the kept count is fixed by
    the scores (one pair per prompt with anything scored lower), never by the draw."""
    rng = np.random.default_rng(0)
    offsets = np.arange(0, 4001, 4)
    scores = rng.integers(1, 4, 4000).astype(float)  # many ties
    texts = pa.array([str(i) for i in range(4000)])
    expected = int(sum(len(set(scores[i : i + 4])) > 1 for i in range(0, 4000, 4)))
    kept = {len(pair_groups(offsets, scores, texts, pairing="best-vs-random", seed=s).chosen) for s in range(8)}
    assert kept == {expected}
    for s in range(3):
        gp = pair_groups(offsets, scores, texts, pairing="best-vs-random", seed=s)
        assert (scores[gp.chosen] > scores[gp.rejected]).all()
        assert (scores[gp.chosen] == np.maximum.reduceat(scores, offsets[:-1])[gp.group]).all()


def test_best_vs_random_counts_unrated_candidates() -> None:
    # group 0: one unrated of three -> 2 unrated candidates, the rated pair selected
    # group 1: only one rated of two -> its one candidate is unrated, nothing selected
    offsets = np.array([0, 3, 5])
    scores = np.array([math.nan, 2.0, 3.0, 1.0, math.nan])
    gp = pairs_best_vs_random(offsets, scores, pa.array(list("abcde")), np.array([0.3, 0.3]))
    assert (gp.chosen.tolist(), gp.rejected.tolist(), gp.group.tolist()) == ([2], [1], [0])
    assert gp.dropped == {UNRATED: 3, SAME_TEXT: 0, ALL_SCORES_EQUAL: 0, NOT_SELECTED: 0}


def test_pair_groups_is_deterministic_for_a_seed() -> None:
    rng = np.random.default_rng(0)
    offsets = np.arange(0, 401, 4)
    scores = rng.integers(1, 6, 400).astype(float)
    texts = pa.array([str(i) for i in range(400)])
    a = pair_groups(offsets, scores, texts, pairing="best-vs-random", seed=5)
    b = pair_groups(offsets, scores, texts, pairing="best-vs-random", seed=5)
    assert np.array_equal(a.rejected, b.rejected) and a.dropped == b.dropped
    with pytest.raises(ValueError, match="unknown pairing"):
        pair_groups(offsets, scores, texts, pairing="bogus", seed=5)


def test_pair_groups_uses_given_draws_instead_of_the_seed() -> None:
    # group 0: best = item 1, others 0, 2, 3; u = 0.5 -> k = floor(0.5 * 3) = 1 -> item 2
    # group 1: best = item 5, the only other is item 4
    offsets = np.array([0, 4, 6])
    scores = np.array([1.0, 4.0, 2.0, 3.0, 1.0, 2.0])
    texts = pa.array(list("abcdef"))
    u = np.array([0.5, 0.9])
    got = pair_groups(offsets, scores, texts, pairing="best-vs-random", seed=5, draws=u)
    want = pairs_best_vs_random(offsets, scores, texts, u)
    assert (got.chosen.tolist(), got.rejected.tolist(), got.group.tolist()) == ([1, 5], [2, 4], [0, 1])
    assert (want.chosen.tolist(), want.rejected.tolist(), want.group.tolist()) == ([1, 5], [2, 4], [0, 1])
    assert got.dropped == want.dropped
    with pytest.raises(ValueError, match="one per group, got 1 for 2 groups"):
        pair_groups(offsets, scores, texts, pairing="best-vs-random", seed=5, draws=u[:1])


def test_cap_per_group_keeps_at_most_cap_per_group() -> None:
    groups = np.array([0, 0, 0, 1, 1, 2])
    for cap, expected in ((1, [1, 1, 1]), (2, [2, 2, 1]), (5, [3, 2, 1])):
        keep = cap_per_group(groups, cap, seed=3)
        assert np.bincount(groups[keep], minlength=3).tolist() == expected
    assert np.array_equal(cap_per_group(groups, 1, seed=3), cap_per_group(groups, 1, seed=3))
    with pytest.raises(ValueError, match=">= 1"):
        cap_per_group(groups, 0, seed=3)
