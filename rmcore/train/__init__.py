"""Reward-model training, one concern per module:

- ``config``: ``TrainConfig`` (what a run is) and ``LossConfig``;
- ``run``: ``train_reward_model`` (the entry point) and ``TrainResult``;
- ``loop``: the optimizer-step loop (progress, metrics, evaluation, checkpoints);
- ``pairs``: the mixture's pairs encoded, micro-batches collated; ``batching``: length-grouped plans;
- ``setup`` / ``backbone``: the model as training runs it (precision, attention, packed pass, engine);
- ``engines``: plain PyTorch and DeepSpeed; ``master_weights``: bf16 compute, fp32 masters;
- ``optim``: AdamW and the schedule; ``loss``: the Bradley-Terry loss; ``evaluation``: held-out pairs;
- ``checkpoint``, ``distributed``, ``sinks``; CPU speed: ``packed_encoder``, ``packed_causal``,
  ``embedding_grad``, ``cpu_memory``, ``frozen_cache`` (frozen lower blocks run once per sequence).

The names below are re-exported here, loaded on first use (``rmcore.model`` imports
``packed_encoder``; an eager import of ``run`` here would import ``rmcore.model`` back).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "train_reward_model": "run", "TrainResult": "run",
    "MetricsSink": "sinks", "LoggingSink": "sinks", "ListSink": "sinks",
    "TorchEngine": "engines", "DeepSpeedEngine": "engines", "deepspeed_config": "engines",
    "make_optimizer": "optim", "make_scheduler": "optim", "lr_factor": "optim",
    "disable_dropout": "backbone", "evaluate_pairs": "evaluation", "load_mixture_pairs": "pairs",
    "bradley_terry_loss": "loss", "split_rewards": "loss",
}  # fmt: skip

__all__ = [
    "DeepSpeedEngine", "ListSink", "LoggingSink", "MetricsSink", "TorchEngine", "TrainResult",
    "bradley_terry_loss", "deepspeed_config", "disable_dropout", "evaluate_pairs", "load_mixture_pairs",
    "lr_factor", "make_optimizer", "make_scheduler", "split_rewards", "train_reward_model",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'rmcore.train' has no attribute {name!r}")
    return getattr(importlib.import_module(f"rmcore.train.{module}"), name)
