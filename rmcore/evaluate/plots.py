"""PNG plots for the evaluation reports (matplotlib, headless Agg backend)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from rmcore.io import atomic_path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike[str]) -> Path:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)


def reward_histogram(
    score_chosen: np.ndarray, score_rejected: np.ndarray, path: str | os.PathLike[str], *, title: str
) -> Path:
    """Overlaid histograms of the chosen and the rejected rewards on shared bins."""
    plt = _pyplot()
    c = np.asarray(score_chosen, dtype=np.float64)
    r = np.asarray(score_rejected, dtype=np.float64)
    edges = np.histogram_bin_edges(np.concatenate([c, r]), bins=40)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(c, bins=edges, alpha=0.55, label=f"chosen (mean {c.mean():.3f})", color="tab:green")
    ax.hist(r, bins=edges, alpha=0.55, label=f"rejected (mean {r.mean():.3f})", color="tab:red")
    ax.set_xlabel("reward")
    ax.set_ylabel("pairs")
    ax.set_title(title)
    ax.legend()
    return _save(fig, path)


def calibration_plot(table: dict, path: str | os.PathLike[str], *, title: str) -> Path:
    """Reliability diagram: observed accuracy per bin against mean sigmoid(|margin|)."""
    plt = _pyplot()
    rows = [b for b in table["bins"] if b["n"]]
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0.5, 1.0], [0.5, 1.0], linestyle="--", color="grey", label="perfect calibration")
    if rows:
        conf = [b["confidence"] for b in rows]
        acc = [b["accuracy"] for b in rows]
        sizes = [20 + 200 * b["n"] / table["n"] for b in rows]
        ax.plot(conf, acc, color="tab:blue")
        ax.scatter(conf, acc, s=sizes, color="tab:blue", label="observed (size = pairs)")
    ax.set_xlim(0.5, 1.0)
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("confidence sigmoid(|margin|)")
    ax.set_ylabel("observed accuracy")
    ax.set_title(f"{title} (ECE {table['ece']:.3f})")
    ax.legend(loc="lower right")
    return _save(fig, path)
