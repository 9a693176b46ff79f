"""Davidson's (1970) extension of Bradley-Terry for ties, fitted by damped Newton.

With pi = exp(theta) and a tie parameter nu = exp(lam) > 0, for a pair (i, j):

    P(i wins) = pi_i / Z,  P(j wins) = pi_j / Z,  P(tie) = nu sqrt(pi_i pi_j) / Z,
    Z = pi_i + pi_j + nu sqrt(pi_i pi_j).

Dividing through by sqrt(pi_i pi_j) with h = (theta_i - theta_j) / 2:
Z' = e^h + e^-h + e^lam, and a pair with a_ij wins of i, a_ji wins of j and t_ij ties adds

    (a_ij - a_ji) h + t_ij lam - n_ij log Z'

to the log-likelihood. log Z' is a log-sum-exp of linear functions of (theta, lam), so the
log-likelihood is concave in (theta, lam) jointly: Newton with a line search converges.
Ties are modelled rather than split in halves; at nu = 0 it is Bradley-Terry without ties.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse
import scipy.sparse.linalg

from rmcore.ranking.counts import PairCounts
from rmcore.ranking.priors import Prior

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DavidsonFit:
    theta: np.ndarray
    tie_parameter: float
    """nu: P(tie) between equal items is nu / (2 + nu)."""
    iterations: int
    converged: bool
    max_gradient: float
    log_likelihood: float


def _decisive(counts: PairCounts) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    if counts.tie_rule != "half":
        raise ValueError("Davidson ties need the tie counts: build PairCounts with ties='half'")
    half = 0.5 * counts.t_ij
    return counts.w_ij - half, counts.w_ji - half, counts.t_ij


def _terms(theta: np.ndarray, lam: float, counts: PairCounts):
    h = 0.5 * (theta[counts.i] - theta[counts.j])
    # Scale by the largest exponent for stability: log Z' = m + log(e^(h-m) + e^(-h-m) + e^(lam-m)).
    m = np.maximum(np.abs(h), lam)
    ep, em, el = np.exp(h - m), np.exp(-h - m), np.exp(lam - m)
    z = ep + em + el
    return h, m + np.log(z), ep / z, em / z, el / z


def davidson_log_likelihood(theta: np.ndarray, lam: float, counts: PairCounts) -> float:
    a_ij, a_ji, t = _decisive(counts)
    h, log_z, *_ = _terms(theta, lam, counts)
    return float((a_ij - a_ji) @ h + t.sum() * lam - counts.n_ij @ log_z)


def _gradient_and_information(theta: np.ndarray, lam: float, counts: PairCounts, prior: Prior):
    """Gradient over (theta, lam) and minus the Hessian as a sparse (n + 1) x (n + 1) matrix."""
    a_ij, a_ji, t = _decisive(counts)
    n, nij = counts.n_items, counts.n_ij
    _, _, p_i, p_j, p_t = _terms(theta, lam, counts)
    r_h = (a_ij - a_ji) - nij * (p_i - p_j)  # d loglik / dh per pair
    g = np.empty(n + 1)
    g[:n] = 0.5 * (np.bincount(counts.i, r_h, n) - np.bincount(counts.j, r_h, n)) + prior.gradient(theta)
    g[n] = t.sum() - nij @ p_t
    # Second derivatives of -n log Z' (covariance of the sufficient statistics (s_h, s_lam)):
    c_hh = nij * ((p_i + p_j) - (p_i - p_j) ** 2)  # n Var(s_h), s_h = +1/-1/0 for i-win/j-win/tie
    c_hl = -nij * (p_i - p_j) * p_t  # n Cov(s_h, s_lam)
    c_ll = nij * p_t * (1.0 - p_t)
    w = 0.25 * c_hh  # d theta_i = d h / 2 on both sides
    diag = np.bincount(counts.i, w, n) + np.bincount(counts.j, w, n) + prior.curvature(theta)
    cross = 0.5 * (np.bincount(counts.i, c_hl, n) - np.bincount(counts.j, c_hl, n))
    rows = np.concatenate([counts.i, counts.j, np.arange(n), np.full(n, n), np.arange(n), [n]])
    cols = np.concatenate([counts.j, counts.i, np.arange(n), np.arange(n), np.full(n, n), [n]])
    data = np.concatenate([-w, -w, diag, cross, cross, [c_ll.sum()]])
    return g, scipy.sparse.csr_matrix((data, (rows, cols)), shape=(n + 1, n + 1))


def _dense(info: scipy.sparse.csr_matrix, anchored: bool) -> np.ndarray:
    a = info.toarray()
    if anchored:  # lift the (1,...,1, 0) null direction, as in solvers.dense_information
        n = a.shape[0] - 1
        a[:n, :n] += 1.0 / n
    return a


def _direction(info: scipy.sparse.csr_matrix, g: np.ndarray, anchored: bool) -> np.ndarray:
    size = g.size
    if size <= 65:
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(_dense(info, anchored)), g)
    n = size - 1
    shift = 1.0 / n if anchored else 0.0

    def matvec(x: np.ndarray) -> np.ndarray:
        y = info @ x
        y[:n] += shift * x[:n].sum()
        return y

    op = scipy.sparse.linalg.LinearOperator((size, size), matvec=matvec, dtype=np.float64)
    inv_diag = 1.0 / (info.diagonal() + np.append(np.full(n, shift), 0.0))
    pre = scipy.sparse.linalg.LinearOperator((size, size), matvec=lambda x: inv_diag * x, dtype=np.float64)
    d, status = scipy.sparse.linalg.cg(op, g, rtol=1e-12, maxiter=10 * size, M=pre)
    return d if status == 0 else scipy.linalg.solve(_dense(info, anchored), g, assume_a="pos")


def fit_davidson(counts: PairCounts, prior: Prior, max_iter: int, tol: float) -> DavidsonFit:
    """Maximise the (penalised) Davidson log-likelihood over log-strengths and log nu."""
    a_ij, a_ji, t = _decisive(counts)
    if t.sum() == 0:
        raise ValueError("ties='davidson' needs at least one tie to estimate nu; use ties='half' or 'drop'")
    if (a_ij + a_ji).sum() == 0:
        raise ValueError("ties='davidson' needs at least one decisive result; every comparison was a tie")
    n, anchored = counts.n_items, prior.kind == "none"

    def objective(x: np.ndarray) -> float:
        return davidson_log_likelihood(x[:n], x[n], counts) + prior.value(x[:n])

    x = np.zeros(n + 1)
    x[n] = np.log(2 * t.sum() / (a_ij + a_ji).sum())  # nu where equal items tie at the observed rate
    f = objective(x)
    g, info = _gradient_and_information(x[:n], x[n], counts, prior)
    it = 0
    while np.abs(g).max() > tol and it < max_iter:
        d = _direction(info, g, anchored)
        slack, step = 1e-12 * max(1.0, abs(f)), 1.0
        while (f_new := objective(x + step * d)) < f + 1e-4 * step * float(g @ d) - slack and step >= 1e-12:
            step /= 2
        if step < 1e-12:
            log.warning("davidson: line search failed at iteration %d; stopping", it)
            break
        x, f = x + step * d, f_new
        if anchored:
            x[:n] -= x[:n].mean()
        g, info = _gradient_and_information(x[:n], x[n], counts, prior)
        it += 1
    gmax = float(np.abs(g).max())
    return DavidsonFit(
        x[:n], float(np.exp(x[n])), it, gmax <= tol, gmax, davidson_log_likelihood(x[:n], x[n], counts)
    )


def davidson_covariance(fit: DavidsonFit, counts: PairCounts, prior: Prior) -> np.ndarray:
    """Covariance of the log-strengths (theta block of the inverse information over theta and lam)."""
    anchored = prior.kind == "none"
    _, info = _gradient_and_information(fit.theta, np.log(fit.tie_parameter), counts, prior)
    inv = np.linalg.inv(_dense(info, anchored))
    n = counts.n_items
    cov = inv[:n, :n]
    return cov - 1.0 / n if anchored else cov
