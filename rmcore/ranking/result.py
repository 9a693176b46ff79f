"""What a Bradley-Terry fit returns: strengths, their uncertainty, the ranking, and how they were got."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from data_contracts.schemas import RANKING_LEADERBOARD, validate

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass(frozen=True)
class RankingResult:
    """Log-strengths ``theta`` (P(a beats b) = sigma(theta_a - theta_b)), normalised as ``normalisation`` says.

    ``std_errors`` come from the inverse Fisher information of the constrained problem
    (the posterior curvature when a prior was used); ``ci_low``/``ci_high`` are 95%
    intervals: normal (theta +- 1.96 se) or bootstrap percentiles (``interval_kind``).
    """

    items: tuple[str, ...]
    strengths: np.ndarray
    std_errors: np.ndarray
    ci_low: np.ndarray
    ci_high: np.ndarray
    wins: np.ndarray
    losses: np.ndarray
    ties: np.ndarray
    method: str
    tie_rule: str
    prior: str
    normalisation: str
    iterations: int
    converged: bool
    log_likelihood: float
    max_gradient: float
    n_comparisons: int
    interval_kind: str = "normal (inverse Fisher information)"
    tie_parameter: float | None = None
    """Davidson's nu when ties were modelled (``tie_rule == "davidson"``), else None."""
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ranking(self) -> list[str]:
        """Items from strongest to weakest (ties in strength broken by name)."""
        order = sorted(range(len(self.items)), key=lambda k: (-self.strengths[k], self.items[k]))
        return [self.items[k] for k in order]

    def strength(self, item: str) -> float:
        return float(self.strengths[self._index(item)])

    def predict_proba(self, a: str, b: str) -> float:
        """P(a beats b). Bradley-Terry: sigma(theta_a - theta_b) (a tie is half a win each way).
        Davidson: the probability that a wins outright, e^h / (e^h + e^-h + nu) with h = (theta_a - theta_b) / 2."""
        d = self.strengths[self._index(a)] - self.strengths[self._index(b)]
        if self.tie_parameter is None:
            return float(1.0 / (1.0 + math.exp(-d)))
        h = d / 2
        return float(math.exp(h) / (math.exp(h) + math.exp(-h) + self.tie_parameter))

    def predict_tie(self, a: str, b: str) -> float:
        """P(a and b tie): 0 unless ties were modelled (Davidson)."""
        if self.tie_parameter is None:
            return 0.0
        h = (self.strengths[self._index(a)] - self.strengths[self._index(b)]) / 2
        return float(self.tie_parameter / (math.exp(h) + math.exp(-h) + self.tie_parameter))

    def _index(self, item: str) -> int:
        try:
            return self.items.index(item)
        except ValueError:
            raise KeyError(
                f"item {item!r} was not in the outcomes; known: {', '.join(self.items[:8])}..."
            ) from None

    def to_table(self, top: int | None = None) -> pa.Table:
        """The leaderboard: one row per item, strongest first."""
        index = {name: k for k, name in enumerate(self.items)}
        order = [index[name] for name in self.ranking][:top]
        table = pa.table(
            {
                "rank": pa.array(range(1, len(order) + 1), pa.int64()),
                "item": pa.array([self.items[k] for k in order], pa.string()),
                "strength": pa.array(self.strengths[order], pa.float64()),
                "std_error": pa.array(self.std_errors[order], pa.float64()),
                "ci_low": pa.array(self.ci_low[order], pa.float64()),
                "ci_high": pa.array(self.ci_high[order], pa.float64()),
                "wins": pa.array(self.wins[order], pa.int64()),
                "losses": pa.array(self.losses[order], pa.int64()),
                "ties": pa.array(self.ties[order], pa.int64()),
            }
        )
        return validate(table, RANKING_LEADERBOARD, where="leaderboard")

    def to_dict(self, top: int | None = None) -> dict[str, Any]:
        """JSON-ready: settings, fit diagnostics, notes and the leaderboard rows."""
        rows = self.to_table(top).to_pylist()
        for row in rows:
            for key in ("strength", "std_error", "ci_low", "ci_high"):
                row[key] = None if not math.isfinite(row[key]) else row[key]
        return {
            "items": len(self.items),
            "comparisons": self.n_comparisons,
            "method": self.method,
            "ties": self.tie_rule,
            "tie_parameter": self.tie_parameter,
            "prior": self.prior,
            "normalisation": self.normalisation,
            "intervals": f"95% {self.interval_kind}",
            "iterations": self.iterations,
            "converged": self.converged,
            "log_likelihood": self.log_likelihood,
            "max_gradient": self.max_gradient,
            "notes": list(self.notes),
            "ranking": self.ranking[:top],
            "leaderboard": rows,
        }
