"""Training data: a mixture's pairs encoded for training, and micro-batches collated from them."""

from __future__ import annotations

import logging
import random
from pathlib import Path
from typing import Any

import torch

from rmcore.encoding import EncodedPairs, PairBatch, collate_pairs, encode_pairs
from rmcore.io import read_table
from rmcore.train.config import TrainConfig

log = logging.getLogger(__name__)


def load_mixture_pairs(
    config: TrainConfig, mixture_path: Path, tokenizer: Any
) -> tuple[EncodedPairs, EncodedPairs]:
    """Encode the mixture's train rows and held-out rows (split == eval_split, else a seeded share)."""
    train, held = mixture_rows(config, mixture_path)
    return encode_rows(config, tokenizer, train), encode_rows(config, tokenizer, held)


MIXTURE_COLUMNS = ("source", "prompt", "chosen", "rejected", "chosen_score", "rejected_score", "split")


def mixture_rows(config: TrainConfig, mixture_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The mixture's train rows and held-out rows (split == eval_split, else a seeded share of train)."""
    table = read_table(mixture_path, "mixture")
    rows = table.select(list(MIXTURE_COLUMNS)).to_pylist()
    train = [r for r in rows if r["split"] == "train"]
    held = [r for r in rows if r["split"] == config.evaluation.split]
    other = len(rows) - len(train) - len(held)
    if other:
        log.info("%s: %d rows with another split ignored", mixture_path, other)
    if not held and config.evaluation.fraction > 0 and len(train) > 1:
        order = list(range(len(train)))
        random.Random(config.seed).shuffle(order)
        n_eval = max(1, round(config.evaluation.fraction * len(train)))
        held = [train[i] for i in order[:n_eval]]
        train = [train[i] for i in sorted(order[n_eval:])]
    if not train:
        raise ValueError(
            f"{mixture_path}: no rows with split == 'train'; rebuild the mixture or check its recipe"
        )
    return train, held


def encode_rows(config: TrainConfig, tokenizer: Any, rows: list[dict[str, Any]]) -> EncodedPairs:
    """Mixture rows as encoded pairs (margins from the score gap when the loss asks)."""
    margins = None
    if config.loss.margin == "score_gap":
        margins = [
            config.loss.margin_scale * (r["chosen_score"] - r["rejected_score"])
            if r["chosen_score"] is not None and r["rejected_score"] is not None
            else 0.0
            for r in rows
        ]
    return encode_pairs(
        tokenizer,
        [r["chosen"] for r in rows],
        [r["rejected"] for r in rows],
        max_length=config.backbone.max_length,
        truncation=config.backbone.truncation,
        margins=margins,
        system_prompt=config.backbone.system_prompt,
    )


def collate_micro_batch(
    pairs: EncodedPairs, idx: list[int], pad_id: int, max_groups: int, overhead: int = 32
) -> PairBatch:
    """Collate pairs ``idx`` into at most ``max_groups`` padded length groups; a split is made only
    when it saves more than ``overhead`` padded tokens (TrainConfig.batching.group_overhead's default)."""
    return collate_pairs(
        [pairs.chosen[i] for i in idx],
        [pairs.rejected[i] for i in idx],
        pad_id=pad_id,
        margins=[pairs.margins[i] for i in idx] if pairs.margins is not None else None,
        max_groups=max_groups,
        group_overhead=overhead,
    )


def to_device(batch: PairBatch, device: torch.device) -> PairBatch:
    if device.type == "cpu":
        return batch
    for g in batch.groups:
        g.input_ids, g.attention_mask = g.input_ids.to(device), g.attention_mask.to(device)
    if batch.margins is not None:
        batch.margins = batch.margins.to(device)
    return batch
