"""The evaluation task: model folder + RewardBench file + held-out pairs -> scores and reports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task
from prefect.logging import get_run_logger

from rmcore import io
from rmcore.evaluate.config import EvalConfig
from tasks.caching import StageCache, build_once, stage_key


def _eval_dir(key: str, p: dict[str, Any]) -> Path:
    return Path(p["work"]) / "eval" / key


@task(
    name="evaluate",
    task_run_name="evaluate",
    cache_policy=StageCache(
        stage="evaluate",
        key_params=("eval", "model_digest", "rewardbench_digest", "heldout_digests", "work"),
        output_of=_eval_dir,
    ),
    persist_result=True,
    result_serializer="json",
)
def evaluate_task(
    eval: EvalConfig,
    model_dir: str,
    model_digest: str,
    rewardbench_path: str | None,
    rewardbench_digest: str | None,
    heldout_paths: dict[str, str],
    heldout_digests: dict[str, str],
    work: str,
) -> dict:
    """RewardBench (exact official aggregation) + held-out accuracy per source with length bias."""
    from rmcore.evaluate.heldout import evaluate_heldout
    from rmcore.evaluate.rewardbench import evaluate_rewardbench

    logger = get_run_logger()
    config = eval
    params = {
        "eval": eval,
        "model_digest": model_digest,
        "rewardbench_digest": rewardbench_digest,
        "heldout_digests": heldout_digests,
        "work": work,
    }
    key = stage_key("evaluate", **params)
    out = _eval_dir(key, params)

    def build(tmp: Path) -> None:
        result: dict[str, Any] = {"key": key}
        if rewardbench_path:
            rb = evaluate_rewardbench(model_dir, rewardbench_path, tmp / "rewardbench", config)
            # Paths inside the summaries name the temp folder: consumers use dir + file names.
            result["rewardbench"] = {k: v for k, v in rb.items() if k != "paths"}
        if heldout_paths:
            ho = evaluate_heldout(model_dir, heldout_paths, tmp / "heldout", config)
            result["heldout"] = ho["sources"]
        io.write_json(result, tmp / "eval_summary.json")

    build_once(out, build)
    result = io.read_json(out / "eval_summary.json")
    result["dir"] = str(out)
    if result.get("rewardbench", {}).get("overall") is not None:
        logger.info("RewardBench overall %.2f", result["rewardbench"]["overall"])
    return result
