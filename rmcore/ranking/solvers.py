"""Three solvers for the same (penalised) Bradley-Terry log-likelihood.

    l(theta) = sum over pairs {i,j} of  w_ij log sigma(theta_i - theta_j) + w_ji log sigma(theta_j - theta_i)
               + sum_i f(theta_i)                                   (f: the prior, see priors.py)

Its gradient (the score) for item i is  sum_j [w_ij - n_ij P(i beats j)] + f'(theta_i), and
minus its Hessian is the graph Laplacian with edge weights n_ij p (1 - p), plus the prior's
curvature on the diagonal. Every solver stops when the largest score component is <= tol
(in units of wins), so "converged" means the same thing whichever solver ran.

- ``newton``: damped Newton (backtracking line search). Quadratic convergence, a handful of
  iterations; one n x n solve each. The default.
- ``mm``: Hunter's (2004) minorise-maximise update pi_i <- W_i / sum_j n_ij / (pi_i + pi_j),
  vectorised over pairs. Monotone, linear convergence. Not available with a Gaussian prior.
- ``gradient``: the seed's update theta_i <- theta_i + eta sum_j [y_ij - (y_ij + y_ji) P(i beats j)]
  with eta = 1 / (a bound on the curvature), so every step increases the likelihood.

Without a prior the likelihood only sees differences; iterates are kept centred (sum zero).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg
from scipy.special import expit, log_expit

from rmcore.ranking.counts import PairCounts
from rmcore.ranking.priors import Prior

log = logging.getLogger(__name__)

DENSE_MAX_ITEMS = 4000
METHODS = ("newton", "mm", "gradient")
DEFAULT_MAX_ITER = {"newton": 100, "mm": 100_000, "gradient": 1_000_000}


@dataclass(frozen=True)
class SolverOutput:
    theta: np.ndarray
    iterations: int
    converged: bool
    max_gradient: float


def log_likelihood(theta: np.ndarray, counts: PairCounts) -> float:
    """Log-likelihood of the pair counts (ties as configured in ``counts``), no prior."""
    d = theta[counts.i] - theta[counts.j]
    return float((counts.w_ij * log_expit(d) + counts.w_ji * log_expit(-d)).sum())


def objective(theta: np.ndarray, counts: PairCounts, prior: Prior) -> float:
    return log_likelihood(theta, counts) + prior.value(theta)


def score(theta: np.ndarray, counts: PairCounts, prior: Prior) -> np.ndarray:
    """Gradient of the penalised log-likelihood: wins minus expected wins, plus the prior's pull."""
    p = expit(theta[counts.i] - theta[counts.j])
    r = counts.w_ij - counts.n_ij * p
    n = counts.n_items
    return np.bincount(counts.i, r, n) - np.bincount(counts.j, r, n) + prior.gradient(theta)


def information(theta: np.ndarray, counts: PairCounts, prior: Prior) -> np.ndarray | scipy.sparse.csr_matrix:
    """Minus the Hessian: Laplacian of the weights n_ij p (1 - p), plus the prior's curvature."""
    p = expit(theta[counts.i] - theta[counts.j])
    v = counts.n_ij * p * (1.0 - p)
    n = counts.n_items
    diag = np.bincount(counts.i, v, n) + np.bincount(counts.j, v, n) + prior.curvature(theta)
    if n <= DENSE_MAX_ITEMS:
        h = np.zeros((n, n))
        h[counts.i, counts.j] = -v
        h[counts.j, counts.i] = -v
        h[np.arange(n), np.arange(n)] = diag
        return h
    rows = np.concatenate([counts.i, counts.j, np.arange(n)])
    cols = np.concatenate([counts.j, counts.i, np.arange(n)])
    return scipy.sparse.csr_matrix((np.concatenate([-v, -v, diag]), (rows, cols)), shape=(n, n))


def newton_direction(h: np.ndarray | scipy.sparse.csr_matrix, g: np.ndarray, anchored: bool) -> np.ndarray:
    """Solve h d = g. Without a prior h is singular along (1, ..., 1): fix the last item's step at 0."""
    k = g.size - 1 if anchored else g.size
    d = np.zeros_like(g)
    if k == 0:
        return d
    if scipy.sparse.issparse(h):
        d[:k] = scipy.sparse.linalg.spsolve(h[:k, :k].tocsc(), g[:k])
    else:
        d[:k] = scipy.linalg.solve(h[:k, :k], g[:k], assume_a="pos", check_finite=False)
    return d - d.mean() if anchored else d


def solve_newton(counts: PairCounts, prior: Prior, max_iter: int, tol: float) -> SolverOutput:
    theta = np.zeros(counts.n_items)
    anchored = prior.kind == "none"
    g = score(theta, counts, prior)
    it = 0
    while np.abs(g).max() > tol and it < max_iter:
        d = newton_direction(information(theta, counts, prior), g, anchored)
        f0 = objective(theta, counts, prior)
        slack = 1e-12 * max(1.0, abs(f0))  # round-off in f near the optimum must not stall the step
        step = 1.0
        while objective(theta + step * d, counts, prior) < f0 + 1e-4 * step * float(g @ d) - slack:
            step /= 2
            if step < 1e-12:
                log.warning("newton: line search failed at iteration %d; stopping", it)
                return SolverOutput(theta, it, False, float(np.abs(g).max()))
        theta = theta + step * d
        if anchored:
            theta -= theta.mean()
        g = score(theta, counts, prior)
        it += 1
    return SolverOutput(theta, it, bool(np.abs(g).max() <= tol), float(np.abs(g).max()))


def solve_mm(counts: PairCounts, prior: Prior, max_iter: int, tol: float) -> SolverOutput:
    if prior.kind == "gaussian":
        raise ValueError("method='mm' has no closed-form update under a Gaussian prior; use method='newton'")
    n, s = counts.n_items, prior.strength
    wins = counts.item_wins()
    n_ij = counts.n_ij
    pi = np.ones(n)
    for it in range(max_iter + 1):
        inv = n_ij / (pi[counts.i] + pi[counts.j])
        denom = np.bincount(counts.i, inv, n) + np.bincount(counts.j, inv, n)
        g = wins - pi * denom + prior.gradient(np.log(pi))
        if np.abs(g).max() <= tol or it == max_iter:
            break
        if prior.kind == "none":
            pi = wins / denom
            pi /= np.exp(np.log(pi).mean())  # keep the log-strengths centred
        elif prior.kind == "virtual":
            pi = (wins + s / 2) / (denom + s / (pi + 1.0))
        else:  # gamma: the MAP update of Caron & Doucet (2012), as in choix
            pi = (wins + s) / (denom + s)
    return SolverOutput(np.log(pi), it, bool(np.abs(g).max() <= tol), float(np.abs(g).max()))


def default_learning_rate(counts: PairCounts, prior: Prior) -> float:
    """1 / (an upper bound on the curvature): games per item / 2 bounds the Laplacian's top eigenvalue."""
    bound = counts.item_comparisons().max() / 2.0
    bound += {
        "none": 0.0,
        "virtual": prior.strength / 4,
        "gaussian": prior.strength,
        "gamma": prior.strength,
    }[prior.kind]
    return 1.0 / bound


def solve_gradient(
    counts: PairCounts, prior: Prior, max_iter: int, tol: float, learning_rate: float | None = None
) -> SolverOutput:
    eta = default_learning_rate(counts, prior) if learning_rate is None else learning_rate
    theta = np.zeros(counts.n_items)
    f = objective(theta, counts, prior)
    g = score(theta, counts, prior)
    it = 0
    while np.abs(g).max() > tol and it < max_iter:
        trial = theta + eta * g
        f_trial = objective(trial, counts, prior)
        if f_trial < f - 1e-12 * max(1.0, abs(f)):  # step too long (gamma prior, or a user's eta): halve
            eta /= 2
            continue
        theta, f = trial, f_trial
        if prior.kind == "none":
            theta -= theta.mean()
        g = score(theta, counts, prior)
        it += 1
    return SolverOutput(theta, it, bool(np.abs(g).max() <= tol), float(np.abs(g).max()))


def solve(
    counts: PairCounts,
    prior: Prior,
    method: str,
    max_iter: int | None,
    tol: float,
    learning_rate: float | None = None,
) -> SolverOutput:
    if method not in METHODS:
        raise ValueError(f"method={method!r}: use one of {', '.join(METHODS)}")
    limit = DEFAULT_MAX_ITER[method] if max_iter is None else max_iter
    if method == "newton":
        return solve_newton(counts, prior, limit, tol)
    if method == "mm":
        return solve_mm(counts, prior, limit, tol)
    return solve_gradient(counts, prior, limit, tol, learning_rate)
