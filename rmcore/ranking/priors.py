"""Priors on log-strengths: what keeps the fit finite when the data alone cannot.

The maximum-likelihood estimate exists (and is unique up to a common shift) exactly
when the directed "i beat j at least once" graph is strongly connected (Zermelo 1929,
Ford 1957; Hunter 2004, Assumption 1). An item that never lost would otherwise drift
to +infinity, one that never won to -infinity, and two components that never met
have no common scale. A prior adds a separable term ``f(theta_i)`` to each item's
log-likelihood:

- ``virtual`` (strength ``s``): ``s`` virtual comparisons of each item against a
  reference item of log-strength 0, counted as half a win and half a loss:
  ``f = s/2 log sigma(theta) + s/2 log sigma(-theta)``. Says "every item is as good as
  the reference until the data show otherwise", weighing as much as ``s`` games.
- ``gaussian`` (precision ``s``): ``f = -s theta^2 / 2`` (ridge; a N(0, 1/s) prior).
- ``gamma`` (``s`` = choix's ``alpha``): ``f = s (theta - exp(theta))``, a
  Gamma(s + 1, s) prior on ``exp(theta)``. This is the MAP that ``choix.mm_pairwise``
  with ``alpha=s`` computes; ``choix.ilsr_pairwise`` with ``alpha=a`` equals it with
  ``s = a * n_items``.
- ``none``: the plain MLE (an error if it does not exist).

``auto`` (the default of ``fit_bradley_terry``) uses ``none`` when the MLE exists and
``virtual`` with strength 1 otherwise, and says so in the result's notes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.special import expit, log_expit

from rmcore.ranking.counts import PairCounts

PriorKind = Literal["none", "virtual", "gaussian", "gamma"]
PRIOR_KINDS = ("none", "virtual", "gaussian", "gamma")
AUTO_PRIOR_STRENGTH = 1.0


@dataclass(frozen=True)
class Prior:
    kind: PriorKind = "none"
    strength: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in PRIOR_KINDS:
            raise ValueError(f"prior {self.kind!r}: use one of {', '.join(PRIOR_KINDS)} (or 'auto')")
        if self.kind != "none" and not self.strength > 0:
            raise ValueError(f"prior {self.kind!r} needs a strength > 0, got {self.strength}")

    def value(self, theta: np.ndarray) -> float:
        s = self.strength
        if self.kind == "virtual":
            return float(s / 2 * (log_expit(theta) + log_expit(-theta)).sum())
        if self.kind == "gaussian":
            return float(-s / 2 * (theta**2).sum())
        if self.kind == "gamma":
            return float(s * (theta - np.exp(theta)).sum())
        return 0.0

    def gradient(self, theta: np.ndarray) -> np.ndarray:
        s = self.strength
        if self.kind == "virtual":
            return s * (0.5 - expit(theta))
        if self.kind == "gaussian":
            return -s * theta
        if self.kind == "gamma":
            return s * (1.0 - np.exp(theta))
        return np.zeros_like(theta)

    def curvature(self, theta: np.ndarray) -> np.ndarray:
        """Minus the second derivative (>= 0): the prior's share of the information."""
        s = self.strength
        if self.kind == "virtual":
            p = expit(theta)
            return s * p * (1.0 - p)
        if self.kind == "gaussian":
            return np.full_like(theta, s)
        if self.kind == "gamma":
            return s * np.exp(theta)
        return np.zeros_like(theta)

    def describe(self) -> str:
        if self.kind == "none":
            return "none (plain maximum likelihood)"
        if self.kind == "virtual":
            return (
                f"virtual: each item plays {self.strength:g} virtual game(s) against a reference of"
                " strength 0, scored half a win and half a loss"
            )
        if self.kind == "gaussian":
            return f"gaussian: N(0, {1 / self.strength:g}) on each log-strength"
        return f"gamma: Gamma({self.strength:g} + 1, {self.strength:g}) on each exp(strength) (choix alpha)"


def mle_exists(counts: PairCounts) -> bool:
    """True when the directed win graph is strongly connected (one component)."""
    n = counts.n_items
    if n == 1:
        return True
    src = np.concatenate([counts.i[counts.w_ij > 0], counts.j[counts.w_ji > 0]])
    dst = np.concatenate([counts.j[counts.w_ij > 0], counts.i[counts.w_ji > 0]])
    graph = coo_matrix((np.ones(src.size), (src, dst)), shape=(n, n)).tocsr()
    n_comp, _ = connected_components(graph, directed=True, connection="strong")
    return n_comp == 1


def resolve_prior(prior: str | Prior, strength: float | None, counts: PairCounts) -> tuple[Prior, list[str]]:
    """Turn the user's ``prior`` choice into a Prior; return notes that say what was used and why."""
    if isinstance(prior, Prior):
        return prior, ([] if prior.kind == "none" else [f"prior: {prior.describe()}"])
    if prior == "auto":
        if mle_exists(counts):
            return Prior("none"), ["prior: none; the win graph is strongly connected, so the MLE exists"]
        chosen = Prior("virtual", AUTO_PRIOR_STRENGTH if strength is None else strength)
        note = (
            "prior: the plain MLE does not exist (some item never won, never lost, or the comparison graph is"
            f" not strongly connected), so a small prior was added: {chosen.describe()}"
        )
        return chosen, [note]
    if prior == "none":
        if not mle_exists(counts):
            raise ValueError(
                "the maximum-likelihood strengths do not exist: the win graph is not strongly connected (an item"
                " never won or never lost, or groups of items never met); use prior='auto' or 'virtual'"
            )
        return Prior("none"), ["prior: none (plain maximum likelihood)"]
    chosen = Prior(prior, AUTO_PRIOR_STRENGTH if strength is None else strength)  # type: ignore[arg-type]
    return chosen, [f"prior: {chosen.describe()}"]
