"""The evaluation task: model folder + RewardBench file + held-out pairs -> scores and reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.logging import get_run_logger

from rmcore import io
from rmcore.evaluate.config import EvalConfig
from tasks.caching import Stage, build_once

EVALUATE = Stage(
    "evaluate",
    key_params=("eval", "model_digest", "rewardbench_digest", "heldout_digests", "heldout_max_pairs", "seed", "work"),
    folder=lambda p: "eval",
    code=("rmcore.evaluate.rewardbench", "rmcore.evaluate.heldout"),
)


@EVALUATE.task(task_run_name="evaluate")
def evaluate_task(
    eval: EvalConfig,
    model_dir: str,
    model_digest: str,
    rewardbench_path: str | None,
    rewardbench_digest: str | None,
    heldout_paths: dict[str, str],
    heldout_digests: dict[str, str],
    work: str,
    heldout_max_pairs: dict[str, int | None] | None = None,
    seed: int = 0,
) -> dict:
    """RewardBench (exact official aggregation) + held-out accuracy per source with length bias."""
    inputs = dict(locals())
    from rmcore.evaluate.heldout import evaluate_heldout
    from rmcore.evaluate.rewardbench import evaluate_rewardbench

    logger = get_run_logger()
    config = eval
    key, out = EVALUATE.key(inputs), EVALUATE.output_dir(inputs)

    def build(tmp: Path) -> None:
        result: dict[str, Any] = {"key": key}
        if rewardbench_path:
            rb = evaluate_rewardbench(model_dir, rewardbench_path, tmp / "rewardbench", config)
            # Paths inside the summaries name the temp folder: consumers use dir + file names.
            result["rewardbench"] = {k: v for k, v in rb.items() if k != "paths"}
        if heldout_paths:
            ho = evaluate_heldout(
                model_dir, heldout_paths, tmp / "heldout", config, max_pairs=heldout_max_pairs, seed=seed
            )
            result["heldout"] = ho["sources"]
        io.write_json(result, tmp / "eval_summary.json")

    build_once(out, build)
    result = io.read_json(out / "eval_summary.json")
    result["dir"] = str(out)
    if result.get("rewardbench", {}).get("overall") is not None:
        logger.info("RewardBench overall %.2f", result["rewardbench"]["overall"])
    return result
