"""RewardBench v1 evaluation: score every pair, aggregate as the official scorer, report.

``summarize_rewardbench`` is the pure part (rows + per-row scores -> summary dict) and is
what the aggregation tests drive with hand-made scores; ``evaluate_rewardbench`` loads
the model, scores, and writes ``scores.parquet``, ``rewardbench_summary.json``,
``rewardbench.md`` and PNG plots atomically into ``out_dir``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from rmcore import io
from rmcore.evaluate.calibration import calibration_table
from rmcore.evaluate.config import EvalConfig
from rmcore.evaluate.intervals import wilson_interval
from rmcore.evaluate.length_bias import answer_length, length_bias_report
from rmcore.evaluate.official import (
    OTHER_PREF_SETS,
    PRIOR_SETS,
    SUBSET_MAPPING,
    IncompleteSetError,
    aggregate,
    check_subsets,
    subset_results,
)
from rmcore.evaluate.precision import autocast_dtype, load_model_for_eval, precision_name
from rmcore.evaluate.rewardbench_data import (
    RewardBenchRows,
    conversations,
    count_mismatches,
    load_rewardbench,
)

log = logging.getLogger(__name__)

SCORES_FILE = "scores.parquet"
SUMMARY_FILE = "rewardbench_summary.json"
MARKDOWN_FILE = "rewardbench.md"
CATEGORY_OF = {
    **{s: c for c, subsets in SUBSET_MAPPING.items() for s in subsets},
    **dict.fromkeys(PRIOR_SETS, "Prior Sets"),
    **dict.fromkeys(OTHER_PREF_SETS, "Pref sets (reported, not averaged)"),
}


def scores_table(frame: pd.DataFrame, score_chosen: np.ndarray, score_rejected: np.ndarray) -> pa.Table:
    """Per-row scores in the REWARDBENCH_SCORES contract, in input order."""
    return pa.table(
        {
            "subset": pa.array(frame["subset"].astype(str).tolist(), pa.string()),
            "id": pa.array(frame["id"].to_numpy(dtype=np.int64), pa.int64()),
            "score_chosen": pa.array(np.asarray(score_chosen, dtype=np.float64), pa.float64()),
            "score_rejected": pa.array(np.asarray(score_rejected, dtype=np.float64), pa.float64()),
        }
    )


def _length_rule_scores(
    frame: pd.DataFrame, len_c: np.ndarray, len_r: np.ndarray, config: EvalConfig
) -> dict:
    """The length-only rule's RewardBench scores, aggregated the official way (ties half)."""
    per_subset = {}
    for name, idx in frame.groupby("subset").indices.items():
        per_subset[name] = float(((len_c[idx] > len_r[idx]) + 0.5 * (len_c[idx] == len_r[idx])).mean())
    agg = aggregate(per_subset, weights=config.weights, allow_missing=True)
    return {"categories": agg["categories"], "overall": agg["overall"]}


def summarize_rewardbench(
    rows: RewardBenchRows,
    score_chosen: np.ndarray,
    score_rejected: np.ndarray,
    config: EvalConfig | None = None,
) -> dict:
    """Summary of a scored RewardBench run: per subset (accuracy, n, ties, 95% interval,
    length bias), per category and overall (official aggregation, x100), the length-only
    rule's scores, calibration, exclusions and what was sampled. Subset accuracies are
    fractions; category and overall scores are percentages, as the official scorer prints.
    """
    config = config or EvalConfig()
    frame = rows.frame
    c = np.asarray(score_chosen, dtype=np.float64)
    r = np.asarray(score_rejected, dtype=np.float64)
    if not (len(c) == len(r) == len(frame)):
        raise ValueError(f"{len(frame)} rows but {len(c)} chosen / {len(r)} rejected scores")
    len_c = np.array([answer_length(str(t)) for t in frame["chosen"]], dtype=np.int64)
    len_r = np.array([answer_length(str(t)) for t in frame["rejected"]], dtype=np.int64)
    subsets = subset_results(frame["subset"].to_numpy(dtype=object), c, r)
    groups = frame.groupby("subset").indices
    for name, result in subsets.items():
        idx = groups[name]
        lo, hi = wilson_interval(result["correct"], result["n"])
        result.update(category=CATEGORY_OF[name], ci95=[lo, hi])
        result.update(length_bias_report(c[idx], r[idx], len_c[idx], len_r[idx]))
    agg = aggregate(
        {s: v["accuracy"] for s, v in subsets.items()},
        weights=config.weights,
        allow_missing=config.allow_missing_subsets,
    )
    mismatches = {} if rows.sample else count_mismatches(frame)
    complete = not (agg["missing_subsets"] or rows.exclusions or mismatches or rows.sample)
    return {
        "origin": rows.origin,
        "rows_in": rows.rows_in,
        "rows_scored": len(frame),
        "sampled": rows.sample,
        "complete": complete,
        "subsets": subsets,
        "categories": agg["categories"],
        "overall": agg["overall"],
        "prior_sets": agg["prior_sets"],
        "overall_form": agg["overall_form"],
        "weights_name": agg["weights_name"],
        "weights": agg["weights"],
        "ties": int(sum(v["ties"] for v in subsets.values())),
        "missing_subsets": agg["missing_subsets"],
        "exclusions": rows.exclusions,
        "count_mismatches": mismatches,
        "length_rule": _length_rule_scores(frame, len_c, len_r, config),
        "length_bias": length_bias_report(c, r, len_c, len_r),
        "calibration": calibration_table(c - r, bins=config.calibration_bins),
    }


def score_rewardbench_rows(
    model, rows: RewardBenchRows, config: EvalConfig
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Chosen and rejected rewards for every row (one length-sorted pass) + timing facts."""
    from rmcore.scoring import encode_conversations, resolve_max_length, score_token_ids

    n = len(rows.frame)
    convs = conversations(rows.frame, "chosen") + conversations(rows.frame, "rejected")
    start = time.perf_counter()
    encoded = encode_conversations(model, convs, max_length=config.max_length)
    rewards = score_token_ids(
        model, encoded, batch_size=config.batch_size, autocast_dtype=autocast_dtype(config)
    )
    seconds = time.perf_counter() - start
    facts = {
        "batch_size": config.batch_size,
        "max_length": resolve_max_length(model, config.max_length),
        "precision": precision_name(config),
        "pooling": str(getattr(model, "pooling", config.pooling)),
        "tokens": int(sum(map(len, encoded))),
        # conversations that fill the whole budget: left-truncated (or exactly that long)
        "at_max_length": int(sum(len(e) >= resolve_max_length(model, config.max_length) for e in encoded)),
        "seconds": seconds,
        "pairs_per_s": n / seconds if seconds > 0 else None,
    }
    return rewards[:n], rewards[n:], facts


def write_rewardbench_outputs(
    summary: dict, table: pa.Table, out_dir: Path, config: EvalConfig
) -> dict[str, str]:
    """scores.parquet, the JSON summary, the markdown table and plots; returns their paths."""
    from rmcore.evaluate.report import rewardbench_markdown

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"scores": str(out_dir / SCORES_FILE), "summary": str(out_dir / SUMMARY_FILE)}
    summary["scores_sha256"] = io.write_table(table, paths["scores"], "rewardbench_scores")
    paths["markdown"] = str(out_dir / MARKDOWN_FILE)
    io.write_text(rewardbench_markdown(summary), paths["markdown"])
    if config.plots:
        from rmcore.evaluate import plots

        c = table.column("score_chosen").to_numpy()
        r = table.column("score_rejected").to_numpy()
        paths["histogram"] = str(
            plots.reward_histogram(c, r, out_dir / "rewardbench_rewards.png", title="RewardBench rewards")
        )
        paths["calibration_plot"] = str(
            plots.calibration_plot(
                summary["calibration"], out_dir / "rewardbench_calibration.png", title="RewardBench"
            )
        )
    summary["paths"] = paths
    io.write_json(summary, paths["summary"])
    return paths


def check_rewardbench_subsets(rows: RewardBenchRows, config: EvalConfig) -> None:
    """``check_subsets`` for a loaded file: the error names the file and the option that allows it."""
    try:
        check_subsets(set(rows.frame["subset"]), allow_missing=config.allow_missing_subsets)
    except IncompleteSetError as e:
        raise IncompleteSetError(
            f"{rows.origin}: {e}. The option: `eval.allow_missing_subsets: true` in the recipe "
            "(`rmflow eval --allow-missing-subsets`) scores it as a reported partial result"
        ) from None


def load_checked_rewardbench(rewardbench_path: str | os.PathLike[str], config: EvalConfig) -> RewardBenchRows:
    """The RewardBench rows a config asks for (sample, revision), its subsets checked before scoring."""
    rows = load_rewardbench(
        rewardbench_path, revision=config.hub_revision, per_subset=config.sample_per_subset, seed=config.seed
    )
    check_rewardbench_subsets(rows, config)  # before the long part
    return rows


def evaluate_rewardbench(
    model_dir: str | os.PathLike[str],
    rewardbench_path: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    config: EvalConfig | None = None,
) -> dict:
    """Score RewardBench with the model in ``model_dir``; write outputs; return the summary.

    ``rewardbench_path``: a Parquet/JSONL file in the hub schema, a hub-mirror directory,
    or ``allenai/reward-bench`` (needs ``config.hub_revision``). The returned dict is the
    JSON summary plus ``paths`` (scores, summary, markdown, plots).
    """
    config = config or EvalConfig()
    rows = load_checked_rewardbench(rewardbench_path, config)
    model, config, precision = load_model_for_eval(model_dir, config)
    log.info("RewardBench: scoring %d pairs from %s", len(rows.frame), rows.origin)
    c, r, facts = score_rewardbench_rows(model, rows, config)
    summary = summarize_rewardbench(rows, c, r, config)
    summary.update(model_dir=str(model_dir), scoring=facts | {"precision_reason": precision.reason})
    write_rewardbench_outputs(summary, scores_table(rows.frame, c, r), Path(out_dir), config)
    log.info("RewardBench overall %s (%s)", summary["overall"], summary["overall_form"])
    return summary
