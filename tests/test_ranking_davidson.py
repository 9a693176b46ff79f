"""Davidson ties: hand-worked two-item fit, derivatives against finite differences, recovery of nu."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from rmcore.ranking import Prior, counts_from_indices, counts_from_outcomes, fit_bradley_terry
from rmcore.ranking.davidson import _gradient_and_information, davidson_log_likelihood


def outcomes(*rows: tuple[str, str, str]) -> pa.Table:
    a, b, w = zip(*rows)
    return pa.table({"item_a": list(a), "item_b": list(b), "winner": list(w)})


def test_two_items_fit_the_observed_frequencies_exactly():
    # One pair, three outcomes, two free parameters (h, nu): the MLE reproduces the observed
    # frequencies. A wins a = 4, B wins b = 1, t = 2 ties (n = 7):
    #   e^h / Z = 4/7 and e^-h / Z = 1/7  =>  e^(2h) = 4  =>  theta_A - theta_B = 2h = ln 4;
    #   nu / Z = 2/7 with Z = 7 e^h / 4 = 7/2  =>  nu = 1.
    rows = [("A", "B", "A")] * 4 + [("A", "B", "B")] + [("B", "A", "tie")] * 2
    r = fit_bradley_terry(outcomes(*rows), ties="davidson")
    assert r.converged and r.tie_rule == "davidson"
    assert r.strength("A") - r.strength("B") == pytest.approx(math.log(4), abs=1e-9)
    assert r.tie_parameter == pytest.approx(1.0, abs=1e-9)
    assert r.predict_proba("A", "B") == pytest.approx(4 / 7, abs=1e-9)
    assert r.predict_proba("B", "A") == pytest.approx(1 / 7, abs=1e-9)
    assert r.predict_tie("A", "B") == pytest.approx(2 / 7, abs=1e-9)
    assert "2 ties modelled (Davidson)" in r.notes
    assert r.to_dict()["tie_parameter"] == pytest.approx(1.0, abs=1e-9)


def test_gradient_and_information_match_finite_differences():
    rows = [("A", "B", "A"), ("A", "B", "tie"), ("B", "C", "B"), ("C", "B", "C"), ("C", "A", "tie")]
    rows += [("A", "C", "A"), ("D", "A", "D"), ("D", "B", "tie"), ("C", "D", "C")]
    counts = counts_from_outcomes(outcomes(*rows))
    x = np.array([0.3, -0.2, 0.1, -0.4, -0.5])  # theta_A..theta_D, lam
    g, info = _gradient_and_information(x[:4], x[4], counts, Prior("none"))

    def f(v):
        return davidson_log_likelihood(v[:4], v[4], counts)

    eps = 1e-5
    eye = np.eye(5)
    num_g = np.array([(f(x + eps * e) - f(x - eps * e)) / (2 * eps) for e in eye])
    num_h = np.array(
        [
            [
                (f(x + eps * (a + b)) - f(x + eps * (a - b)) - f(x - eps * (a - b)) + f(x - eps * (a + b)))
                / (4 * eps**2)
                for b in eye
            ]
            for a in eye
        ]
    )
    assert g == pytest.approx(num_g, abs=1e-7)
    assert info.toarray() == pytest.approx(-num_h, abs=1e-4)


def test_recovers_strengths_and_tie_parameter_from_simulated_games():
    rng = np.random.default_rng(5)
    n, games, nu = 8, 40_000, 0.8
    truth = rng.normal(0, 0.7, n)
    truth -= truth.mean()
    a = rng.integers(0, n, games)
    b = (a + rng.integers(1, n, games)) % n
    h = (truth[a] - truth[b]) / 2
    z = np.exp(h) + np.exp(-h) + nu
    u = rng.random(games)
    outcome = np.where(u < np.exp(h) / z, 0, np.where(u < (np.exp(h) + np.exp(-h)) / z, 1, 2))
    counts = counts_from_indices(a, b, outcome, tuple("ABCDEFGH"))
    r = fit_bradley_terry(counts, ties="davidson", prior="none")
    assert r.converged
    assert r.tie_parameter == pytest.approx(nu, rel=0.05)
    assert np.abs(r.strengths - truth).max() < 4 * r.std_errors.max()
    assert np.abs(r.strengths - truth).max() < 0.1


def test_davidson_needs_ties_and_newton():
    with pytest.raises(ValueError, match="needs at least one tie"):
        fit_bradley_terry(outcomes(("A", "B", "A"), ("B", "A", "B")), ties="davidson")
    with pytest.raises(ValueError, match="use method='newton'"):
        fit_bradley_terry(outcomes(("A", "B", "A"), ("B", "A", "tie")), ties="davidson", method="mm")
