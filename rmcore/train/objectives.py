"""What one micro-batch's loss is made of, per model type (``TrainConfig.model_type``):

- ``bt``: pairs, both sides' rewards from one logical forward, the Bradley-Terry loss;
- ``listwise``: whole rankings, every response of every ranking of the micro-batch in one forward
  (each response encoded once, where all-pairs Bradley-Terry encodes it once per pair it is in),
  the Plackett-Luce loss (``rmcore.train.listwise_loss``);
- ``regression``: rated responses, one output per attribute, the masked MSE
  (``rmcore.train.regression``).

The loop (``rmcore.train.loop``) batches items by ``lengths`` and calls ``micro_loss`` per
micro-batch with its autocast context (the forward runs under it, the loss in float32); each objective says how many real and processed tokens it ran.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from rmcore.encoding import EncodedPairs, collate_sequences
from rmcore.train.batching import pair_rewards
from rmcore.train.items import EncodedGroups, EncodedRated, encode_groups, load_rated
from rmcore.train.listwise_loss import plackett_luce_loss
from rmcore.train.loss import bradley_terry_loss, split_rewards
from rmcore.train.pairs import collate_micro_batch, encode_rows, to_device
from rmcore.train.regression import masked_mse_loss


@dataclass
class MicroLoss:
    loss: torch.Tensor
    metrics: dict[str, float]
    real: int
    """Real (non-pad) tokens the forward ran."""
    processed: int
    """Tokens the forward computed (padding included; a packed pass computes none)."""


class PairObjective:
    kind = "bt"
    shown = ("loss", "accuracy")  # the metrics of the progress line

    def __init__(self, config, pairs: EncodedPairs, pad_id: int, device, *, packed: bool, cache=None) -> None:
        self.config, self.items, self.pad_id, self.device, self.packed = config, pairs, pad_id, device, packed
        self.cache = cache  # a rmcore.train.frozen_cache.FrozenCache, or None
        self.lengths = [len(c) + len(r) for c, r in zip(pairs.chosen, pairs.rejected)]
        self.stats = {"train_pairs": len(pairs)}

    def micro_loss(self, module, micro: list[int], autocast) -> MicroLoss:
        cfg = self.config
        b = to_device(
            collate_micro_batch(
                self.items, micro, self.pad_id, cfg.batching.max_groups, cfg.batching.group_overhead
            ),
            self.device,
        )
        with autocast:
            if self.cache is not None:
                r_c, r_r = split_rewards(self.cache.rewards(module, b, micro))
            else:
                r_c, r_r = split_rewards(pair_rewards(module, b))
        loss, m = bradley_terry_loss(
            r_c, r_r, margin=b.margins, center_coef=cfg.loss.center_coef, hinge=cfg.loss.hinge
        )
        return MicroLoss(loss, m, b.real_tokens, b.real_tokens if self.packed else b.processed_tokens)


class _SequenceObjective:
    """Items made of whole sequences, run through one ``collate_sequences`` forward per micro-batch."""

    def __init__(self, config, pad_id: int, device, *, packed: bool) -> None:
        self.config, self.pad_id, self.device, self.packed = config, pad_id, device, packed

    def _rewards(self, module, seqs: list[list[int]], autocast) -> tuple[torch.Tensor, int, int]:
        cfg = self.config
        b = collate_sequences(
            seqs,
            pad_id=self.pad_id,
            max_groups=cfg.batching.max_groups,
            group_overhead=cfg.batching.group_overhead,
        )
        with autocast:
            rewards = pair_rewards(module, to_device(b, self.device))
        return rewards, b.real_tokens, b.real_tokens if self.packed else b.processed_tokens


class ListwiseObjective(_SequenceObjective):
    kind = "listwise"
    shown = ("loss", "accuracy", "top1")

    def __init__(self, config, groups: EncodedGroups, pad_id: int, device, *, packed: bool) -> None:
        super().__init__(config, pad_id, device, packed=packed)
        self.items, self.lengths = groups, groups.lengths
        self.stats = {"train_groups": len(groups), "train_responses": groups.stats.get("responses", 0)}

    def micro_loss(self, module, micro: list[int], autocast) -> MicroLoss:
        seqs = [s for g in micro for s in self.items.seqs[g]]
        rewards, real, processed = self._rewards(module, seqs, autocast)
        k = max(len(self.items.seqs[g]) for g in micro)
        padded = rewards.new_zeros(len(micro), k)
        tiers = torch.zeros(len(micro), k, dtype=torch.long)
        mask = torch.zeros(len(micro), k, dtype=torch.bool)
        start = 0
        for row, g in enumerate(micro):
            n = len(self.items.seqs[g])
            padded[row, :n] = rewards[start : start + n]  # autograd flows through the copy
            tiers[row, :n] = torch.as_tensor(self.items.tiers[g])
            mask[row, :n] = True
            start += n
        loss, m = plackett_luce_loss(padded, tiers.to(padded.device), mask.to(padded.device))
        return MicroLoss(loss, m, real, processed)


class RegressionObjective(_SequenceObjective):
    kind = "regression"
    shown = ("loss", "rmse")

    def __init__(self, config, rated: EncodedRated, pad_id: int, device, *, packed: bool) -> None:
        super().__init__(config, pad_id, device, packed=packed)
        self.items, self.lengths = rated, rated.lengths
        self.targets = torch.as_tensor(rated.targets)
        self.stats = {"train_responses": len(rated)}

    def micro_loss(self, module, micro: list[int], autocast) -> MicroLoss:
        model = getattr(module, "module", module)  # the RewardModel under a DeepSpeed engine
        model.raw_outputs = True
        try:
            outputs, real, processed = self._rewards(module, [self.items.seqs[i] for i in micro], autocast)
        finally:
            model.raw_outputs = False
        loss, m = masked_mse_loss(outputs, self.targets[micro].to(outputs.device))
        return MicroLoss(loss, m, real, processed)


def train_items(config, tokenizer, train_rows: list[dict], rated_path=None):
    """The training items of ``config.model_type``: encoded pairs, rankings or rated responses."""
    if config.model_type == "listwise":
        return encode_groups(config, tokenizer, train_rows)
    if config.model_type == "regression":
        return load_rated(config, Path(rated_path), tokenizer, "train")
    return encode_rows(config, tokenizer, train_rows)


def make_objective(config, items, pad_id: int, device, *, packed: bool, cache=None):
    if config.model_type == "listwise":
        return ListwiseObjective(config, items, pad_id, device, packed=packed)
    if config.model_type == "regression":
        return RegressionObjective(config, items, pad_id, device, packed=packed)
    return PairObjective(config, items, pad_id, device, packed=packed, cache=cache)
