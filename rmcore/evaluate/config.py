"""Typed settings for the evaluation stage (RewardBench, held-out pairs, calibration)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from rmcore.config import ConfigError


@dataclass(frozen=True)
class EvalConfig:
    """How a reward model is scored and reported. Built with ``rmcore.config.from_mapping``."""

    batch_size: int = 16
    """Conversations per forward pass (length-sorted batches; the scores do not depend on it)."""
    max_length: int | None = None
    """Token budget per conversation, truncated from the left; None = the model's own."""
    bf16: bool | Literal["auto"] = "auto"
    """Score in bfloat16 (see bf16_mode). "auto" (default): only where bf16 is faster than fp32
    on this device (rmcore/precision.py: a GPU with bf16, a CPU whose probe says so); False: fp32."""
    bf16_mode: Literal["autocast", "weights"] = "autocast"
    """bf16 autocast over fp32 weights (default: more accurate) or bf16 weights (a little faster)."""
    pooling: str = "auto"
    """Passed to ``load_reward_model``: where the reward is read ("auto" = as the model says)."""
    sample_per_subset: int | None = None
    """RewardBench: score a fixed number of rows per subset (a quick demo), said in the output."""
    seed: int = 0
    """Seed of the per-subset sample."""
    weights: Literal["official", "legacy-xstest-swap"] = "official"
    """RewardBench category weights: the current official table (reward-bench since 2024-09-10,
    rewardbench 0.1.4), or the earlier one with the two xstest weights swapped (to compare with
    scores published before that change)."""
    allow_missing_subsets: bool = False
    """Score an incomplete RewardBench file (reported as partial) instead of refusing."""
    hub_revision: str | None = "168d848cdbbea9764fae4a544dc9ca1e6cca4931"
    """Commit of ``allenai/reward-bench`` when loading from the hub (``data/filtered-00000-of-00001.parquet``;
    the revision public evaluation code pins, with that file's sha256 65473c20...)."""
    calibration_bins: int = 10
    """Equal-width confidence bins over [0.5, 1] for the calibration table and ECE."""
    plots: bool = True
    """Write PNG histograms and calibration plots."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.max_length is not None and self.max_length < 2:
            raise ConfigError(f"max_length must be >= 2 tokens, got {self.max_length}")
        if self.sample_per_subset is not None and self.sample_per_subset < 1:
            raise ConfigError(f"sample_per_subset must be >= 1, got {self.sample_per_subset}")
        if self.calibration_bins < 1:
            raise ConfigError(f"calibration_bins must be >= 1, got {self.calibration_bins}")
