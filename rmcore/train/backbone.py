"""The backbone as training loads it: a pad-safe ``RewardModel`` from the config, dropout off,
optionally only its top layers trainable."""

from __future__ import annotations

import logging

import torch

from rmcore.config import ConfigError
from rmcore.model import RewardModel, load_reward_model
from rmcore.train.config import TrainConfig


def load_model(config: TrainConfig) -> RewardModel:
    """The backbone with a one-output reward head, or for ``model_type: regression`` one output
    per rated attribute, combined into the reward by the recipe's weights."""
    from data_contracts import RATED_ATTRIBUTES

    regression = config.model_type == "regression"
    model = load_reward_model(
        config.model,
        pooling=config.backbone.pooling,
        max_length=config.backbone.max_length,
        trust_remote_code=config.backbone.trust_remote_code,
        labels=RATED_ATTRIBUTES if regression else None,
    )
    if regression:
        from rmcore.train.regression import combination_vector

        model.combination = combination_vector(config.regression.weights)
    model.truncation = config.backbone.truncation
    model.system_prompt = config.backbone.system_prompt
    return model


log = logging.getLogger(__name__)


def transformer_layers(hf: torch.nn.Module) -> torch.nn.ModuleList:
    """The stack of transformer blocks: ``layers`` (Llama, Qwen, Mistral, Gemma) or ``encoder.layer`` (BERT)."""
    base = hf.base_model
    for path in ("layers", "encoder.layer", "h", "decoder.layers"):
        node = base
        for name in path.split("."):
            node = getattr(node, name, None)
        if isinstance(node, torch.nn.ModuleList):
            return node
    raise ConfigError(f"{type(hf).__name__}: no transformer layer list found; trainable_layers needs one")


def freeze_lower_layers(model: RewardModel, trainable_layers: int | None) -> None:
    """Leave only the top ``trainable_layers`` blocks, the final norm and the head trainable."""
    if trainable_layers is None:
        return
    layers = transformer_layers(model.hf)
    if trainable_layers > len(layers):
        raise ConfigError(f"trainable_layers is {trainable_layers}, but {model.hf.config.model_type} has {len(layers)} layers")
    frozen = [model.hf.get_input_embeddings(), *layers[: len(layers) - trainable_layers]]
    if hasattr(model.hf.base_model, "embeddings"):  # BERT: position and token-type embeddings too
        frozen.append(model.hf.base_model.embeddings)
    for module in frozen:
        module.requires_grad_(False)
    total = sum(p.numel() for p in model.parameters())
    train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info(
        "training the top %d of %d layers + head: %s of %s parameters (embeddings and lower layers frozen)",
        trainable_layers, len(layers), f"{train:,}", f"{total:,}",
    )  # fmt: skip


def disable_dropout(model: torch.nn.Module) -> None:
    """Every dropout off: ``Dropout`` modules, and the attention-probability dropout that
    Llama-family attention reads from a float ``attention_dropout`` attribute in train mode."""
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        rate = getattr(module, "attention_dropout", None)
        if isinstance(rate, (int, float)) and rate:
            module.attention_dropout = 0.0
