"""The model as training runs it: loaded, precision chosen, attention kernel, packed pass, engine."""

from __future__ import annotations

import logging

import torch

from rmcore.model import RewardModel
from rmcore.precision import Precision, Probe, resolve_for_model
from rmcore.train import packed_causal, packed_encoder
from rmcore.train.config import TrainConfig
from rmcore.train.engines import DeepSpeedEngine, TorchEngine
from rmcore.train.master_weights import MasterWeightsEngine

log = logging.getLogger(__name__)


def training_precision(
    config: TrainConfig, model: RewardModel, device: torch.device, probe: Probe | None = None
) -> Precision:
    """bf16 or fp32 for this model on this device (``bf16: auto`` measures; rmcore.precision)."""
    return resolve_for_model(config.compute.bf16, device, model.hf.config, probe=probe)


def make_engine(config: TrainConfig, model: RewardModel, total: int, bf16: bool, device: torch.device):
    """DeepSpeed when configured; else bf16 with fp32 master weights or plain PyTorch (+ autocast)."""
    if config.deepspeed:
        return DeepSpeedEngine(config, model, total, bf16)
    mode = config.compute.bf16_mode
    if mode == "auto":
        mode = "autocast" if device.type == "cuda" else "master_weights"
    if bf16 and mode == "master_weights":
        return MasterWeightsEngine(config, model, total)
    return TorchEngine(config, model, total)


def set_attention(model: RewardModel, config: TrainConfig, device: torch.device, bf16: bool) -> None:
    """The attention kernel for training. "auto" on CPU: eager in bf16 (the CPU flash kernel's
    bf16 backward is slower than plain matmuls at these lengths: 2,562-2,591 vs 3,003-3,483
    real tokens/s on MiniLM), SDPA in fp32 (as fast as eager there, median step 0.739 vs
    0.758 s in an interleaved A/B on AVX2, and it keeps no (length x length) score matrices
    for backward); elsewhere the model's default (bench/RESULTS.md)."""
    choice = config.compute.attn_implementation
    if choice == "auto":
        if device.type != "cpu":
            return
        choice = "eager" if bf16 else "sdpa"
    if getattr(model.hf.config, "_attn_implementation", None) != choice:
        model.hf.set_attn_implementation(choice)
        log.info("attention implementation: %s", choice)


def set_packing(model: RewardModel, config: TrainConfig) -> None:
    """One packed pass per micro-batch where the model supports it (not under DeepSpeed): the
    causal one for last-token pooling, the encoder one otherwise."""
    kind, packing = ("causal", packed_causal) if model.pooling == "last" else ("encoder", packed_encoder)
    reason = "packing is off" if config.compute.packing == "off" else None
    if reason is None and config.deepspeed:
        reason = "DeepSpeed runs the engine's own forward"
    reason = reason or packing.unsupported_reason(model.hf, model.pooling)
    model.packed = reason is None
    log.info("packed %s pass: %s", kind, "on" if model.packed else f"off ({reason})")
