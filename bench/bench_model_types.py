"""Bradley-Terry vs listwise vs regression on the same HelpSteer prompts, side by side.

Each model type trains with its recipe's own train section (deployments/recipes/helpsteer-*.yaml:
the same backbone, schedule and held-out prompts; the listwise global batch holds 4 rankings,
about the comparisons of the 16 pairs a Bradley-Terry step holds) on the data the pipeline built
for those recipes (run them first; the mixture and the rated mixture are read from the work dir).
Printed per type: optimizer steps, training wall time, real tokens/s, wall time per epoch and its
ratio to Bradley-Terry's (listwise encodes each response once per epoch, all-pairs Bradley-Terry
once per pair it is in), held-out pair accuracy with its 95% interval beside the length-only rule.

    .venv/bin/rmflow run deployments/recipes/helpsteer-regression.yaml --data-dir ../shared/data
    .venv/bin/python bench/bench_model_types.py --work runs
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TYPES = ("bt", "listwise", "regression", "regression-debiased")


def newest(pattern: str, work: Path) -> Path:
    found = sorted(work.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise SystemExit(f"no {pattern} under {work}: run the helpsteer-* recipes first (rmflow run ...)")
    return found[-1]


def run_one(kind: str, mixture: Path, rated: Path, out: Path, max_steps: int | None) -> dict:
    from rmcore.model_import import resolve_model_ref
    from rmcore.precision import default_cache_dir
    from rmcore.recipe import load_recipe
    from rmcore.train import train_reward_model

    recipe = "regression" if kind == "regression-debiased" else kind
    config = load_recipe(ROOT / "deployments" / "recipes" / f"helpsteer-{recipe}.yaml").train
    config = replace(config, model=resolve_model_ref(config.model, default_cache_dir() / "models"))
    if kind == "regression-debiased":
        config = replace(config, regression=replace(config.regression, debias_verbosity=True))
    if max_steps is not None:
        config = replace(config, optim=replace(config.optim, max_steps=max_steps))
    start = time.perf_counter()
    result = train_reward_model(
        config, mixture_path=mixture, output_dir=out / kind, resume=False,
        rated_path=rated if recipe == "regression" else None,
    )  # fmt: skip
    wall = time.perf_counter() - start
    per_epoch = result.step_seconds / max(result.steps, 1) * (result.steps / config.optim.epochs if max_steps is None else 0)
    m = result.metrics
    return {
        "type": kind,
        "steps": result.steps,
        "train_s": result.step_seconds,
        "wall_s": wall,
        "tok_s": result.tokens_per_s,
        "epoch_s": per_epoch,
        "items": result.data,
        "acc": m.get("eval/accuracy"),
        "low": m.get("eval/accuracy_low"),
        "high": m.get("eval/accuracy_high"),
        "length": m.get("eval/length_baseline"),
        "n": m.get("eval/pairs"),
        "length_spearman": m.get("eval/reward_length_spearman"),
        "debias": result.regression.get("debias"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=ROOT / "runs", help="the pipeline's work dir")
    parser.add_argument("--types", default=",".join(TYPES))
    parser.add_argument("--max-steps", type=int, help="stop each type after N steps (default: the recipe's schedule)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    mixture = newest("mixtures/helpsteer-bt/*/mixture.parquet", args.work)
    rated = newest("rated/helpsteer-regression/*/rated.parquet", args.work)
    print(f"mixture {mixture}\nrated   {rated}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in args.types.split(","):
            rows.append(run_one(kind, mixture, rated, Path(tmp), args.max_steps))
            r = rows[-1]
            print(f"{kind}: {r['steps']} steps in {r['train_s']:.0f} s, {r['tok_s']:,.0f} real tok/s, {r['items']}", flush=True)
            if r["length_spearman"] is not None:
                print(f"  Spearman(reward, answer words), held out: {r['length_spearman']:.3f}; debiasing: {r['debias']}")
    base = next((r for r in rows if r["type"] == "bt"), None)
    print("\n| model type | steps | train s | real tok/s | s/epoch | epoch vs bt | held-out acc [95%] | length rule |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = f"{r['epoch_s'] / base['epoch_s']:.2f}x" if base and base["epoch_s"] else "n/a"
        print(
            f"| {r['type']} | {r['steps']} | {r['train_s']:.0f} | {r['tok_s']:,.0f} | {r['epoch_s']:.0f} | {ratio} | "
            f"{r['acc']:.3f} [{r['low']:.3f}, {r['high']:.3f}] (n={int(r['n'])}) | {r['length']:.3f} |"
        )


if __name__ == "__main__":
    main()
