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
"""Above this many items standard errors (a dense n x n inverse) are skipped."""
DENSE_SOLVE_ITEMS = 64
METHODS = ("newton", "mm", "gradient")
DEFAULT_MAX_ITER = {"newton": 100, "mm": 100_000, "gradient": 1_000_000}


@dataclass(frozen=True)
class SolverOutput:
    theta: np.ndarray
    iterations: int
    converged: bool
    max_gradient: float


def log_likelihood(theta: np.ndarray, counts: PairCounts) -> float:
    """Log-likelihood of the pair counts (ties as configured in ``counts``), no prior.

    Uses w_ij log s(d) + w_ji log s(-d) = n_ij log s(d) - w_ji d (one log-sigmoid per pair).
    """
    d = theta[counts.i] - theta[counts.j]
    return float(counts.n_ij @ log_expit(d) - counts.w_ji @ d)


def objective(theta: np.ndarray, counts: PairCounts, prior: Prior) -> float:
    return log_likelihood(theta, counts) + prior.value(theta)


def score(theta: np.ndarray, counts: PairCounts, prior: Prior) -> np.ndarray:
    """Gradient of the penalised log-likelihood: wins minus expected wins, plus the prior's pull."""
    p = expit(theta[counts.i] - theta[counts.j])
    r = counts.w_ij - counts.n_ij * p
    n = counts.n_items
    return np.bincount(counts.i, r, n) - np.bincount(counts.j, r, n) + prior.gradient(theta)


class LaplacianPattern:
    """The sparsity pattern of the information matrix, sorted once; each Newton step only fills values."""

    def __init__(self, counts: PairCounts) -> None:
        n = counts.n_items
        rows = np.concatenate([counts.i, counts.j, np.arange(n)])
        cols = np.concatenate([counts.j, counts.i, np.arange(n)])
        self.order = np.lexsort((cols, rows))
        self.indices = cols[self.order].astype(np.int32 if n < 2**31 else np.int64)
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(
            self.indices.dtype
        )
        self.n = n

    def matrix(self, off_diagonal: np.ndarray, diagonal: np.ndarray) -> scipy.sparse.csr_matrix:
        data = np.concatenate([off_diagonal, off_diagonal, diagonal])[self.order]
        return scipy.sparse.csr_matrix((data, self.indices, self.indptr), shape=(self.n, self.n))


def information(
    theta: np.ndarray, counts: PairCounts, prior: Prior, pattern: LaplacianPattern | None = None
) -> scipy.sparse.csr_matrix:
    """Minus the Hessian (sparse): Laplacian of the weights n_ij p (1 - p), plus the prior's curvature."""
    p = expit(theta[counts.i] - theta[counts.j])
    v = counts.n_ij * p * (1.0 - p)
    n = counts.n_items
    diag = np.bincount(counts.i, v, n) + np.bincount(counts.j, v, n) + prior.curvature(theta)
    return (pattern or LaplacianPattern(counts)).matrix(-v, diag)


def dense_information(h: scipy.sparse.csr_matrix, anchored: bool) -> np.ndarray:
    """h as a positive definite dense matrix. Without a prior h 1 = 0; adding J/n (all entries 1/n)
    lifts that one zero eigenvalue to 1 and leaves every direction orthogonal to 1 unchanged."""
    a = h.toarray()
    return a + 1.0 / a.shape[0] if anchored else a


def newton_direction(h: scipy.sparse.csr_matrix, g: np.ndarray, anchored: bool) -> np.ndarray:
    """Solve h d = g (with sum(d) = 0 when ``anchored``: no prior, g sums to zero).

    Few items: dense Cholesky. Many: conjugate gradients on the sparse Laplacian with a
    Jacobi preconditioner, O(pairs) per step and no n^3 factorisation.
    """
    n = g.size
    if n <= DENSE_SOLVE_ITEMS:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(dense_information(h, anchored)), g)
    shift = 1.0 / n if anchored else 0.0
    op = scipy.sparse.linalg.LinearOperator(
        (n, n), matvec=lambda x: h @ x + shift * x.sum(), dtype=np.float64
    )
    inv_diag = 1.0 / (h.diagonal() + shift)
    pre = scipy.sparse.linalg.LinearOperator((n, n), matvec=lambda x: inv_diag * x, dtype=np.float64)
    d, info = scipy.sparse.linalg.cg(op, g, rtol=1e-12, maxiter=10 * n, M=pre)
    if info != 0:  # badly conditioned graph: fall back to a direct solve
        d = scipy.linalg.solve(dense_information(h, anchored), g, assume_a="pos")
    return d


def solve_newton(counts: PairCounts, prior: Prior, max_iter: int, tol: float) -> SolverOutput:
    theta = np.zeros(counts.n_items)
    anchored = prior.kind == "none"
    pattern = LaplacianPattern(counts)
    g = score(theta, counts, prior)
    f = objective(theta, counts, prior)
    it = 0
    while np.abs(g).max() > tol and it < max_iter:
        d = newton_direction(information(theta, counts, prior, pattern), g, anchored)
        slack = 1e-12 * max(1.0, abs(f))  # round-off in f near the optimum must not stall the step
        step = 1.0
        while (f_new := objective(theta + step * d, counts, prior)) < f + 1e-4 * step * float(g @ d) - slack:
            step /= 2
            if step < 1e-12:
                log.warning("newton: line search failed at iteration %d; stopping", it)
                return SolverOutput(theta, it, False, float(np.abs(g).max()))
        theta, f = theta + step * d, f_new
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
