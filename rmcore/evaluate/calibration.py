"""Calibration of Bradley-Terry probabilities: is sigmoid(margin) the observed accuracy?

Under the Bradley-Terry model P(chosen beats rejected) = sigmoid(r_chosen - r_rejected).
Every pair is read from the model's side: its confidence is sigmoid(|margin|) in
[0.5, 1] and it is right when the margin is positive (an exact tie, margin 0, has
confidence 0.5 and counts as half right, which is what a 50/50 call is worth). Bins are
equal-width over [0.5, 1]; ECE = sum over bins of (n_bin / n) * |accuracy - confidence|.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    return 0.5 * (1.0 + np.tanh(0.5 * x))  # overflow-free logistic


def calibration_table(margins: np.ndarray, *, bins: int = 10) -> dict:
    """Per-bin (lo, hi, n, mean confidence, accuracy) rows, ECE and the overall numbers."""
    m = np.asarray(margins, dtype=np.float64)
    if len(m) == 0:
        raise ValueError("calibration of zero pairs is undefined")
    confidence = sigmoid(np.abs(m))
    correct = np.where(m > 0, 1.0, np.where(m == 0, 0.5, 0.0))
    edges = np.linspace(0.5, 1.0, bins + 1)
    # bin i holds [edges[i], edges[i+1]); the last bin also holds confidence 1.0
    index = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    rows = []
    ece = 0.0
    for i in range(bins):
        mask = index == i
        n = int(mask.sum())
        conf = float(confidence[mask].mean()) if n else None
        acc = float(correct[mask].mean()) if n else None
        if n:
            ece += n / len(m) * abs(acc - conf)
        rows.append(
            {"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": n, "confidence": conf, "accuracy": acc}
        )
    return {
        "bins": rows,
        "ece": float(ece),
        "mean_confidence": float(confidence.mean()),
        "accuracy": float(correct.mean()),
        "n": len(m),
    }
