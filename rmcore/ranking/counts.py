"""Pairwise outcomes -> win counts per unordered pair of items: what every solver reads.

A Bradley-Terry likelihood depends on the data only through, for each unordered pair
{i, j}, how often i beat j and how often j beat i. Aggregating 1,000,000 comparisons
into those counts once (vectorised) makes each solver iteration cost O(pairs), not
O(comparisons).

Ties (``ties="half"``, the default) count as half a win for each side: a tie between
i and j adds 0.5 to ``w_ij`` and 0.5 to ``w_ji``. This is the usual convention (Elo,
LMSYS's Bradley-Terry leaderboard). ``ties="drop"`` ignores ties instead. A comparison
of an item with itself carries no information about strengths and is ignored (counted
in ``self_comparisons`` so a report can say so).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_contracts.schemas import RANKING_OUTCOMES, validate

TieRule = Literal["half", "drop"]
TIE = "tie"


@dataclass(frozen=True)
class PairCounts:
    """Win counts per unordered item pair (``i < j``), plus per-item tallies for reports."""

    items: tuple[str, ...]
    i: np.ndarray
    """int64 index of the first item of each pair (always < ``j``)."""
    j: np.ndarray
    w_ij: np.ndarray
    """float64: wins of ``i`` over ``j`` (a tie adds 0.5 under ``ties="half"``)."""
    w_ji: np.ndarray
    t_ij: np.ndarray
    """float64: ties between ``i`` and ``j`` that the likelihood uses (0 under ``ties="drop"``)."""
    wins: np.ndarray
    """Per item: decisive wins (ties not included)."""
    losses: np.ndarray
    ties: np.ndarray
    """Per item: ties it took part in (counted whatever the tie rule)."""
    tie_rule: TieRule = "half"
    self_comparisons: int = 0

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_pairs(self) -> int:
        return int(self.i.size)

    @property
    def n_ij(self) -> np.ndarray:
        """Comparisons per pair (wins both ways, ties included under ``half``)."""
        return self.w_ij + self.w_ji

    @property
    def n_comparisons(self) -> float:
        return float(self.n_ij.sum())

    def item_wins(self) -> np.ndarray:
        """Per item: wins used by the likelihood (decisive wins + half of each tie)."""
        n = self.n_items
        return np.bincount(self.i, self.w_ij, n) + np.bincount(self.j, self.w_ji, n)

    def item_comparisons(self) -> np.ndarray:
        n = self.n_items
        return np.bincount(self.i, self.n_ij, n) + np.bincount(self.j, self.n_ij, n)

    def index(self, item: str) -> int:
        try:
            return self.items.index(item)
        except ValueError:
            raise KeyError(f"unknown item {item!r}; known items: {', '.join(self.items[:10])}...") from None


def counts_from_indices(
    item_a: np.ndarray,
    item_b: np.ndarray,
    outcome: np.ndarray,
    items: tuple[str, ...],
    *,
    ties: TieRule = "half",
) -> PairCounts:
    """Aggregate comparisons given as item indices.

    ``outcome`` is 0 where ``item_a`` won, 1 where ``item_b`` won, 2 for a tie.
    """
    if ties not in ("half", "drop"):
        raise ValueError(f"ties={ties!r}: use 'half' (a tie is half a win each) or 'drop'")
    a = np.asarray(item_a, dtype=np.int64)
    b = np.asarray(item_b, dtype=np.int64)
    out = np.asarray(outcome, dtype=np.int8)
    n = len(items)
    same = a == b
    n_self = int(same.sum())
    if n_self:
        a, b, out = a[~same], b[~same], out[~same]
    a_won, b_won, tied = out == 0, out == 1, out == 2
    wins = np.bincount(a[a_won], minlength=n) + np.bincount(b[b_won], minlength=n)
    losses = np.bincount(b[a_won], minlength=n) + np.bincount(a[b_won], minlength=n)
    tie_count = np.bincount(a[tied], minlength=n) + np.bincount(b[tied], minlength=n)
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    # Credit of the lower-indexed item in each comparison: 1 win, 0 loss, 0.5 tie.
    lo_is_a = lo == a
    credit_lo = np.where(a_won, lo_is_a, np.where(b_won, ~lo_is_a, 0.5)).astype(np.float64)
    weight = np.ones(a.size) if ties == "half" else (~tied).astype(np.float64)
    keys, (w_lo, w_hi, t_lo_hi) = _sum_by_pair(
        lo * n + hi, (credit_lo * weight, (1.0 - credit_lo) * weight, tied * weight), n
    )
    keep = (w_lo + w_hi) > 0  # pairs met only in dropped ties
    keys = keys[keep]
    return PairCounts(
        items=tuple(items),
        i=keys // n,
        j=keys % n,
        w_ij=w_lo[keep],
        w_ji=w_hi[keep],
        t_ij=t_lo_hi[keep],
        wins=wins,
        losses=losses,
        ties=tie_count,
        tie_rule=ties,
        self_comparisons=n_self,
    )


def _sum_by_pair(
    key: np.ndarray, values: tuple[np.ndarray, ...], n: int
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Sum each array in ``values`` per distinct pair key; return (keys seen ascending, the sums).

    With few items a dense bincount over all n*n keys is much faster than sorting the keys.
    """
    if n * n <= max(4 * key.size, 1 << 20):
        keys = np.flatnonzero(np.bincount(key, minlength=n * n))
        return keys, [np.bincount(key, v, n * n)[keys] for v in values]
    keys, inverse = np.unique(key, return_inverse=True)
    return keys, [np.bincount(inverse, v, keys.size) for v in values]


def counts_from_outcomes(outcomes: pa.Table, *, ties: TieRule = "half") -> PairCounts:
    """Aggregate an outcomes table (contract ``ranking_outcomes``: item_a, item_b, winner).

    ``winner`` must equal that row's ``item_a``, its ``item_b``, or ``"tie"``; the error
    names the first offending row. Items are indexed in sorted order (deterministic).
    """
    if not isinstance(outcomes, pa.Table):
        outcomes = pa.Table.from_pandas(outcomes, preserve_index=False)
    table = validate(outcomes, RANKING_OUTCOMES, where="outcomes")
    if table.num_rows == 0:
        raise ValueError("outcomes table is empty: nothing to rank")
    col_a, col_b, col_w = (table.column(c).combine_chunks() for c in ("item_a", "item_b", "winner"))
    for name, col in (("item_a", col_a), ("item_b", col_b), ("winner", col_w)):
        if col.null_count:
            row = int(np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))[0])
            raise ValueError(f"outcomes row {row}: {name} is null; every row needs item_a, item_b and winner")
    items = pc.unique(pa.concat_arrays([col_a, col_b])).sort()
    if pc.any(pc.equal(items, TIE)).as_py():
        raise ValueError(f"an item is named {TIE!r}, which the winner column reserves for ties; rename it")
    a = pc.index_in(col_a, value_set=items).to_numpy()
    b = pc.index_in(col_b, value_set=items).to_numpy()
    a_won = pc.equal(col_w, col_a).to_numpy(zero_copy_only=False)
    b_won = pc.equal(col_w, col_b).to_numpy(zero_copy_only=False)
    tied = pc.equal(col_w, TIE).to_numpy(zero_copy_only=False)
    bad = ~(a_won | b_won | tied)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"outcomes row {row}: winner {col_w[row].as_py()!r} is neither item_a {col_a[row].as_py()!r},"
            f" item_b {col_b[row].as_py()!r} nor 'tie' ({int(bad.sum())} such rows); fix the winner column"
        )
    outcome = np.where(a_won, 0, np.where(b_won, 1, 2)).astype(np.int8)
    return counts_from_indices(a, b, outcome, tuple(items.to_pylist()), ties=ties)
