"""The multi-objective regression reward model (ArmoRM's first stage): loss, metrics, export.

One backbone, one regression output per rated attribute (``RATED_ATTRIBUTES``, ratings 0-4;
a missing rating is NaN). Training minimises a masked MSE; the scalar reward is a fixed
combination ``vector @ outputs`` (``RegressionConfig.weights``), optionally with a multiple
of the verbosity output subtracted so the reward stops tracking response length. At export
the combination is folded into a one-output head (``fold_head``), so the exported model is a
plain scalar reward model. Pure functions, no training-loop state.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from data_contracts import RATED_ATTRIBUTES

Z_95 = 1.959963984540054
"""The two-sided 95% normal quantile, Phi^-1(0.975)."""
VERBOSITY = "verbosity"


def masked_mse_loss(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean squared error over the labelled entries of ``target`` (NaN = missing), and metrics.

    ``L = sum_labelled (p - t)^2 / k`` with ``k`` labelled entries, so ``dL/dp = 2 (p - t) / k``
    on a labelled entry and 0 on a missing one. The loss is float32 (or wider) whatever
    ``pred``'s dtype. With no labelled entry it is ``0 * pred.sum()``: 0, and backward still
    runs. Metrics: ``loss`` and ``rmse`` (its square root).
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"regression predictions and targets differ in shape: {tuple(pred.shape)} vs "
            f"{tuple(target.shape)}"
        )
    dtype = torch.promote_types(pred.dtype, torch.float32)  # bf16 outputs -> fp32 loss
    pred = pred.to(dtype)
    target = target.to(device=pred.device, dtype=dtype)
    labelled = ~torch.isnan(target)
    k = int(labelled.sum())
    if k == 0:
        loss = pred.sum() * 0.0
    else:
        err = (pred - torch.nan_to_num(target, nan=0.0)) * labelled  # masked entries: 0, grad 0
        loss = (err**2).sum() / k
    value = float(loss.detach())
    return loss, {"loss": value, "rmse": math.sqrt(value)}


def combination_vector(
    weights: Mapping[str, float], attributes: Sequence[str] = RATED_ATTRIBUTES
) -> torch.Tensor:
    """The reward's weights over the outputs, float32 ``[A]``; attributes not named weigh 0."""
    unknown = sorted(set(weights) - set(attributes))
    if unknown:
        raise ValueError(
            f"regression weights name unknown attribute(s) {', '.join(unknown)}; use {', '.join(attributes)}"
        )
    return torch.tensor([float(weights.get(a, 0.0)) for a in attributes], dtype=torch.float32)


def weights_with_debias(
    vector: torch.Tensor, lam: float, attributes: Sequence[str] = RATED_ATTRIBUTES
) -> torch.Tensor:
    """``vector`` with ``lam`` subtracted at the verbosity output (a new tensor)."""
    if VERBOSITY not in attributes:
        raise ValueError(f"no '{VERBOSITY}' among the attributes {', '.join(attributes)}")
    if vector.shape != (len(attributes),):
        raise ValueError(f"combination vector has shape {tuple(vector.shape)}, expected ({len(attributes)},)")
    if not (math.isfinite(lam) and lam >= 0):
        raise ValueError(f"verbosity debias lambda must be finite and >= 0, got {lam}")
    out = vector.clone()
    out[list(attributes).index(VERBOSITY)] -= lam
    return out


def fold_head(head: torch.nn.Linear, vector: torch.Tensor) -> torch.nn.Linear:
    """A new ``Linear(hidden -> 1)`` computing ``head(h) @ vector``: the exportable scalar head.

    ``weight = vector @ head.weight`` and ``bias = vector @ head.bias`` (no bias if ``head`` has
    none), computed in float64 and stored in ``head``'s dtype and device.
    """
    if vector.shape != (head.out_features,):
        raise ValueError(
            f"combination vector has shape {tuple(vector.shape)}, the head has {head.out_features} outputs"
        )
    w = head.weight.detach()
    folded = torch.nn.Linear(head.in_features, 1, bias=head.bias is not None, device=w.device, dtype=w.dtype)
    v = vector.detach().to(device=w.device, dtype=torch.float64)
    with torch.no_grad():
        folded.weight.copy_((v @ w.double()).unsqueeze(0))
        if head.bias is not None:
            folded.bias.copy_((v @ head.bias.detach().double()).reshape(1))
    return folded


def _as_pair(
    x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x, dtype=np.float64).ravel(), np.asarray(y, dtype=np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"correlation needs equal lengths, got {x.size} and {y.size}")
    return x, y


def pearson(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> float:
    """Pearson's r; NaN with fewer than 2 points or a constant input."""
    x, y = _as_pair(x, y)
    if x.size < 2:
        return math.nan
    dx, dy = x - x.mean(), y - y.mean()
    sxx, syy = float(dx @ dx), float(dy @ dy)
    if sxx == 0.0 or syy == 0.0:
        return math.nan
    return float(np.clip(float(dx @ dy) / math.sqrt(sxx * syy), -1.0, 1.0))


def average_ranks(x: np.ndarray | Sequence[float]) -> np.ndarray:
    """1-based ranks of ``x``; tied values share the mean of the ranks they span."""
    _, inverse, counts = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True, return_counts=True)
    last = np.cumsum(counts)  # rank of each distinct value's last copy
    return (last - (counts - 1) / 2.0)[inverse.ravel()]


def spearman(x: np.ndarray | Sequence[float], y: np.ndarray | Sequence[float]) -> float:
    """Spearman's rho: Pearson's r of the average ranks; NaN as ``pearson``."""
    x, y = _as_pair(x, y)
    return pearson(average_ranks(x), average_ranks(y))


def correlation_interval(r: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Fisher-z interval: ``tanh(atanh(r) -/+ z_q / sqrt(n - 3))``; (nan, nan) if n < 4 or r is NaN.

    ``r`` = +-1 is clipped just inside the interval, so a perfect correlation gives ~(1, 1).
    """
    if n < 4 or not math.isfinite(r):
        return math.nan, math.nan
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence}")
    q = Z_95 if confidence == 0.95 else _normal_quantile(0.5 + confidence / 2.0)
    z = math.atanh(min(max(r, -1.0 + 1e-12), 1.0 - 1e-12))
    half = q / math.sqrt(n - 3)
    return math.tanh(z - half), math.tanh(z + half)


def _normal_quantile(p: float) -> float:
    """Phi^-1(p) by bisection on ``erf`` (to ~1e-15; used only for non-default confidences)."""
    lo, hi = -40.0, 40.0
    for _ in range(200):
        mid = (lo + hi) / 2.0
        if 0.5 * (1.0 + math.erf(mid / math.sqrt(2.0))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2.0


def attribute_metrics(
    pred: np.ndarray, target: np.ndarray, attributes: Sequence[str] = RATED_ATTRIBUTES
) -> dict[str, dict[str, float]]:
    """Per attribute, over the rows where it is labelled: n, Pearson and Spearman with 95% intervals, RMSE.

    A constant column (or fewer than 2 labelled rows) gives NaN correlations; no labelled row
    gives NaN RMSE.
    """
    pred, target = np.asarray(pred, dtype=np.float64), np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape or pred.ndim != 2 or pred.shape[1] != len(attributes):
        raise ValueError(
            f"attribute metrics need pred and target of shape [n, {len(attributes)}], "
            f"got {pred.shape} and {target.shape}"
        )
    out: dict[str, dict[str, float]] = {}
    for j, name in enumerate(attributes):
        rows = ~np.isnan(target[:, j])
        p, t = pred[rows, j], target[rows, j]
        n = int(rows.sum())
        r, rho = pearson(p, t), spearman(p, t)
        r_low, r_high = correlation_interval(r, n)
        rho_low, rho_high = correlation_interval(rho, n)
        out[name] = {
            "n": n,
            "pearson": r,
            "pearson_low": r_low,
            "pearson_high": r_high,
            "spearman": rho,
            "spearman_low": rho_low,
            "spearman_high": rho_high,
            "rmse": math.sqrt(float(np.mean((p - t) ** 2))) if n else math.nan,
        }
    return out


@dataclass(frozen=True)
class VerbosityDebias:
    """The fitted verbosity penalty: reward = combined - lam * verbosity."""

    lam: float
    """Multiple of the verbosity output subtracted from the reward (>= 0)."""
    spearman_before: float
    """Spearman(combined, lengths)."""
    spearman_after: float
    """Spearman(combined - lam * verbosity, lengths)."""
    n: int
    """Rows the fit used."""


def fit_verbosity_debias(
    combined: np.ndarray, verbosity: np.ndarray, lengths: np.ndarray, *, grid: int = 401, span: float = 10.0
) -> VerbosityDebias:
    """Fit ArmoRM's verbosity penalty: the ``lam >= 0`` making the reward length-neutral.

    The reward ``combined - lam * verbosity`` is decorrelated from response length by choosing
    the ``lam`` whose Spearman correlation with ``lengths`` is nearest 0. Rule: if
    Spearman(combined, lengths) is already <= 0 (or undefined), ``lam = 0``. Otherwise scan
    ``grid`` values of ``lam`` evenly over ``[0, span * std(combined) / std(verbosity)]``; at the
    first grid step where the correlation turns <= 0, bisect that step (the correlation is a
    step function of ``lam``) and keep the end nearer 0 in absolute value, the smaller ``lam``
    on a tie. With no sign change, keep the grid ``lam`` with the smallest ``|Spearman|``.
    """
    c, v = _as_pair(combined, verbosity)
    c, length = _as_pair(c, lengths)
    n = int(c.size)
    length_ranks = average_ranks(length)

    def rho(lam: float) -> float:
        return pearson(average_ranks(c - lam * v), length_ranks)

    before = rho(0.0)
    sd_c, sd_v = float(np.std(c)), float(np.std(v))
    if not (before > 0.0) or sd_v == 0.0:  # also NaN: nothing to fit
        return VerbosityDebias(0.0, before, before, n)
    lams = np.linspace(0.0, span * max(sd_c, 1e-12) / sd_v, grid)
    rhos = np.array([rho(float(lam)) for lam in lams])
    crossed = np.flatnonzero(rhos <= 0.0)
    if crossed.size:
        i = int(crossed[0])
        lo, hi, rho_lo, rho_hi = float(lams[i - 1]), float(lams[i]), float(rhos[i - 1]), float(rhos[i])
        for _ in range(60):  # rho(lo) > 0 >= rho(hi)
            mid = (lo + hi) / 2.0
            if mid in (lo, hi):
                break
            rho_mid = rho(mid)
            if rho_mid > 0.0:
                lo, rho_lo = mid, rho_mid
            else:
                hi, rho_hi = mid, rho_mid
        lam, after = (lo, rho_lo) if abs(rho_lo) <= abs(rho_hi) else (hi, rho_hi)
    else:
        finite = np.where(np.isnan(rhos), np.inf, np.abs(rhos))
        i = int(np.argmin(finite))
        lam, after = float(lams[i]), float(rhos[i])
    return VerbosityDebias(lam, before, after, n)
