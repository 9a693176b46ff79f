"""Confidence intervals for accuracies measured on a finite set of pairs."""

from __future__ import annotations

import math

Z95 = 1.959963984540054  # two-sided 95% normal quantile


def wilson_interval(correct: float, n: int, *, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion correct/n (95% by default).

    Unlike the normal approximation it stays inside [0, 1] and is sane at 0 or n successes.
    """
    if n <= 0:
        raise ValueError(f"an interval needs at least one pair, got n={n}")
    if not 0 <= correct <= n:
        raise ValueError(f"correct={correct} is outside [0, n={n}]")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)
