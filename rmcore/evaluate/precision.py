"""Numeric precision of scoring: fp32, bf16 weights, or fp32 weights under bf16 autocast.

Measured on this 2-core CPU with MiniLM (bench/bench_score.py): bf16 *weights* score
about 1.8x faster than fp32; bf16 *autocast* barely helps (it casts the fp32 weights at
every matmul and keeps a fp32 residual stream). Autocast stays available: it is the more
accurate of the two and the usual choice on a GPU.
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
