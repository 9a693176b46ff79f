"""Parity with choix (a test-only dependency) on the real Chatbot Arena battles.

choix takes a list of (winner, loser) index pairs and has no ties. Its regularisation:
``mm_pairwise(alpha=a)`` is the MAP under our ``gamma`` prior with strength a;
``ilsr_pairwise(alpha=a)`` equals ``gamma`` with strength a * n_items (its Markov chain
adds a to every one of the n - 1 off-diagonal rates; at the fixed point that is the
score plus a * n * (1 - w_i) with the weights w normalised to mean 1). Both centre the
log-strengths, as our default sum-to-zero does.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from rmcore.ranking import Prior, counts_from_outcomes, fit_bradley_terry, outcomes_from_file

choix = pytest.importorskip("choix")

ARENA = "lmsys/lmsys-arena-human-preference-55k/train.jsonl"


@pytest.fixture(scope="module")
def arena(shared_data) -> pa.Table:
    return outcomes_from_file(shared_data / ARENA)


def win_list(outcomes: pa.Table, items: tuple[str, ...]) -> list[tuple[int, int]]:
    """Decisive battles as choix's (winner, loser) pairs; ties left out."""
    index = {name: k for k, name in enumerate(items)}
    pairs = []
    for a, b, w in zip(*(outcomes.column(c).to_pylist() for c in ("item_a", "item_b", "winner"))):
        if w != "tie" and a != b:
            loser = b if w == a else a
            pairs.append((index[w], index[loser]))
    return pairs


def test_arena_sample_is_what_sources_md_says(arena):
    assert arena.num_rows == 500
    winners = arena.column("winner").to_pylist()
    assert winners.count("tie") == 150
    assert len(set(arena.column("item_a").to_pylist()) | set(arena.column("item_b").to_pylist())) == 62


@pytest.mark.parametrize("method", ["newton", "mm"])
def test_matches_choix_mm_and_ilsr_with_the_same_alpha(arena, method):
    counts = counts_from_outcomes(arena, ties="drop")
    data = win_list(arena, counts.items)
    assert len(data) == 350
    n, alpha = counts.n_items, 0.1
    ours = fit_bradley_terry(counts, method=method, prior=Prior("gamma", alpha), tol=1e-11).strengths
    mm = choix.mm_pairwise(n, data, alpha=alpha, tol=1e-13, max_iter=1_000_000)
    ilsr = choix.ilsr_pairwise(n, data, alpha=alpha / n, tol=1e-13, max_iter=10_000)
    assert np.abs(ours - mm).max() < 1e-6
    assert np.abs(ours - ilsr).max() < 1e-6
    assert ours.sum() == pytest.approx(0.0, abs=1e-10)


def test_ties_as_half_wins_match_choix_on_doubled_win_lists(arena):
    # choix cannot take half wins: give it every decisive battle twice and every tie as one
    # win each way. That log-likelihood is exactly 2x ours with ties as half wins, so doubling
    # the prior too (alpha 2a) leaves the same optimum.
    counts = counts_from_outcomes(arena, ties="half")
    index = {name: k for k, name in enumerate(counts.items)}
    data = []
    for a, b, w in zip(*(arena.column(c).to_pylist() for c in ("item_a", "item_b", "winner"))):
        if w == "tie":
            data += [(index[a], index[b]), (index[b], index[a])]
        else:
            data += [(index[w], index[b if w == a else a])] * 2
    alpha = 0.05
    ours = fit_bradley_terry(counts, prior=Prior("gamma", alpha), tol=1e-11).strengths
    theirs = choix.mm_pairwise(counts.n_items, data, alpha=2 * alpha, tol=1e-13, max_iter=1_000_000)
    assert np.abs(ours - theirs).max() < 1e-6


def test_plain_mle_matches_choix_ilsr_on_the_strongly_connected_core(arena):
    # Without a prior the MLE exists only where the win graph is strongly connected: keep the
    # largest strongly connected group of models and the decisive battles among them.
    counts = counts_from_outcomes(arena, ties="drop")
    data = np.array(win_list(arena, counts.items))
    graph = coo_matrix((np.ones(len(data)), (data[:, 0], data[:, 1])), shape=(counts.n_items,) * 2)
    _, label = connected_components(graph, directed=True, connection="strong")
    core = np.flatnonzero(label == np.bincount(label).argmax())
    assert core.size >= 10
    keep = np.isin(data[:, 0], core) & np.isin(data[:, 1], core)
    remap = {old: new for new, old in enumerate(core)}
    core_data = [(remap[w], remap[lo]) for w, lo in data[keep]]
    names = [counts.items[k] for k in core]
    sub = pa.table(
        {
            "item_a": [names[w] for w, _ in core_data],
            "item_b": [names[lo] for _, lo in core_data],
            "winner": [names[w] for w, _ in core_data],
        }
    )
    r = fit_bradley_terry(sub, prior="none", tol=1e-11)
    assert r.prior.startswith("none")
    theirs = choix.ilsr_pairwise(len(names), core_data, alpha=0.0, tol=1e-13, max_iter=10_000)
    ours = np.array([r.strength(name) for name in names])
    assert np.abs(ours - theirs).max() < 1e-6
