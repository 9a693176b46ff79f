"""The frozen lower blocks run once per training sequence (``compute.cache_frozen``).

With ``backbone.trainable_layers: N`` on an L-block backbone, the embeddings and the lower L - N
blocks are frozen: what they output for a sequence is the same in every epoch, yet each epoch
recomputes it. For SmolLM2 with 6 of 30 blocks trained that is 24 blocks' forward per step
against 6 blocks' forward and backward. Here the hidden states entering the first trainable
block are kept, per training sequence (each side of each pair), the first time they are computed:

- a micro-batch with a sequence not kept yet runs the normal forward (packed or padded, as
  without the cache), and a forward hook on the last frozen block copies the real tokens' rows
  of its output (they depend only on the sequence's own tokens: causal attention, positions
  from 0 in both layouts, pads on the right);
- a micro-batch whose sequences are all kept runs from there: the frozen blocks are swapped for
  pass-throughs for the call, the kept rows enter as ``inputs_embeds``, and the backbone's own
  forward does the rest (rotary embeddings from the same position ids, the same attention and
  masks, the trainable blocks, the final norm), the head read at each last real token.

The blocks after the cut see the very tensors they would have seen, so rewards and gradients are
those of the run without the cache (tests/test_frozen_cache.py). The rows are kept in the dtype
the frozen blocks output (bf16 with bf16 master weights, else fp32: autocast keeps the residual
stream in fp32) on the training device, in one tensor with an offset per sequence. Filled lazily
rather than in a pre-pass: epoch 1 computes the frozen blocks anyway, so keeping their output
costs a copy, a resumed run refills as it goes, and there is no second way to run the frozen
part. Not saved in checkpoints; evaluation runs the normal forward.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from rmcore.encoding import EncodedPairs, PairBatch
from rmcore.model import RewardModel
from rmcore.train.backbone import transformer_layers
from rmcore.train.batching import in_block_order
from rmcore.train.config import TrainConfig
from rmcore.train.packed_causal import (
    Groups,
    Packing,
    last_token_reason,
    pack,
    rewards_of_packed,
    right_padded_lengths,
)

log = logging.getLogger(__name__)

MEMORY_SHARE = 0.5
"""``auto`` keeps the cache only when it needs at most this share of the memory available at the
start (CPU: MemAvailable; CUDA: free device memory): activations and optimizer state need the rest."""


class Passthrough(torch.nn.Module):
    """Stands in for a frozen block whose output is already known: hands the hidden states on, as
    a tensor or, where the blocks return tuples (transformers before 4.54), as ``(hidden,)``."""

    def __init__(self, as_tuple: bool) -> None:
        super().__init__()
        self.as_tuple = as_tuple

    def forward(self, hidden_states: torch.Tensor, *args, **kwargs) -> torch.Tensor | tuple[torch.Tensor]:
        return (hidden_states,) if self.as_tuple else hidden_states


@contextmanager
def skipping(layers: torch.nn.ModuleList, count: int, *, as_tuple: bool = False) -> Iterator[None]:
    """The first ``count`` blocks of ``layers`` are pass-throughs inside the block, themselves after."""
    saved = list(layers[:count])
    skip = Passthrough(as_tuple)
    for i in range(count):
        layers[i] = skip
    try:
        yield
    finally:
        for i, block in enumerate(saved):
            layers[i] = block


@contextmanager
def outputs_of(block: torch.nn.Module) -> Iterator[list[torch.Tensor | tuple[torch.Tensor, ...]]]:
    """The outputs of ``block``'s calls inside the block, in call order."""
    seen: list[torch.Tensor | tuple[torch.Tensor, ...]] = []
    handle = block.register_forward_hook(lambda _m, _i, out: seen.append(out))
    try:
        yield seen
    finally:
        handle.remove()


class FrozenCache:
    """The hidden states entering block ``first`` of every training sequence computed so far.

    Sequence keys: pair ``p``'s chosen side is ``p``, its rejected side ``pairs + p``.
    """

    def __init__(self, first: int, lengths: list[int]) -> None:
        self.first = first
        self.lengths = lengths
        self.offsets = [0]
        for n in lengths:
            self.offsets.append(self.offsets[-1] + n)
        self.kept = [False] * len(lengths)
        self.count = 0
        self.rows: torch.Tensor | None = None
        """[all tokens, hidden], allocated at the first copy (its dtype and device)."""
        self.as_tuple = False
        """Whether the blocks return tuples (seen at the first copy)."""

    def rewards(self, model: RewardModel, batch: PairBatch, pairs: list[int]) -> torch.Tensor:
        """``rmcore.train.batching.pair_rewards`` for the micro-batch of train pairs ``pairs``."""
        half = len(self.lengths) // 2
        keys = [
            [pairs[r] if r < len(pairs) else half + pairs[r - len(pairs)] for r in g.rows.tolist()]
            for g in batch.groups
        ]
        groups = [(g.input_ids, g.attention_mask) for g in batch.groups]
        layers = transformer_layers(model.hf)
        if all(self.kept[k] for ks in keys for k in ks):
            with skipping(layers, self.first, as_tuple=self.as_tuple):
                parts = self._from_kept(model, groups, keys)
        else:
            with outputs_of(layers[self.first - 1]) as outs:
                parts = model.grouped_rewards(groups)
            self.as_tuple = isinstance(outs[0], tuple)
            self._keep(model, groups, keys, [(o[0] if self.as_tuple else o).detach() for o in outs])
        return in_block_order(batch, parts)

    def _from_kept(self, model: RewardModel, groups: Groups, keys: list[list[int]]) -> list[torch.Tensor]:
        hf = model.hf
        if model.packed:
            packing = pack(groups)
            embeds = torch.cat([self._get(k) for k in _packed_order(packing, keys)])
            return rewards_of_packed(hf, packing, embeds[None])
        parts = []
        for i, ((ids, mask), ks) in enumerate(zip(groups, keys, strict=True)):
            lengths = right_padded_lengths(ids, mask, i)
            embeds = torch.nn.utils.rnn.pad_sequence([self._get(k) for k in ks], batch_first=True)
            embeds = torch.nn.functional.pad(embeds, (0, 0, 0, ids.shape[1] - embeds.shape[1]))
            hidden = hf.base_model(
                inputs_embeds=embeds, attention_mask=mask, use_cache=False
            ).last_hidden_state
            logits = hf.score(hidden)  # as the stock head: every position, then the last real token's
            parts.append(logits[torch.arange(len(ks), device=logits.device), lengths - 1, 0].float())
        return parts

    def _keep(
        self, model: RewardModel, groups: Groups, keys: list[list[int]], outs: list[torch.Tensor]
    ) -> None:
        """Copy the real tokens' rows of the last frozen block's outputs of a normal forward."""
        if model.packed:
            packing = pack(groups)
            ends = packing.lengths.tolist()
            rows = outs[0][0]
            seqs = [(k, rows[ends[j] : ends[j + 1]]) for j, k in enumerate(_packed_order(packing, keys))]
        else:
            seqs = [
                (k, out[row, :n])
                for out, ks, (_, mask) in zip(outs, keys, groups, strict=True)
                for row, (k, n) in enumerate(zip(ks, mask.sum(1).tolist(), strict=True))
            ]
        added = 0
        for key, hidden in seqs:
            if hidden.shape[0] != self.lengths[key]:
                raise RuntimeError(
                    f"frozen-layer cache: training sequence {key} has {hidden.shape[0]} tokens in this "
                    f"micro-batch but {self.lengths[key]} when encoded; set compute.cache_frozen: off"
                )
            if self.kept[key]:
                continue
            if self.rows is None:
                self.rows = hidden.new_empty(self.offsets[-1], hidden.shape[-1])
            self.rows[self.offsets[key] : self.offsets[key + 1]] = hidden
            self.kept[key] = True
            added += 1
        self.count += added
        if added and self.count == len(self.kept):
            gb = self.rows.numel() * self.rows.element_size() / 1e9
            log.info(
                "frozen-layer cache full: %d sequences, %s tokens, %.2f GB (%s)",
                self.count, f"{self.offsets[-1]:,}", gb, str(self.rows.dtype).removeprefix("torch."),
            )  # fmt: skip

    def _get(self, key: int) -> torch.Tensor:
        return self.rows[self.offsets[key] : self.offsets[key + 1]]


def _packed_order(packing: Packing, keys: list[list[int]]) -> list[int]:
    """The sequence keys in the packed row's order (``keys`` is in group order)."""
    flat = [k for ks in keys for k in ks]
    order = [0] * len(flat)
    for i, slot in enumerate(packing.slots.tolist()):
        order[slot] = flat[i]
    return order


def frozen_cache(
    config: TrainConfig,
    model: RewardModel,
    train_pairs: EncodedPairs,
    *,
    total: int,
    per_epoch: int,
    dtype: torch.dtype,
    device: torch.device,
    world: int = 1,
) -> FrozenCache | None:
    """The cache this run keeps (``compute.cache_frozen``), or None; the log says which and why.

    ``dtype`` is what the forward computes in (the working copy's parameters); ``total`` and
    ``per_epoch`` are optimizer steps."""
    lengths = [len(s) for s in train_pairs.chosen] + [len(s) for s in train_pairs.rejected]
    hidden = model.hf.config.get_text_config().hidden_size
    size = sum(lengths) * hidden * dtype.itemsize
    reason, first = _off_reason(config, model, total=total, per_epoch=per_epoch, world=world)
    if reason is None:
        available = _available_bytes(device)
        if available is not None and size > MEMORY_SHARE * available:
            reason = f"it would take {size / 1e9:.1f} GB, over half of the {available / 1e9:.1f} GB available"
    if reason is not None:
        log.info("frozen-layer cache: off (%s)", reason)
        return None
    log.info(
        "frozen-layer cache: on (the %d frozen blocks run once per training sequence, in epoch 1; "
        "later epochs run the top %d from kept hidden states: %d sequences, ~%.2f GB)",
        first, len(transformer_layers(model.hf)) - first, len(lengths), size / 1e9,
    )  # fmt: skip
    return FrozenCache(first, lengths)


def _off_reason(
    config: TrainConfig, model: RewardModel, *, total: int, per_epoch: int, world: int
) -> tuple[str | None, int]:
    """Why ``auto`` keeps no cache (None: it does), and the index of the first trainable block."""
    trainable = config.backbone.trainable_layers
    if config.compute.cache_frozen == "off":
        return "cache_frozen is off", 0
    if config.model_type != "bt":
        return f"the cache keeps pairs' hidden states; model_type {config.model_type} trains on other items", 0
    if trainable is None:
        return "backbone.trainable_layers is not set: every block trains", 0
    layers = transformer_layers(model.hf)
    first = len(layers) - trainable
    if first <= 0:
        return f"trainable_layers {trainable} covers all {len(layers)} blocks: none is frozen", 0
    if config.deepspeed or world > 1:
        return "DeepSpeed runs the engine's own forward", first
    reason = last_token_reason(model.hf, model.pooling)
    if reason is not None:
        return f"the cache implements last-token rewards of verified causal LMs: {reason}", first
    frozen = {
        "embeddings": model.hf.get_input_embeddings(),
        **{f"layers.{i}": layers[i] for i in range(first)},
    }
    dropout = _dropout(frozen)
    if dropout is not None:
        return (
            f"dropout in the frozen blocks ({dropout}): each epoch draws new masks, kept outputs would differ",
            first,
        )
    if total <= per_epoch:
        return f"{total} steps, one pass over the pairs: each sequence runs once, nothing to reuse", first
    return None, first


def _dropout(modules: dict[str, torch.nn.Module]) -> str | None:
    """The first dropout that is on in ``modules`` in train mode (a ``Dropout`` module, or the
    attention dropout rate Llama-family attention reads), named; None when all are off."""
    for prefix, top in modules.items():
        for name, module in top.named_modules(prefix=prefix):
            if isinstance(module, torch.nn.modules.dropout._DropoutNd):
                rate = module.p
            else:
                rate = getattr(module, "attention_dropout", 0)
            if module.training and isinstance(rate, (int, float)) and rate > 0:
                return f"{name} p={rate}"
    return None


def _available_bytes(device: torch.device) -> int | None:
    """Free device memory (CUDA) or MemAvailable (Linux); None when unknown."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    meminfo = Path("/proc/meminfo")
    if not meminfo.exists():
        return None
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return None
