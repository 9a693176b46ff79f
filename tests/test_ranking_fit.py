"""Bradley-Terry fitting: hand-worked cases, score equations, identification, recovery, priors."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from rmcore.ranking import (
    Prior,
    counts_from_indices,
    counts_from_outcomes,
    fit_bradley_terry,
    log_likelihood,
    mle_exists,
    score,
)
from rmcore.ranking.simulate import simulate_comparisons
from rmcore.ranking.solvers import solve

METHODS = ("newton", "mm", "gradient")


def outcomes(*rows: tuple[str, str, str]) -> pa.Table:
    a, b, w = zip(*rows)
    return pa.table({"item_a": list(a), "item_b": list(b), "winner": list(w)})


@pytest.mark.parametrize("method", METHODS)
def test_two_items_three_wins_to_one(method):
    # A beats B 3 times, B beats A once. The score equation for A is
    #   3 - 4 * sigma(d) = 0  =>  sigma(d) = 3/4  =>  d = theta_A - theta_B = ln(3/4 / (1/4)) = ln 3.
    # Sum-to-zero puts theta_A = ln(3)/2, theta_B = -ln(3)/2.
    # Information for d: n p (1 - p) = 4 * 3/4 * 1/4 = 3/4, so var(d) = 4/3; theta_A = d/2 has
    # var 1/3, i.e. standard error sqrt(1/3) = 0.57735.
    data = outcomes(("A", "B", "A"), ("A", "B", "A"), ("B", "A", "A"), ("A", "B", "B"))
    r = fit_bradley_terry(data, method=method)
    assert r.converged
    assert r.strength("A") - r.strength("B") == pytest.approx(math.log(3), abs=1e-8)
    assert r.strength("A") == pytest.approx(math.log(3) / 2, abs=1e-8)
    assert r.std_errors == pytest.approx([math.sqrt(1 / 3)] * 2, abs=1e-7)
    assert r.predict_proba("A", "B") == pytest.approx(0.75, abs=1e-8)
    assert r.ranking == ["A", "B"]
    assert (r.wins.tolist(), r.losses.tolist(), r.ties.tolist()) == ([3, 1], [1, 3], [0, 0])
    assert r.prior.startswith("none")


def test_tie_counts_as_half_a_win_each():
    # A beats B once and they tie twice: A's credit 1 + 2 * 0.5 = 2, B's 2 * 0.5 = 1,
    # so sigma(d) = 2/3 and d = ln 2. Dropping ties leaves 1-0: no finite MLE.
    data = outcomes(("A", "B", "A"), ("A", "B", "tie"), ("B", "A", "tie"))
    r = fit_bradley_terry(data)
    assert r.strength("A") - r.strength("B") == pytest.approx(math.log(2), abs=1e-9)
    assert r.ties.tolist() == [2, 2]
    assert "2 ties counted as half a win for each side" in r.notes
    counts = counts_from_outcomes(data, ties="drop")
    assert (counts.w_ij.tolist(), counts.w_ji.tolist()) == ([1.0], [0.0])
    with pytest.raises(ValueError, match="do not exist"):
        fit_bradley_terry(data, ties="drop", prior="none")


@pytest.mark.parametrize("method", METHODS)
def test_three_items_whose_frequencies_match_the_model_exactly(method):
    # Strengths pi = (4, 2, 1): P(A>B) = 4/6 = 2/3, P(B>C) = 2/3, P(A>C) = 4/5.
    # With A-B 2-1, B-C 2-1, A-C 4-1 every pair's residual w_ij - n_ij p_ij is 0, so
    # theta = ln(4, 2, 1) (minus its mean) solves the score equations exactly.
    rows = [("A", "B", "A")] * 2 + [("A", "B", "B")]
    rows += [("B", "C", "B")] * 2 + [("B", "C", "C")]
    rows += [("A", "C", "A")] * 4 + [("A", "C", "C")]
    r = fit_bradley_terry(outcomes(*rows), method=method)
    expected = np.log([4.0, 2.0, 1.0])
    assert r.items == ("A", "B", "C")
    assert r.strengths == pytest.approx(expected - expected.mean(), abs=1e-8)
    assert r.predict_proba("A", "C") == pytest.approx(0.8, abs=1e-8)


def test_three_items_on_a_path_decouple_per_edge():
    # Only A-B (3-1) and B-C (2-2) were played. Leaf A's score forces P(A>B) = 3/4, then B's
    # forces P(B>C) = 1/2: theta_A - theta_B = ln 3, theta_B = theta_C. Sum to zero:
    # 3 theta_B + ln 3 = 0, so theta = (2 ln3 / 3, -ln3 / 3, -ln3 / 3).
    rows = [("A", "B", "A")] * 3 + [("A", "B", "B")] + [("B", "C", "B")] * 2 + [("C", "B", "C")] * 2
    r = fit_bradley_terry(outcomes(*rows))
    ln3 = math.log(3)
    assert r.strengths == pytest.approx([2 * ln3 / 3, -ln3 / 3, -ln3 / 3], abs=1e-9)
    # Relative to C instead: A = ln 3, B = 0, C = 0 with standard error 0 for C.
    rc = fit_bradley_terry(outcomes(*rows), reference="C")
    assert rc.strengths == pytest.approx([ln3, 0.0, 0.0], abs=1e-9)
    assert rc.std_errors[2] == 0.0
    # var(theta_A - theta_C) = var(AB edge) + var(BC edge) = 1/(4*3/16) + 1/(4*1/4) = 4/3 + 1.
    assert rc.std_errors[0] == pytest.approx(math.sqrt(4 / 3 + 1), abs=1e-7)


def simulated(n_items: int, n_comparisons: int, seed: int):
    truth = np.random.default_rng(1000 + seed).normal(0.0, 1.0, n_items)
    truth -= truth.mean()
    a, b, outcome = simulate_comparisons(truth, n_comparisons, seed=seed)
    items = tuple(f"m{k:03d}" for k in range(n_items))
    return truth, counts_from_indices(a, b, outcome, items)


def test_mle_satisfies_the_score_equations_and_maximises_the_likelihood():
    truth, counts = simulated(40, 4000, seed=3)
    assert mle_exists(counts)
    r = fit_bradley_terry(counts, prior="none")
    g = score(r.strengths, counts, Prior("none"))
    assert np.abs(g).max() < 1e-8
    assert r.strengths.sum() == pytest.approx(0.0, abs=1e-10)
    best = log_likelihood(r.strengths, counts)
    rng = np.random.default_rng(0)
    for _ in range(5):  # any nearby point is worse
        assert log_likelihood(r.strengths + rng.normal(0, 1e-3, truth.size), counts) < best


@pytest.mark.parametrize("method", METHODS)
def test_penalised_score_is_zero_under_each_prior(method):
    _, counts = simulated(15, 300, seed=4)
    for prior in (Prior("virtual", 1.0), Prior("gaussian", 0.5), Prior("gamma", 0.2)):
        if method == "mm" and prior.kind == "gaussian":
            continue
        out = solve(counts, prior, method, None, 1e-10)
        # A prior fixes the level too, so the score is checked at the solver's un-normalised optimum.
        assert out.converged, prior
        assert np.abs(score(out.theta, counts, prior)).max() < 1e-10, prior


def test_reference_item_changes_only_the_offset():
    _, counts = simulated(25, 1500, seed=5)
    centred = fit_bradley_terry(counts)
    for ref in ("m000", "m013"):
        r = fit_bradley_terry(counts, reference=ref)
        assert r.strength(ref) == 0.0
        assert r.strengths - centred.strengths == pytest.approx(
            np.full(25, r.strengths[0] - centred.strengths[0]), abs=1e-10
        )
        assert r.ranking == centred.ranking
        assert r.predict_proba("m003", "m020") == pytest.approx(
            centred.predict_proba("m003", "m020"), abs=1e-12
        )
        assert r.std_errors[r.items.index(ref)] == 0.0
    with pytest.raises(KeyError, match="unknown item 'nobody'"):
        fit_bradley_terry(counts, reference="nobody")


def test_recovery_error_shrinks_as_data_grows():
    errors, mean_se = [], []
    for n_comparisons in (2_000, 20_000, 200_000):
        truth, counts = simulated(20, n_comparisons, seed=7)
        r = fit_bradley_terry(counts, prior="none")
        errors.append(float(np.sqrt(np.mean((r.strengths - truth) ** 2))))
        mean_se.append(float(r.std_errors.mean()))
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < 0.03
    # Standard errors shrink like 1/sqrt(n) (x10 data -> /sqrt(10)) and match the actual error.
    assert mean_se[0] / mean_se[2] == pytest.approx(10.0, rel=0.05)
    for err, se in zip(errors, mean_se):
        assert 0.5 * se < err < 2.0 * se


def test_all_methods_reach_the_same_optimum():
    _, counts = simulated(30, 2000, seed=9)
    fits = {m: fit_bradley_terry(counts, method=m, prior="virtual") for m in METHODS}
    assert all(f.converged for f in fits.values())
    assert fits["mm"].strengths == pytest.approx(fits["newton"].strengths, abs=1e-8)
    assert fits["gradient"].strengths == pytest.approx(fits["newton"].strengths, abs=1e-8)
    assert fits["newton"].iterations < 20 < fits["mm"].iterations


def test_auto_prior_is_used_and_said_when_an_item_never_loses():
    # C beat A and B and never lost: its plain MLE is +infinity.
    data = outcomes(("A", "B", "A"), ("B", "A", "B"), ("C", "A", "C"), ("B", "C", "C"))
    assert not mle_exists(counts_from_outcomes(data))
    r = fit_bradley_terry(data)
    assert r.ranking[0] == "C" and np.isfinite(r.strengths).all()
    assert any("MLE does not exist" in n and "virtual" in n for n in r.notes)
    assert r.prior.startswith("virtual")
    with pytest.raises(ValueError, match="not strongly connected"):
        fit_bradley_terry(data, prior="none")
    with pytest.raises(ValueError, match="use method='newton'"):
        fit_bradley_terry(data, method="mm", prior="gaussian")


def test_disconnected_groups_get_a_finite_fit():
    # {A, B} and {C, D} never met: without a prior there is no common scale.
    data = outcomes(("A", "B", "A"), ("A", "B", "B"), ("C", "D", "C"), ("C", "D", "C"), ("D", "C", "D"))
    r = fit_bradley_terry(data, prior="auto")
    assert np.isfinite(r.strengths).all() and np.isfinite(r.std_errors).all()
    assert r.strength("A") == pytest.approx(r.strength("B"), abs=1e-9)  # 1-1: equal
    assert r.strength("C") > r.strength("D")


def test_virtual_prior_two_items_by_hand():
    # A beat B once. Prior: each plays 1 virtual game vs a reference at 0 scored half-half.
    # By symmetry theta_B = -theta_A = -t; A's penalised score: (1 - sigma(2t)) + (1/2 - sigma(t)) = 0.
    r = fit_bradley_terry(outcomes(("A", "B", "A")), prior="virtual", prior_strength=1.0)
    t = r.strength("A")
    assert r.strength("B") == pytest.approx(-t, abs=1e-12)
    sig = lambda x: 1 / (1 + math.exp(-x))
    assert (1 - sig(2 * t)) + (0.5 - sig(t)) == pytest.approx(0.0, abs=1e-10)


def test_bad_rows_are_named():
    with pytest.raises(ValueError, match=r"row 1: winner 'C' is neither item_a 'A', item_b 'B'"):
        counts_from_outcomes(outcomes(("A", "B", "A"), ("A", "B", "C")))
    with pytest.raises(ValueError, match="named 'tie'"):
        counts_from_outcomes(outcomes(("tie", "B", "B")))
    with pytest.raises(ValueError, match="nothing to rank"):
        fit_bradley_terry(outcomes(("A", "A", "A")))
    with pytest.raises(ValueError, match="method='fast'"):
        fit_bradley_terry(outcomes(("A", "B", "A"), ("B", "A", "B")), method="fast")


def test_self_comparisons_are_ignored_and_noted():
    data = outcomes(("A", "B", "A"), ("B", "A", "B"), ("A", "A", "A"))
    r = fit_bradley_terry(data)
    assert r.strengths == pytest.approx([0.0, 0.0], abs=1e-12)
    assert "1 comparisons of an item with itself ignored (no information)" in r.notes
    assert r.n_comparisons == 2


def test_to_table_and_to_dict_list_items_strongest_first():
    rows = [("A", "B", "A")] * 2 + [("A", "B", "B")] + [("B", "C", "B")] * 2 + [("B", "C", "C")]
    rows += [("A", "C", "A")] * 4 + [("A", "C", "C")]
    r = fit_bradley_terry(outcomes(*rows))
    table = r.to_table()
    assert table.column("item").to_pylist() == ["A", "B", "C"]
    assert table.column("rank").to_pylist() == [1, 2, 3]
    assert table.column("wins").to_pylist() == [6, 3, 2]
    assert table.column("losses").to_pylist() == [2, 3, 6]
    d = r.to_dict(top=2)
    assert d["ranking"] == ["A", "B"] and len(d["leaderboard"]) == 2
    assert d["comparisons"] == 11 and d["converged"] is True
    lo, hi = table.column("ci_low").to_pylist()[0], table.column("ci_high").to_pylist()[0]
    assert lo < r.strength("A") < hi
    assert hi - lo == pytest.approx(2 * 1.959963984540054 * r.std_errors[0], abs=1e-12)


def test_conjugate_gradient_path_agrees_with_the_dense_solve(monkeypatch):
    # 120 items > DENSE_SOLVE_ITEMS: Newton steps come from preconditioned CG on the sparse Laplacian.
    from rmcore.ranking import solvers

    truth, counts = simulated(120, 4_000, seed=11)
    assert counts.n_items > solvers.DENSE_SOLVE_ITEMS
    for prior in ("none", "virtual"):
        sparse_fit = fit_bradley_terry(counts, prior=prior, standard_errors=False)
        monkeypatch.setattr(solvers, "DENSE_SOLVE_ITEMS", 10_000)
        dense_fit = fit_bradley_terry(counts, prior=prior, standard_errors=False)
        monkeypatch.undo()
        assert sparse_fit.converged and sparse_fit.iterations < 15
        assert sparse_fit.strengths == pytest.approx(dense_fit.strengths, abs=1e-9)
    assert float(np.sqrt(np.mean((sparse_fit.strengths - truth) ** 2))) < 0.5


def test_bootstrap_intervals_are_seeded_and_match_the_fisher_width():
    _, counts = simulated(20, 20_000, seed=12)
    r = fit_bradley_terry(counts, prior="none", bootstrap=100, seed=3)
    again = fit_bradley_terry(counts, prior="none", bootstrap=100, seed=3)
    other = fit_bradley_terry(counts, prior="none", bootstrap=5, seed=4)
    assert r.ci_low.tolist() == again.ci_low.tolist()
    assert r.ci_low.tolist() != other.ci_low.tolist()
    assert r.interval_kind == "bootstrap percentile (100 resamples of the comparisons, seed 3)"
    assert (r.ci_low < r.strengths).all() and (r.strengths < r.ci_high).all()
    # With this much data the bootstrap width agrees with 2 * 1.96 * se (Fisher) to ~15%.
    ratio = (r.ci_high - r.ci_low) / (2 * 1.959963984540054 * r.std_errors)
    assert 0.8 < ratio.mean() < 1.2


def test_bootstrap_resample_keeps_the_number_of_comparisons():
    from rmcore.ranking.bootstrap import resample_counts

    data = outcomes(("A", "B", "A"), ("A", "B", "tie"), ("B", "C", "C"), ("C", "A", "tie"), ("C", "B", "B"))
    counts = counts_from_outcomes(data)
    rep = resample_counts(counts, np.random.default_rng(0))
    assert rep.n_comparisons == counts.n_comparisons == 5.0
    assert int(rep.wins.sum() + rep.ties.sum() // 2) == 5
    assert set(zip(rep.i.tolist(), rep.j.tolist())) <= set(zip(counts.i.tolist(), counts.j.tolist()))


def test_bootstrap_replicates_without_an_mle_are_counted_not_hidden():
    # A beat B 2-1. Resampling the 3 games often gives 3-0 or 0-3, which has no finite MLE.
    data = outcomes(("A", "B", "A"), ("A", "B", "A"), ("A", "B", "B"))
    r = fit_bradley_terry(data, prior="none", bootstrap=50, seed=0)
    note = next(n for n in r.notes if n.startswith("bootstrap:"))
    left_out = int(note.split()[1])
    # P(all three resampled games go one way) = (2/3)^3 + (1/3)^3 = 1/3: about 17 of 50.
    assert 5 < left_out < 30
    assert note == f"bootstrap: {left_out} of 50 replicates had no finite MLE and were left out"


def test_swapping_sides_and_doubling_the_data():
    _, counts = simulated(12, 600, seed=13)
    base = fit_bradley_terry(counts, prior="none")
    names = counts.items
    rows = []
    for i, j, wij, wji in zip(counts.i, counts.j, counts.w_ij, counts.w_ji):
        rows += [(names[i], names[j], names[i])] * int(wij) + [(names[i], names[j], names[j])] * int(wji)
    table = outcomes(*rows)
    swapped = table.select(["item_b", "item_a", "winner"]).rename_columns(["item_a", "item_b", "winner"])
    assert fit_bradley_terry(swapped, prior="none").strengths == pytest.approx(base.strengths, abs=1e-10)
    # Every game twice: same MLE (the log-likelihood doubles), standard errors / sqrt(2).
    doubled = fit_bradley_terry(pa.concat_tables([table, table]), prior="none")
    assert doubled.strengths == pytest.approx(base.strengths, abs=1e-10)
    assert doubled.std_errors == pytest.approx(base.std_errors / math.sqrt(2), rel=1e-8)
