"""One padding-free pass over all sequences of a micro-batch (causal LMs read at the last token).

Run as padded length groups, a causal LM still computes every pad position in every layer
(rmcore.train.batching keeps that waste low, not zero). Here the sequences of all groups are
laid end to end in one row (batch 1) with positions restarting at 0 for each sequence, the
layout of transformers' ``DataCollatorWithFlattening``: the linear layers, norms and MLPs run
on real tokens only, and attention runs per sequence, so no token sees another sequence. The
reward is the score head on the hidden state of each sequence's last token, as the stock
``*ForSequenceClassification`` forward reads it for right-padded batches (rmcore.encoding pads
on the right, and ``ensure_pad_token`` gives the model a pad id no real token uses).

Attention for the packed row: flash-attention-2 varlen on CUDA when it is installed and the
compute dtype is 16-bit; otherwise :func:`packed_attention`, registered with transformers'
``AttentionInterface`` as ``"rmflow_packed"``: one causal attention call per sequence,
sequences of equal length in one call (they lie side by side: the row is sorted by length).
On a CPU in bf16/fp16 a run of sequences up to ``MATMUL_ATTENTION_MAX`` tokens long runs as two
batched matmuls (:func:`causal_matmul_attention`), which forward and backward take about a third
less time than torch's CPU flash-attention kernel there (bench/RESULTS.md); fp32, longer runs,
sliding windows and CUDA use SDPA. The
model's attention implementation is switched only for the duration of the packed forward,
so evaluation and export run the stock forward unchanged. The modules called are the
model's own, so weights and checkpoints are unchanged: rewards and gradients equal the
stock forward's to float rounding (tests/test_packed_causal.py).

Used by training when ``TrainConfig.compute.packing`` allows it and :func:`unsupported_reason`
returns None; any other model runs the stock forward per padded group.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from rmcore.train.embedding_grad import lookup_rows
from rmcore.train.packed_encoder import checkpointing_on, reward_columns

Groups = list[tuple[torch.Tensor, torch.Tensor]]

PACKED_ATTENTION = "rmflow_packed"
VERIFIED_MODEL_TYPES = frozenset({"llama", "mistral", "qwen2", "qwen3"})
"""Backbones whose packed rewards and gradients are tested equal to the stock forward's."""
MATMUL_ATTENTION_MAX = 512
"""Longest sequence whose packed CPU attention in bf16/fp16 runs as plain matmuls: they keep the
[heads, length, length] probabilities for backward (2 bytes each: 4.7 MB per sequence and layer
at 512 tokens for SmolLM2's 9 heads), where the flash kernel keeps none."""


def unsupported_reason(hf: torch.nn.Module, pooling: str) -> str | None:
    """Why the packed causal pass cannot run ``hf`` (None when it can)."""
    reason = last_token_reason(hf, pooling)
    if reason is None and checkpointing_on(hf):
        # Backward recomputes each layer after the packed forward has restored the stock
        # attention, which would then attend across the packed sequences.
        return "gradient checkpointing is on"
    return reason


def last_token_reason(hf: torch.nn.Module, pooling: str) -> str | None:
    """Why rmflow's own calls cannot compute ``hf``'s last-token rewards (None when they can): a
    verified causal LM from transformers (the ``model.layers`` loop, rotary positions, a pad
    token, a one-output ``score`` head), as the packed pass and rmcore.train.frozen_cache need."""
    config = getattr(hf, "config", None)
    model_type = getattr(config, "model_type", None)
    if pooling != "last":
        return f"pooling is {pooling!r} (the packed causal pass reads the last token)"
    if model_type not in VERIFIED_MODEL_TYPES:
        return f"{model_type!r} is not a causal LM verified for packing ({', '.join(sorted(VERIFIED_MODEL_TYPES))})"
    if not type(hf).__module__.startswith("transformers."):
        return f"{type(hf).__name__} is custom (repository) code"
    if not getattr(config, "is_causal", True):
        return "the backbone is configured to attend both ways (is_causal=False)"
    if config.pad_token_id is None:
        return "no pad token id (the stock forward then reads the last position, padding included)"
    head = getattr(hf, "score", None)
    if not isinstance(head, torch.nn.Linear) or head.out_features != 1:
        return f"{type(hf).__name__} has no one-output Linear head named 'score'"
    return None


@dataclass(frozen=True)
class Packing:
    """Where each sequence of the groups lies in the packed row (sorted by length)."""

    ids: torch.Tensor
    """[tokens]: the real tokens of all sequences, end to end."""
    positions: torch.Tensor
    """[tokens]: each token's position within its own sequence."""
    last: torch.Tensor
    """[sequences]: the index in the row of each packed sequence's last token."""
    slots: torch.Tensor
    """[sequences]: for each sequence in group order, its place in the packed row."""
    sizes: list[int]
    """Rows per group."""
    runs: tuple[tuple[int, int, int], ...]
    """(first token, sequences, length) of each run of equal-length sequences."""
    lengths: torch.Tensor
    """[sequences + 1]: cumulative sequence lengths of the row (int32, flash-attention's cu_seqlens)."""
    longest: int


def pack(groups: Groups) -> Packing:
    """The packed layout of right-padded (input_ids, attention_mask) groups."""
    per_group = [right_padded_lengths(ids, mask, i) for i, (ids, mask) in enumerate(groups)]
    lengths = torch.cat(per_group)
    widths = torch.cat(
        [torch.full_like(n, ids.shape[1]) for (ids, _), n in zip(groups, per_group, strict=True)]
    )
    row_starts = widths.cumsum(0) - widths
    order = torch.argsort(lengths, stable=True)
    sorted_lengths = lengths[order]
    ends = sorted_lengths.cumsum(0)
    host = sorted_lengths.tolist()
    total = sum(host)
    seq_of_token = torch.repeat_interleave(
        torch.arange(len(host), device=lengths.device), sorted_lengths, output_size=total
    )
    positions = torch.arange(total, device=lengths.device) - (ends - sorted_lengths)[seq_of_token]
    flat_ids = torch.cat([ids.reshape(-1) for ids, _ in groups])
    slots = torch.empty_like(order)
    slots[order] = torch.arange(len(host), device=order.device)
    runs, start = [], 0
    for length, same in itertools.groupby(host):
        count = len(list(same))
        runs.append((start, count, length))
        start += count * length
    return Packing(
        ids=flat_ids[row_starts[order][seq_of_token] + positions],
        positions=positions,
        last=ends - 1,
        slots=slots,
        sizes=[ids.shape[0] for ids, _ in groups],
        runs=tuple(runs),
        lengths=torch.nn.functional.pad(ends, (1, 0)).to(torch.int32),
        longest=host[-1],
    )


def right_padded_lengths(ids: torch.Tensor, mask: torch.Tensor, group: int) -> torch.Tensor:
    """Real tokens per row, checking the rows are right-padded and not empty."""
    lengths = mask.sum(1, dtype=torch.long)
    right_padded = torch.arange(ids.shape[1], device=mask.device)[None, :] < lengths[:, None]
    if not torch.equal(mask.bool(), right_padded) or bool((lengths < 1).any()):
        raise ValueError(
            f"length group {group}: the packed causal pass needs right-padded rows of at least one "
            "real token (rmcore.encoding.collate_pairs pads on the right); set compute.packing: off "
            "for other layouts"
        )
    return lengths


def packed_last_rewards(hf: torch.nn.Module, groups: Groups) -> list[torch.Tensor]:
    """Last-token rewards (float32) of each (input_ids, attention_mask) group, one packed pass for all."""
    packing = pack(groups)
    embeds = lookup_rows(hf.base_model.get_input_embeddings(), packing.ids)[None]
    return rewards_of_packed(hf, packing, embeds)


def rewards_of_packed(hf: torch.nn.Module, packing: Packing, embeds: torch.Tensor) -> list[torch.Tensor]:
    """The rewards of a packed row whose ``embeds`` ([1, tokens, hidden]) enter the first block
    the backbone calls: the token embeddings, or, while rmcore.train.frozen_cache stands in for
    the frozen lower blocks, the hidden states those blocks output (kept from an earlier epoch)."""
    kernel, kwargs = _kernel(hf, packing, embeds)
    with _attention(hf, kernel):
        hidden = hf.base_model(
            inputs_embeds=embeds, position_ids=packing.positions[None], use_cache=False, **kwargs
        ).last_hidden_state[0]
    rewards = reward_columns(hf.score(hidden.index_select(0, packing.last)))
    return list(rewards[packing.slots].split(packing.sizes))


def _kernel(hf: torch.nn.Module, packing: Packing, embeds: torch.Tensor) -> tuple[str, dict[str, Any]]:
    """The attention implementation for the packed row and the keyword arguments it reads."""
    if embeds.is_cuda and (embeds.dtype != torch.float32 or torch.is_autocast_enabled("cuda")):
        from transformers.utils import is_flash_attn_2_available

        if is_flash_attn_2_available():
            return "flash_attention_2", {
                "cu_seq_lens_q": packing.lengths,
                "cu_seq_lens_k": packing.lengths,
                "max_length_q": packing.longest,
                "max_length_k": packing.longest,
            }
    from transformers import AttentionInterface

    AttentionInterface.register(PACKED_ATTENTION, packed_attention)  # a dict update: cheap, idempotent
    return PACKED_ATTENTION, {"rmflow_runs": packing.runs}


@contextmanager
def _attention(hf: torch.nn.Module, name: str) -> Iterator[None]:
    """``hf`` runs attention implementation ``name`` inside the block, its own one again after."""
    configs = {id(c): c for c in (hf.config, hf.base_model.config)}.values()
    saved = [c._attn_implementation_internal for c in configs]
    for config in configs:
        config._attn_implementation_internal = name
    try:
        yield
    finally:
        for config, old in zip(configs, saved, strict=True):
            config._attn_implementation_internal = old


def packed_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    sliding_window: int | None = None,
    rmflow_runs: tuple[tuple[int, int, int], ...] | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Causal attention within each packed sequence (transformers' attention-function interface).

    ``query`` is [1, heads, tokens, dim], ``key``/``value`` [1, kv heads, tokens, dim];
    returns [1, tokens, heads, dim]. ``rmflow_runs`` comes from :func:`pack`.
    """
    if rmflow_runs is None or query.shape[0] != 1:
        raise RuntimeError(
            f"attention {PACKED_ATTENTION!r} runs only inside rmcore.train.packed_causal.packed_last_rewards"
        )
    heads, dim = query.shape[1], query.shape[-1]
    outs = []
    for start, count, length in rmflow_runs:
        end = start + count * length
        q, k, v = (
            t[0, :, start:end].unflatten(1, (count, length)).transpose(0, 1) for t in (query, key, value)
        )
        out = _causal_attention(q, k, v, dropout=dropout, scaling=scaling, window=sliding_window)
        outs.append(out.transpose(1, 2).reshape(count * length, heads, dim))
    return torch.cat(outs)[None], None


def _causal_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    *,
    dropout: float,
    scaling: float | None,
    window: int | None,
) -> torch.Tensor:
    """Causal attention over [sequences, heads, length, dim]; a sliding window (if shorter than
    the sequences) masks keys ``window`` or more tokens back, as transformers' sliding masks do."""
    length = q.shape[2]
    mask = None
    if window is not None and length > window:
        i = torch.arange(length, device=q.device)
        back = i[:, None] - i[None, :]
        mask = (back >= 0) & (back < window)
    if mask is None and matmul_attention_fits(q, dropout):
        return causal_matmul_attention(q, k, v, scaling=scaling)
    gqa = q.shape[1] != k.shape[1]
    if gqa and mask is not None:
        k, v = (t.repeat_interleave(q.shape[1] // t.shape[1], dim=1) for t in (k, v))
        gqa = False
    return torch.nn.functional.scaled_dot_product_attention(
        q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=mask is None, scale=scaling, enable_gqa=gqa
    )


def matmul_attention_fits(q: torch.Tensor, dropout: float) -> bool:
    """Whether :func:`causal_matmul_attention` runs this call: a CPU, 16-bit, no dropout, at most
    ``MATMUL_ATTENTION_MAX`` tokens (where it beats the flash kernel and its memory stays small)."""
    return (
        q.device.type == "cpu"
        and q.dtype in (torch.bfloat16, torch.float16)
        and dropout == 0.0
        and q.shape[2] <= MATMUL_ATTENTION_MAX
    )


def causal_matmul_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, scaling: float | None
) -> torch.Tensor:
    """Causal attention as two batched matmuls: [sequences, heads, length, dim] queries against
    [sequences, kv heads, length, dim] keys and values (grouped-query: head h reads kv head
    h // (heads / kv heads), as ``repeat_kv`` does). The query heads sharing a kv head are stacked
    along the rows, so keys and values are never copied per head; the scale and the causal mask
    enter the score matmul itself (``baddbmm``); softmax in the compute dtype (torch's CPU kernel
    accumulates bf16 in fp32)."""
    count, heads, length, dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    scores = torch.baddbmm(
        _causal_bias(length, group, q.dtype, q.device),
        q.reshape(count * kv_heads, group * length, dim),
        k.reshape(count * kv_heads, length, dim).transpose(1, 2),
        alpha=scale,
    )
    out = torch.bmm(scores.softmax(-1), v.reshape(count * kv_heads, length, dim))
    return out.view(count, heads, length, dim)


@functools.lru_cache(maxsize=64)
def _causal_bias(length: int, group: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """[group * length, length]: 0 on and below the diagonal, -inf above, once per query head of a group."""
    bias = torch.full((length, length), float("-inf"), dtype=dtype, device=device).triu(1)
    return bias.repeat(group, 1)
