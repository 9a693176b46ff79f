"""Numeric precision of scoring: fp32, fp32 weights under bf16 autocast, or bf16 weights.

Measured on this 2-core CPU with MiniLM on RewardBench, same runs (bench/RESULTS.md):
against batched fp32, bf16 autocast scored 1.26-1.33x faster with a median reward error
of about 1e-4; bf16 weights 1.48-1.73x faster but less accurate (bf16 residual stream and
layer norms; on 460 pairs overall -0.15 point vs -0.001 for autocast). Autocast is the
default bf16 mode; it is also the usual choice on a GPU. Either way the reward head runs
in fp32 (``rmcore.scoring.fp32_reward_head``), so rewards are not rounded into ties.
"""

from __future__ import annotations

import os

from rmcore.evaluate.config import EvalConfig


def precision_name(config: EvalConfig) -> str:
    if not config.bf16:
        return "fp32"
    return "bf16 weights" if config.bf16_mode == "weights" else "bf16 autocast"


def load_model_for_eval(model_dir: str | os.PathLike[str], config: EvalConfig):
    """The reward model in the dtype the config asks for (bf16 weights or fp32)."""
    import torch

    from rmcore.model import load_reward_model

    dtype = torch.bfloat16 if config.bf16 and config.bf16_mode == "weights" else None
    return load_reward_model(
        str(model_dir), pooling=config.pooling, max_length=config.max_length, dtype=dtype
    )


def autocast_dtype(config: EvalConfig):
    """torch.bfloat16 when the config asks for autocast, else None (the model's own dtype)."""
    if config.bf16 and config.bf16_mode == "autocast":
        import torch

        return torch.bfloat16
    return None
