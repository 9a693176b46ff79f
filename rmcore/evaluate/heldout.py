"""Held-out pairwise accuracy per source, with a 95% interval, length bias and calibration.

Input: pair-contract Parquet files (e.g. the cleaned hh-rlhf test splits), one per
source name. For each source the model scores the full ``chosen`` and ``rejected``
conversations; a pair is right when reward(chosen) > reward(rejected) (a tie is wrong).
Beside each accuracy: the length-only rule on the same pairs, the rank correlation of
margins with length differences, a calibration table (ECE) and PNG plots.
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from rmcore import io
from rmcore.evaluate.calibration import calibration_table
from rmcore.evaluate.config import EvalConfig
from rmcore.evaluate.intervals import wilson_interval
from rmcore.evaluate.length_bias import answer_length, length_bias_report
from rmcore.evaluate.precision import autocast_dtype, load_model_for_eval, precision_name

log = logging.getLogger(__name__)

SCORES_FILE = "heldout_scores.parquet"
SUMMARY_FILE = "heldout_summary.json"
MARKDOWN_FILE = "heldout.md"


def last_answer(messages: list[dict]) -> str:
    """The final message's content (the answer being judged)."""
    return str(messages[-1]["content"]) if messages else ""


def pair_accuracy(score_chosen: np.ndarray, score_rejected: np.ndarray) -> dict:
    """Accuracy (ties wrong), n, correct, ties and the Wilson 95% interval."""
    c = np.asarray(score_chosen, dtype=np.float64)
    r = np.asarray(score_rejected, dtype=np.float64)
    n = len(c)
    correct = int((c > r).sum())
    lo, hi = wilson_interval(correct, n)
    return {
        "accuracy": correct / n,
        "n": n,
        "correct": correct,
        "ties": int((c == r).sum()),
        "ci95": [lo, hi],
    }


def summarize_pairs(
    score_chosen: np.ndarray,
    score_rejected: np.ndarray,
    len_chosen: np.ndarray,
    len_rejected: np.ndarray,
    *,
    bins: int,
) -> dict:
    """Everything reported for one source: accuracy + interval, length bias, calibration, rewards."""
    c = np.asarray(score_chosen, dtype=np.float64)
    r = np.asarray(score_rejected, dtype=np.float64)
    out = pair_accuracy(c, r)
    out.update(length_bias_report(c, r, len_chosen, len_rejected))
    out["mean_margin"] = float((c - r).mean())
    out["reward_mean"] = {"chosen": float(c.mean()), "rejected": float(r.mean())}
    out["calibration"] = calibration_table(c - r, bins=bins)
    return out


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "source"


def _score_source(model, table: pa.Table, config: EvalConfig) -> tuple[np.ndarray, np.ndarray, int]:
    from rmcore.scoring import encode_conversations, score_token_ids

    chosen = table.column("chosen").to_pylist()
    rejected = table.column("rejected").to_pylist()
    encoded = encode_conversations(model, chosen + rejected, max_length=config.max_length)
    rewards = score_token_ids(
        model, encoded, batch_size=config.batch_size, autocast_dtype=autocast_dtype(config)
    )
    n = len(chosen)
    return rewards[:n], rewards[n:], int(sum(map(len, encoded)))


def heldout_source(
    model,
    name: str,
    path: str | os.PathLike[str],
    out_dir: Path,
    config: EvalConfig,
    *,
    max_pairs: int | None = None,
    seed: int = 0,
) -> tuple[dict, pa.Table]:
    """Score one source's pairs (a seeded sample of ``max_pairs`` when given, as a mixture
    samples its sources); return its summary and its rows of per-pair scores."""
    from rmcore.data.mixtures import subsample

    full = io.read_table(path, "pairs")
    if full.num_rows == 0:
        raise ValueError(f"{path}: no pairs to evaluate for source {name!r}")
    table = subsample(full, max_pairs, seed, name)
    if table.num_rows < full.num_rows:
        log.info("held-out %s: a seeded sample of %d of %d pairs (max_pairs)", name, table.num_rows, full.num_rows)
    start = time.perf_counter()
    c, r, tokens = _score_source(model, table, config)
    seconds = time.perf_counter() - start
    len_c = np.array(
        [answer_length(last_answer(m)) for m in table.column("chosen").to_pylist()], dtype=np.int64
    )
    len_r = np.array(
        [answer_length(last_answer(m)) for m in table.column("rejected").to_pylist()], dtype=np.int64
    )
    summary = summarize_pairs(c, r, len_c, len_r, bins=config.calibration_bins)
    summary.update(input=str(path), input_sha256=io.file_sha256(path), tokens=tokens, seconds=seconds)
    summary["pairs_in_source"] = full.num_rows
    if config.plots:
        from rmcore.evaluate import plots

        slug = _slug(name)
        summary["histogram"] = str(
            plots.reward_histogram(c, r, out_dir / f"heldout_{slug}_rewards.png", title=name)
        )
        summary["calibration_plot"] = str(
            plots.calibration_plot(
                summary["calibration"], out_dir / f"heldout_{slug}_calibration.png", title=name
            )
        )
    rows = pa.table(
        {
            "pair_id": table.column("pair_id"),
            "source": pa.array([name] * table.num_rows, pa.string()),
            "score_chosen": pa.array(c, pa.float64()),
            "score_rejected": pa.array(r, pa.float64()),
            "len_chosen": pa.array(len_c, pa.int64()),
            "len_rejected": pa.array(len_r, pa.int64()),
        }
    )
    log.info(
        "held-out %s: accuracy %.4f (length rule %.4f) on %d pairs",
        name,
        summary["accuracy"],
        summary["length_rule_accuracy"],
        summary["n"],
    )
    return summary, rows


def evaluate_heldout_with_model(
    model,
    pairs_paths: dict[str, str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: EvalConfig,
    *,
    max_pairs: dict[str, int | None] | None = None,
    seed: int = 0,
) -> dict:
    """``evaluate_heldout`` for a model already loaded (shared with RewardBench scoring)."""
    if not pairs_paths:
        raise ValueError("no held-out pair files given (pairs_paths is empty)")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sources: dict[str, dict] = {}
    tables = []
    for name, path in pairs_paths.items():
        limit = (max_pairs or {}).get(name)
        sources[name], rows = heldout_source(model, name, path, out, config, max_pairs=limit, seed=seed)
        tables.append(rows)
    paths = {
        "scores": str(out / SCORES_FILE),
        "summary": str(out / SUMMARY_FILE),
        "markdown": str(out / MARKDOWN_FILE),
    }
    from rmcore.evaluate.report import heldout_markdown

    summary = {
        "sources": sources,
        "precision": precision_name(config),
        "max_length": getattr(model, "max_length", None) if config.max_length is None else config.max_length,
    }
    summary["scores_sha256"] = io.write_table(pa.concat_tables(tables), paths["scores"], "heldout_scores")
    io.write_text(heldout_markdown(summary), paths["markdown"])
    summary["paths"] = paths
    io.write_json(summary, paths["summary"])
    return summary


def evaluate_heldout(
    model_dir: str | os.PathLike[str],
    pairs_paths: dict[str, str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    config: EvalConfig | None = None,
    *,
    max_pairs: dict[str, int | None] | None = None,
    seed: int = 0,
) -> dict:
    """Held-out accuracy per source for the model in ``model_dir`` (``max_pairs[name]``: a seeded
    sample of that many pairs of source ``name``, the recipe's held-out ``max_pairs``); writes
    ``heldout_scores.parquet`` (contract heldout_scores), ``heldout_summary.json``,
    ``heldout.md`` and per-source PNGs into ``out_dir``; returns the summary with paths.
    """
    config = config or EvalConfig()
    model, config, precision = load_model_for_eval(model_dir, config)
    summary = evaluate_heldout_with_model(model, pairs_paths, out_dir, config, max_pairs=max_pairs, seed=seed)
    summary["model_dir"] = str(model_dir)
    summary["precision_reason"] = precision.reason
    io.write_json(summary, summary["paths"]["summary"])
    return summary
