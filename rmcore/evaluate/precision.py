"""Numeric precision of scoring: fp32, fp32 weights under bf16 autocast, or bf16 weights.

Measured on a 2-core CPU with fast bf16 (AMX), MiniLM on RewardBench, same runs
(bench/RESULTS.md): against batched fp32, bf16 autocast scored 1.26-1.33x faster with a
median reward error of about 1e-4; bf16 weights 1.48-1.73x faster but less accurate (bf16
residual stream and layer norms; on 460 pairs overall -0.15 point vs -0.001 for autocast).
Autocast is the default bf16 mode; it is also the usual choice on a GPU. Either way the
reward head runs in fp32 (``rmcore.scoring.fp32_reward_head``), so rewards are not rounded
into ties. Whether bf16 is used at all: ``EvalConfig.bf16`` ("auto" by default) resolved by
``rmcore.precision`` on the device the model runs on (on an AVX2-only CPU bf16 is ~150x
slower than fp32, so "auto" scores in fp32 there).
"""

from __future__ import annotations

import dataclasses
import os

from rmcore.evaluate.config import EvalConfig
from rmcore.precision import Precision, Probe, resolve_for_model


def precision_name(config: EvalConfig) -> str:
    """What a config with a resolved ``bf16`` (True/False) scores in."""
    if config.bf16 is not True:
        return "fp32"
    return "bf16 weights" if config.bf16_mode == "weights" else "bf16 autocast"


def load_model_for_eval(
    model_dir: str | os.PathLike[str], config: EvalConfig, probe: Probe | None = None
) -> tuple[object, EvalConfig, Precision]:
    """The reward model in the dtype scoring uses, the config with ``bf16`` resolved to
    True/False (``bf16: auto`` measured on this device), and the precision with its reason."""
    import torch

    from rmcore.model import load_reward_model

    model = load_reward_model(str(model_dir), pooling=config.pooling, max_length=config.max_length)
    device = next(model.parameters()).device
    precision = resolve_for_model(config.bf16, device, model.hf.config, probe=probe)
    resolved = dataclasses.replace(config, bf16=precision.bf16)
    if precision.bf16 and config.bf16_mode == "weights":
        model.hf.to(torch.bfloat16)
    return model, resolved, precision


def autocast_dtype(config: EvalConfig):
    """torch.bfloat16 when the (resolved) config asks for autocast, else None (the model's dtype)."""
    if config.bf16 is True and config.bf16_mode == "autocast":
        import torch

        return torch.bfloat16
    return None
