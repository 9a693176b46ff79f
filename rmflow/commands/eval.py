"""``rmflow eval MODEL_DIR --rewardbench PATH``: RewardBench v1 scores of a reward model;
``rmflow eval --dpo POLICY [--ref REF] --rewardbench PATH``: the same with a chat LM's DPO
implicit rewards (rmcore.evaluate.dpo).

Writes ``scores.parquet`` (subset, id, score_chosen, score_rejected), the JSON summary,
a markdown table and plots into ``--out``; prints per-subset, per-category and overall
scores (official aggregation) with the length-only rule beside them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="RewardBench v1 scores of a reward model (per subset, category, overall)",
        description=(
            "Score the RewardBench v1 'filtered' split with the reward model in MODEL_DIR and aggregate "
            "exactly as the official scorer (ties wrong; category weights from the official table; overall = "
            "mean of Chat, Chat Hard, Safety, Reasoning). Writes scores.parquet + rewardbench_summary.json."
        ),
    )
    p.add_argument(
        "model_dir", metavar="MODEL_DIR", nargs="?", default=None,
        help="reward model folder (HF layout, safetensors); leave out with --dpo",
    )
    dpo = p.add_argument_group("DPO implicit rewards (a chat LM scored as a reward model)")
    dpo.add_argument(
        "--dpo", metavar="POLICY", default=None,
        help="causal LM folder, .gguf file or alias (smollm2-135m-instruct): reward = beta * (log pi(y|x) - "
        "log pi_ref(y|x)) over the answer's tokens",
    )
    dpo.add_argument("--ref", metavar="REF", default=None, help="reference model (same tokenizer); without it, reference-free")
    dpo.add_argument(
        "--length-rule", choices=("avg", "sum", "norm"), default="avg",
        help="reference-free reduction of the answer's token log-probs: mean (default, as RewardBench's run_dpo.py), "
        "sum, or minus their L2 norm; the other two are reported beside",
    )
    dpo.add_argument("--beta", type=float, default=1.0, help="DPO beta (scales every reward alike; default 1)")
    bench = p.add_mutually_exclusive_group(required=True)
    bench.add_argument(
        "--rewardbench",
        metavar="PATH",
        help="Parquet/JSONL file in the hub schema, a hub-mirror folder, or 'allenai/reward-bench' (needs --revision)",
    )
    bench.add_argument(
        "--rewardbench2",
        metavar="PATH",
        help="RewardBench 2 instead: a Parquet file or hub-mirror folder of allenai/reward-bench-2 (split test), "
        "or 'allenai/reward-bench-2' (pinned revision unless --revision); best-of-4, Ties formula, mean of 6 subsets",
    )
    p.add_argument("--revision", default=None, help="hub commit of allenai/reward-bench (hub loads only; default: the pinned one)")
    p.add_argument(
        "--out",
        default=None,
        help="output folder (default $RMFLOW_WORK_DIR/eval/<model> or ./runs/eval/<model>)",
    )
    p.add_argument("--batch-size", type=int, default=16, help="conversations per forward pass (default 16)")
    p.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="token budget, truncated from the left (default: the model's)",
    )
    p.add_argument(
        "--sample-per-subset",
        type=int,
        default=None,
        metavar="N",
        help="score only N rows per subset (a quick, SAMPLED run)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the per-subset sample")
    precision = p.add_mutually_exclusive_group()
    precision.add_argument(
        "--bf16", dest="bf16", action="store_true", help="score in bfloat16 (warns where it is slower than fp32)"
    )
    precision.add_argument("--fp32", dest="bf16", action="store_false", help="full fp32 scoring")
    p.set_defaults(bf16="auto")  # bf16 only where a probe says it is faster on this device
    p.add_argument(
        "--bf16-mode",
        choices=("autocast", "weights"),
        default="autocast",
        help="with --bf16: autocast over fp32 weights (default, more accurate) or bf16 weights (a bit faster)",
    )
    p.add_argument(
        "--weights",
        choices=("official", "legacy-xstest-swap"),
        default="official",
        help="category weights: the current official table (default; reward-bench since 2024-09-10) or "
        "the earlier one with the two xstest weights swapped",
    )
    p.add_argument(
        "--allow-missing-subsets", action="store_true", help="score an incomplete file (reported as partial)"
    )
    p.add_argument("--no-plots", dest="plots", action="store_false", help="skip the PNG plots")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run, render=render)


def _default_out(model_dir: str) -> Path:
    root = Path(os.environ.get("RMFLOW_WORK_DIR") or "runs")
    return root / "eval" / (Path(model_dir).resolve().name or "model")


def run(args: argparse.Namespace) -> dict:
    from rmcore.config import from_mapping
    from rmcore.evaluate import EvalConfig, evaluate_rewardbench

    if (args.model_dir is None) == (args.dpo is None):
        raise ValueError("give a reward model folder (MODEL_DIR) or a policy (--dpo POLICY), not both or neither")
    if args.model_dir is not None and not Path(args.model_dir).is_dir():
        raise FileNotFoundError(f"{args.model_dir}: no such model folder")
    if args.ref and not args.dpo:
        raise ValueError("--ref is the reference of a DPO policy: give --dpo POLICY too")
    config = from_mapping(
        EvalConfig,
        {
            "batch_size": args.batch_size,
            "max_length": args.max_length,
            "bf16": args.bf16,
            "bf16_mode": args.bf16_mode,
            "sample_per_subset": args.sample_per_subset,
            "seed": args.seed,
            "weights": args.weights,
            "allow_missing_subsets": args.allow_missing_subsets,
            **({"hub_revision": args.revision} if args.revision else {}),  # else the pinned default
            "plots": args.plots,
        },
        where="rmflow eval",
    )
    if args.rewardbench2:
        return run_v2(args, config)
    if args.dpo:
        return cli_result(run_dpo(args, config))
    out = Path(args.out) if args.out else _default_out(args.model_dir)
    summary = evaluate_rewardbench(args.model_dir, args.rewardbench, out, config)
    return cli_result(summary)


def dpo_scorer(args: argparse.Namespace):
    """The DPO scorer of ``--dpo`` (and ``--ref``), and the policy's folder."""
    from rmcore.evaluate.dpo import DpoScorer, load_causal_lm
    from rmcore.model_import import resolve_model_ref
    from rmcore.precision import default_cache_dir

    cache = default_cache_dir() / "models"
    policy_dir = resolve_model_ref(args.dpo, cache)
    policy, tokenizer = load_causal_lm(policy_dir)
    reference = load_causal_lm(resolve_model_ref(args.ref, cache))[0] if args.ref else None
    scorer = DpoScorer(
        policy, tokenizer, reference, length_rule=args.length_rule, beta=args.beta,
        max_length=args.max_length or min(int(getattr(tokenizer, "model_max_length", 2048) or 2048), 2048),
        batch_size=args.batch_size,
    )
    return scorer, policy_dir


def run_dpo(args: argparse.Namespace, config) -> dict:
    """RewardBench with the DPO implicit rewards of ``--dpo`` (and ``--ref``)."""
    from rmcore.evaluate.dpo import evaluate_rewardbench_dpo

    scorer, policy_dir = dpo_scorer(args)
    out = Path(args.out) if args.out else _default_out(policy_dir)
    return evaluate_rewardbench_dpo(
        scorer, args.rewardbench, out, config, described={"policy": args.dpo, "reference": args.ref}
    )


def run_v2(args: argparse.Namespace, config) -> dict:
    """RewardBench 2 with a reward model (or DPO implicit rewards): summary JSON + markdown table."""
    from rmcore import io
    from rmcore.evaluate.rewardbench2 import HUB_REVISION, evaluate_rewardbench2, rewardbench2_markdown

    def as_conversations(pairs):
        return [[{"role": "user", "content": p}, {"role": "assistant", "content": c}] for p, c in pairs]

    if args.dpo:
        from rmcore.evaluate.dpo import dpo_rewards

        dpo, folder = dpo_scorer(args)

        def scorer(pairs):
            return dpo_rewards(dpo, as_conversations(pairs))["reward"]
    else:
        from rmcore.evaluate.precision import autocast_dtype, load_model_for_eval
        from rmcore.scoring import score_conversations

        model, config, _precision = load_model_for_eval(args.model_dir, config)
        folder = args.model_dir

        def scorer(pairs):
            return score_conversations(model, as_conversations(pairs), batch_size=config.batch_size,
                                       max_length=config.max_length, autocast_dtype=autocast_dtype(config))

    summary = evaluate_rewardbench2(args.rewardbench2, scorer, revision=args.revision or HUB_REVISION)
    out = Path(args.out) if args.out else _default_out(folder)
    paths = {"summary": str(out / "rewardbench2_summary.json"), "markdown": str(out / "rewardbench2.md")}
    io.write_text(rewardbench2_markdown(summary), paths["markdown"])
    io.write_json({**summary, "model": str(args.dpo or args.model_dir), "paths": paths}, paths["summary"])
    keep = ("benchmark", "overall", "overall_form", "subsets", "rows_scored", "complete", "missing_subsets")
    return {**{k: summary[k] for k in keep}, **paths}


def cli_result(summary: dict) -> dict:
    """The JSON the command prints: scores per subset, category and overall, and where files are."""
    keep = ("accuracy", "n", "ties", "ci95", "category", "length_rule_accuracy", "margin_length_spearman")
    return {
        "overall": summary["overall"],
        "overall_form": summary["overall_form"],
        "categories": summary["categories"],
        "prior_sets": summary["prior_sets"],
        "subsets": {name: {k: v[k] for k in keep} for name, v in summary["subsets"].items()},
        "length_rule": summary["length_rule"],
        "ece": summary["calibration"]["ece"],
        "ties": summary["ties"],
        "weights": summary["weights_name"],
        "rows_scored": summary["rows_scored"],
        "sampled": summary["sampled"],
        "complete": summary["complete"],
        "missing_subsets": summary["missing_subsets"],
        "exclusions": summary["exclusions"],
        "scoring": summary["scoring"],
        **({"dpo": summary["dpo"]} if "dpo" in summary else {}),
        "scores": summary["paths"]["scores"],
        "summary": summary["paths"]["summary"],
        "markdown": summary["paths"]["markdown"],
    }


def render(result: dict) -> None:
    out = sys.stdout
    out.write(Path(result["markdown"]).read_text())
    s = result["scoring"]
    out.write(
        f"\n{result['rows_scored']} pairs, {s['precision']}, batch {s['batch_size']}, max_length {s['max_length']}: "
        f"{s['seconds']:.1f} s ({s['pairs_per_s']:.2f} pairs/s)\n"
    )
    out.write(f"scores: {result['scores']}\nsummary: {result['summary']}\n")
