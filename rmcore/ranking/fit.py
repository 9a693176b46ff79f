"""``fit_bradley_terry``: outcomes -> strengths with standard errors, intervals and notes.

Identification: the likelihood only sees differences of log-strengths, so results are
reported either centred (``reference=None``: strengths sum to zero) or relative to a
reference item (its strength is 0, its standard error 0). Differences between items,
win probabilities and the ranking do not depend on that choice.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import scipy.linalg

from rmcore.ranking.bootstrap import bootstrap_intervals
from rmcore.ranking.counts import PairCounts, TieRule, counts_from_outcomes
from rmcore.ranking.davidson import davidson_covariance, fit_davidson
from rmcore.ranking.priors import Prior, resolve_prior
from rmcore.ranking.result import Z95, RankingResult
from rmcore.ranking.solvers import (
    DENSE_MAX_ITEMS,
    dense_information,
    information,
    log_likelihood,
    solve,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Fit:
    """A solver's answer in one shape, whichever likelihood (Bradley-Terry or Davidson) was fitted."""

    theta: np.ndarray
    iterations: int
    converged: bool
    max_gradient: float
    log_likelihood: float
    covariance: Callable[[], np.ndarray]
    tie_parameter: float | None = None


def fit_bradley_terry(
    outcomes: pa.Table | PairCounts,
    *,
    method: str = "newton",
    ties: TieRule | Literal["davidson"] = "half",
    prior: str | Prior = "auto",
    prior_strength: float | None = None,
    reference: str | None = None,
    max_iter: int | None = None,
    tol: float = 1e-9,
    learning_rate: float | None = None,
    standard_errors: bool = True,
    bootstrap: int = 0,
    seed: int = 0,
) -> RankingResult:
    """Maximum-likelihood (or, with a prior, MAP) Bradley-Terry log-strengths.

    ``outcomes``: a table (item_a, item_b, winner) or precomputed PairCounts.
    ``method``: "newton" (default, fastest), "mm" (Hunter) or "gradient" (the seed's update).
    ``ties``: "half" (a tie is half a win for each side), "drop", or "davidson" (ties
    modelled with a fitted tie parameter nu, Davidson 1970; Newton only).
    ``prior``: "auto" (none if the MLE exists, else 1 virtual game per item, noted in
    ``notes``), "none", "virtual", "gaussian", "gamma" or a Prior; ``prior_strength`` sets its weight.
    ``tol``: stop when every component of the score is <= tol (in wins).
    ``bootstrap``: with N > 0, 95% intervals are percentiles of N seeded bootstrap refits
    (standard errors stay those of the Fisher information); otherwise theta +- 1.96 se.
    """
    davidson = ties == "davidson"
    if isinstance(outcomes, PairCounts):
        counts = outcomes
    else:
        counts = counts_from_outcomes(outcomes, ties="half" if davidson else ties)
    if counts.n_pairs == 0:
        raise ValueError("no comparisons between two different items: nothing to rank")
    ref = None if reference is None else counts.index(reference)
    chosen, notes = resolve_prior(prior, prior_strength, counts)
    notes = data_notes(counts, davidson) + notes
    if davidson:
        if method != "newton" or bootstrap:
            raise ValueError("ties='davidson' is fitted by Newton with normal intervals; use method='newton'")
        fit = _fit_davidson(counts, chosen, max_iter, tol, notes)
    else:
        fit = _fit_bradley_terry(counts, chosen, method, max_iter, tol, learning_rate)
    if not fit.converged:
        msg = (
            f"{method} did not converge in {fit.iterations} iterations (largest score {fit.max_gradient:.3g})"
        )
        log.warning(msg)
        notes.append(f"warning: {msg}; raise max_iter or use method='newton'")
    theta = fit.theta - (fit.theta[ref] if ref is not None else fit.theta.mean())
    se = _std_errors(fit, counts.n_items, ref, standard_errors, notes)
    ci_low, ci_high = theta - Z95 * se, theta + Z95 * se
    interval_kind = "normal (inverse Fisher information)"
    if bootstrap > 0:
        ci_low, ci_high, left_out = bootstrap_intervals(
            counts, chosen, replicates=bootstrap, seed=seed, method=method, reference=ref, tol=tol
        )
        interval_kind = f"bootstrap percentile ({bootstrap} resamples of the comparisons, seed {seed})"
        if left_out:
            notes.append(
                f"bootstrap: {left_out} of {bootstrap} replicates had no finite MLE and were left out"
            )
    return RankingResult(
        items=counts.items,
        strengths=theta,
        std_errors=se,
        ci_low=ci_low,
        ci_high=ci_high,
        interval_kind=interval_kind,
        wins=counts.wins,
        losses=counts.losses,
        ties=counts.ties,
        method=method,
        tie_rule="davidson" if davidson else counts.tie_rule,
        tie_parameter=fit.tie_parameter,
        prior=chosen.describe(),
        normalisation="sum-to-zero" if ref is None else f"reference item {reference!r} = 0",
        iterations=fit.iterations,
        converged=fit.converged,
        log_likelihood=fit.log_likelihood,
        max_gradient=fit.max_gradient,
        n_comparisons=int(counts.wins.sum() + counts.ties.sum() // 2),
        notes=tuple(notes),
    )


def _fit_bradley_terry(
    counts: PairCounts,
    prior: Prior,
    method: str,
    max_iter: int | None,
    tol: float,
    learning_rate: float | None,
) -> _Fit:
    out = solve(counts, prior, method, max_iter, tol, learning_rate)
    return _Fit(
        out.theta,
        out.iterations,
        out.converged,
        out.max_gradient,
        log_likelihood(out.theta, counts),
        lambda: covariance(out.theta, counts, prior),
    )


def _fit_davidson(
    counts: PairCounts, prior: Prior, max_iter: int | None, tol: float, notes: list[str]
) -> _Fit:
    d = fit_davidson(counts, prior, 100 if max_iter is None else max_iter, tol)
    nu = d.tie_parameter
    notes.append(
        f"ties: Davidson model, nu = {nu:.4g} (two equal items tie with probability {nu / (2 + nu):.3f})"
    )
    return _Fit(
        d.theta,
        d.iterations,
        d.converged,
        d.max_gradient,
        d.log_likelihood,
        lambda: davidson_covariance(d, counts, prior),
        tie_parameter=nu,
    )


def _std_errors(fit: _Fit, n_items: int, ref: int | None, wanted: bool, notes: list[str]) -> np.ndarray:
    if not wanted:
        return np.full(n_items, np.nan)
    if n_items > DENSE_MAX_ITEMS:
        notes.append(f"standard errors skipped: more than {DENSE_MAX_ITEMS} items (a dense inverse)")
        return np.full(n_items, np.nan)
    return contrast_std_errors(fit.covariance(), ref)


def data_notes(counts: PairCounts, davidson: bool = False) -> list[str]:
    notes = []
    if counts.self_comparisons:
        notes.append(f"{counts.self_comparisons} comparisons of an item with itself ignored (no information)")
    n_ties = int(counts.ties.sum() // 2)
    if n_ties:
        how = "counted as half a win for each side" if counts.tie_rule == "half" else "dropped"
        how = "modelled (Davidson)" if davidson else how
        notes.append(f"{n_ties} ties {how}")
    return notes


def covariance(theta: np.ndarray, counts: PairCounts, prior: Prior) -> np.ndarray:
    """Inverse information. Without a prior it is singular along (1,...,1): use its pseudo-inverse."""
    anchored = prior.kind == "none"
    a = dense_information(information(theta, counts, prior), anchored)
    # Cholesky, then the inverse from the factor (LAPACK potri): about half the work of an LU inverse.
    factor, _ = scipy.linalg.cho_factor(a, lower=False, check_finite=False)
    inv, info = scipy.linalg.lapack.dpotri(factor, lower=False)
    if info != 0:
        raise np.linalg.LinAlgError(f"information matrix is not positive definite (potri info {info})")
    inv = np.triu(inv) + np.triu(inv, 1).T
    # With J/n added, inv = pinv(h) + J/n (h 1 = 0 on a connected graph): take J/n back out.
    return inv - 1.0 / theta.size if anchored else inv


def contrast_std_errors(cov: np.ndarray, ref: int | None) -> np.ndarray:
    """Standard errors of theta_i - mean(theta) (sum-to-zero) or of theta_i - theta_ref."""
    diag = np.diag(cov)
    if ref is None:
        var = diag - 2.0 * cov.mean(axis=1) + cov.mean()
    else:
        var = diag + cov[ref, ref] - 2.0 * cov[:, ref]
    return np.sqrt(np.clip(var, 0.0, None))
