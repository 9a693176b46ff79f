"""The backbone as training loads it: a pad-safe ``RewardModel`` from the config, dropout off."""

from __future__ import annotations

import torch

from rmcore.model import RewardModel, load_reward_model
from rmcore.train.config import TrainConfig


def load_model(config: TrainConfig) -> RewardModel:
    model = load_reward_model(
        config.model,
        pooling=config.pooling,
        max_length=config.max_length,
        trust_remote_code=config.trust_remote_code,
    )
    model.truncation = config.truncation
    return model


def disable_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
