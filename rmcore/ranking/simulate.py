"""Comparisons drawn from a Bradley-Terry model with known strengths (tests, benchmarks, demos)."""

from __future__ import annotations

import numpy as np
from scipy.special import expit


def simulate_comparisons(
    strengths: np.ndarray, n_comparisons: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniformly random pairs of distinct items; item_a wins with probability sigma(theta_a - theta_b).

    Returns ``(item_a, item_b, outcome)`` index arrays with outcome 0 (item_a won) or 1 (item_b won),
    the input of ``counts_from_indices``.
    """
    rng = np.random.default_rng(seed)
    n = len(strengths)
    a = rng.integers(0, n, n_comparisons)
    b = (a + rng.integers(1, n, n_comparisons)) % n  # never equal to a
    a_won = rng.random(n_comparisons) < expit(strengths[a] - strengths[b])
    return a, b, np.where(a_won, 0, 1).astype(np.int8)
