"""The evaluation task: model folder + RewardBench file + held-out pairs -> scores and reports.

Keyed by the model folder's content digest (``model_digest``, what the train task published),
not by the training stage's key: a model retrained under the same key into different weights
gets its own scores. Every input is checked against its recorded digest before it is scored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.logging import get_run_logger

from rmcore import io
from rmcore.evaluate.config import EvalConfig
from tasks import integrity
from tasks.caching import Stage, build_once

_REBUILD = "rmflow run RECIPE --data-dir DATA --out WORK"

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
    """RewardBench (exact official aggregation) + held-out accuracy per source with length bias.

    ``model_digest``: the content digest of ``model_dir`` (``tracking.registry.model_dir_digest``),
    checked before scoring."""
    inputs = dict(locals())
    from rmcore.evaluate.heldout import evaluate_heldout
    from rmcore.evaluate.rewardbench import evaluate_rewardbench

    logger = get_run_logger()
    config = eval
    key, out = EVALUATE.key(inputs), EVALUATE.output_dir(inputs)

    def build(tmp: Path) -> None:
        integrity.check_model(model_dir, model_digest, command=_REBUILD)
        if rewardbench_path and rewardbench_digest and Path(rewardbench_path).is_file():
            integrity.check_file(rewardbench_path, rewardbench_digest, command=_REBUILD)
        for source, path in heldout_paths.items():
            integrity.check_table(path, heldout_digests[source], command=_REBUILD)
        result: dict[str, Any] = {"key": key, "model_digest": model_digest}
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

    build_once(out, build, intact=EVALUATE.intact)
    result = io.read_json(out / "eval_summary.json")
    result["dir"] = str(out)
    if result.get("rewardbench", {}).get("overall") is not None:
        logger.info("RewardBench overall %.2f", result["rewardbench"]["overall"])
    return result
