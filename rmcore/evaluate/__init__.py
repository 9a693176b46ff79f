"""Evaluation stage: RewardBench v1 (official aggregation), held-out accuracy per source,
calibration and the length-bias report beside every accuracy. No prefect, no mlflow.

Entry points the task layer calls:

- ``evaluate_rewardbench(model_dir, rewardbench_path, out_dir, config) -> dict``
- ``evaluate_heldout(model_dir, pairs_paths, out_dir, config) -> dict``
- ``rewardbench_markdown(summary) -> str`` / ``heldout_markdown(summary) -> str``
"""

from rmcore.evaluate.config import EvalConfig
from rmcore.evaluate.heldout import evaluate_heldout
from rmcore.evaluate.report import heldout_markdown, rewardbench_markdown
from rmcore.evaluate.rewardbench import evaluate_rewardbench

__all__ = [
    "EvalConfig",
    "evaluate_heldout",
    "evaluate_rewardbench",
    "heldout_markdown",
    "rewardbench_markdown",
]
