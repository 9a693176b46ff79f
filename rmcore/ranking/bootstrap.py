"""Bootstrap intervals: refit on comparisons resampled with replacement (nonparametric, seeded).

Each replicate draws as many comparisons as the data hold from the observed cells (per
pair: i won, j won, tie), refits with the same solver and prior, and normalises the same
way; the 2.5% and 97.5% percentiles per item are the interval. Under ``prior="none"`` a
replicate in which some item never wins or never loses has no finite MLE: it is left
out and counted, never silently replaced.
"""

from __future__ import annotations

import numpy as np

from rmcore.ranking.counts import PairCounts
from rmcore.ranking.priors import Prior, mle_exists
from rmcore.ranking.solvers import solve


def resample_counts(counts: PairCounts, rng: np.random.Generator) -> PairCounts:
    """One bootstrap replicate of the comparisons behind ``counts``."""
    half = 0.5 * counts.t_ij
    cells = np.concatenate([counts.w_ij - half, counts.w_ji - half, counts.t_ij])
    total = int(np.rint(cells.sum()))
    draw = rng.multinomial(total, cells / cells.sum()).astype(np.float64)
    p = counts.n_pairs
    won_i, won_j, tied = draw[:p], draw[p : 2 * p], draw[2 * p :]
    keep = (won_i + won_j + tied) > 0
    i, j = counts.i[keep], counts.j[keep]
    won_i, won_j, tied = won_i[keep], won_j[keep], tied[keep]
    n = counts.n_items
    return PairCounts(
        items=counts.items,
        i=i,
        j=j,
        w_ij=won_i + 0.5 * tied,
        w_ji=won_j + 0.5 * tied,
        t_ij=tied,
        wins=(np.bincount(i, won_i, n) + np.bincount(j, won_j, n)).astype(np.int64),
        losses=(np.bincount(i, won_j, n) + np.bincount(j, won_i, n)).astype(np.int64),
        ties=(np.bincount(i, tied, n) + np.bincount(j, tied, n)).astype(np.int64),
        tie_rule=counts.tie_rule,
    )


def bootstrap_intervals(
    counts: PairCounts,
    prior: Prior,
    *,
    replicates: int,
    seed: int,
    method: str = "newton",
    reference: int | None = None,
    tol: float = 1e-9,
) -> tuple[np.ndarray, np.ndarray, int]:
    """95% percentile intervals per item and the number of replicates left out (no finite MLE)."""
    rng = np.random.default_rng(seed)
    samples, left_out = [], 0
    for _ in range(replicates):
        rep = resample_counts(counts, rng)
        if prior.kind == "none" and not mle_exists(rep):
            left_out += 1
            continue
        theta = solve(rep, prior, method, None, tol).theta
        samples.append(theta - (theta[reference] if reference is not None else theta.mean()))
    if not samples:
        raise ValueError(f"no bootstrap replicate had a finite MLE ({left_out} tried); use prior='virtual'")
    stacked = np.stack(samples)
    return np.percentile(stacked, 2.5, axis=0), np.percentile(stacked, 97.5, axis=0), left_out
