"""Tokenisation of conversations and the pair collator (chosen block, then rejected block).

A conversation is a list of ``{role, content}`` messages. With a chat template the
tokenizer renders it (the template writes its own BOS/EOS, so the text is tokenised
without adding special tokens again: no doubled BOS); without one, a plain-text fallback
``Human: ...\\n\\nAssistant: ...`` is tokenised with the tokenizer's usual specials.
Sequences longer than ``max_length`` are cut from the left (the answer at the end is what
the reward judges; a leading BOS/CLS is kept) or dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import torch

log = logging.getLogger(__name__)

Truncation = Literal["left", "drop"]
SystemPrompt = Literal["template", "none"]
"""A conversation without a system message: ``template`` renders it as the chat template does
(SmolLM2's inserts "You are a helpful AI assistant named SmolLM, ..."); ``none`` renders it
with no system turn at all."""
_SENTINEL = "\x1frmflow-system\x1f"
_ROLE_NAMES = {"user": "Human", "assistant": "Assistant", "system": "System"}


def render_conversation(
    tokenizer: Any, messages: Sequence[dict[str, str]], system_prompt: SystemPrompt = "template"
) -> tuple[str, bool]:
    """The conversation as text, and whether that text already carries its special tokens."""
    msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
    if getattr(tokenizer, "chat_template", None):
        if system_prompt == "none" and msgs and msgs[0]["role"] != "system":
            return _end_at_eos(tokenizer, _without_default_system(tokenizer, msgs)), True
        return _end_at_eos(tokenizer, tokenizer.apply_chat_template(msgs, tokenize=False)), True
    text = "\n\n".join(f"{_ROLE_NAMES.get(m['role'], m['role'].title())}: {m['content']}" for m in msgs)
    return text, False


def _end_at_eos(tokenizer: Any, text: str) -> str:
    """Drop the whitespace a template writes after the final end-of-turn token (ChatML's
    ``<|im_end|>\n``), so the last token, where a causal reward model reads, is that token and
    not a newline that every conversation ends with alike."""
    eos = tokenizer.eos_token
    stripped = text.rstrip()
    return stripped if eos and stripped != text and stripped.endswith(eos) else text


def _without_default_system(tokenizer: Any, msgs: list[dict[str, str]]) -> str:
    """The template's rendering with no system turn: render with a marker system message, cut
    that turn off, and keep a document BOS the template writes before it (Llama-3's
    ``<|begin_of_text|>``), but not a BOS that is only the turn opener (ChatML's ``<|im_start|>``)."""
    from jinja2 import TemplateError

    system = [{"role": "system", "content": _SENTINEL}]
    try:
        head = tokenizer.apply_chat_template(system, tokenize=False)
    except TemplateError:  # a template without a system role (Gemma) has no default to leave out
        return tokenizer.apply_chat_template(msgs, tokenize=False)
    full = tokenizer.apply_chat_template(system + msgs, tokenize=False)
    if not full.startswith(head) or _SENTINEL not in head:
        raise ValueError(
            "system_prompt 'none': this chat template does not render a system turn as a prefix; "
            "use system_prompt: template"
        )
    rest, bos = full[len(head) :], tokenizer.bos_token or ""
    keep_bos = bool(bos) and head.startswith(bos) and not rest.startswith(bos)
    return (bos if keep_bos else "") + rest


def _leading_special(tokenizer: Any, ids: list[int]) -> int:
    """1 when the sequence starts with BOS/CLS (kept through left truncation), else 0."""
    heads = {tokenizer.bos_token_id, tokenizer.cls_token_id} - {None}
    return 1 if ids and ids[0] in heads else 0


def truncate(tokenizer: Any, ids: list[int], *, max_length: int, truncation: Truncation) -> list[int] | None:
    """Cut ``ids`` to ``max_length`` from the left (keeping a leading BOS/CLS) or drop (None)."""
    if len(ids) <= max_length:
        return ids
    if truncation == "drop":
        return None
    if truncation != "left":
        raise ValueError(f"truncation must be 'left' or 'drop', got {truncation!r}")
    keep = _leading_special(tokenizer, ids)
    return ids[:keep] + ids[len(ids) - (max_length - keep) :]


def _dedupe_bos(tokenizer: Any, ids: list[int]) -> list[int]:
    bos = tokenizer.bos_token_id
    if bos is not None and len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
        return ids[1:]
    return ids


def encode_conversation(
    tokenizer: Any,
    messages: Sequence[dict[str, str]],
    *,
    max_length: int,
    truncation: Truncation = "left",
    system_prompt: SystemPrompt = "template",
) -> list[int] | None:
    """Token ids of one conversation (chat template or plain text), truncated; None when dropped."""
    return encode_conversations(
        tokenizer, [messages], max_length=max_length, truncation=truncation, system_prompt=system_prompt
    )[0]


def encode_conversations(
    tokenizer: Any,
    conversations: Sequence[Sequence[dict[str, str]]],
    *,
    max_length: int,
    truncation: Truncation = "left",
    system_prompt: SystemPrompt = "template",
) -> list[list[int] | None]:
    """Batched ``encode_conversation`` (one fast-tokenizer call for the whole list)."""
    rendered = [render_conversation(tokenizer, c, system_prompt) for c in conversations]
    out: list[list[int] | None] = [None] * len(rendered)
    for templated in (True, False):
        idx = [i for i, (_, t) in enumerate(rendered) if t == templated]
        if not idx:
            continue
        enc = tokenizer([rendered[i][0] for i in idx], add_special_tokens=not templated)["input_ids"]
        for i, ids in zip(idx, enc):
            out[i] = truncate(
                tokenizer, _dedupe_bos(tokenizer, list(ids)), max_length=max_length, truncation=truncation
            )
    return out


@dataclass
class EncodedPairs:
    """Token ids of the pairs that survived truncation, and what happened to the others."""

    chosen: list[list[int]]
    rejected: list[list[int]]
    rows: list[int]
    """Row index in the input of each kept pair."""
    margins: list[float] | None
    truncated: int = 0
    """Sequences (chosen or rejected) cut from the left."""
    dropped: int = 0
    """Pairs dropped because a side was longer than max_length (truncation="drop")."""
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.chosen)


def encode_pairs(
    tokenizer: Any,
    chosen: Sequence[Sequence[dict[str, str]]],
    rejected: Sequence[Sequence[dict[str, str]]],
    *,
    max_length: int,
    truncation: Truncation = "left",
    margins: Sequence[float | None] | None = None,
    system_prompt: SystemPrompt = "template",
) -> EncodedPairs:
    """Encode chosen/rejected conversations; count truncated sequences and dropped pairs."""
    # Encode whole first (10**9: no limit) to count what the real max_length then truncates or drops.
    full_c, full_r = (
        encode_conversations(tokenizer, side, max_length=10**9, truncation="left", system_prompt=system_prompt)
        for side in (chosen, rejected)
    )
    out = EncodedPairs([], [], [], [] if margins is not None else None)
    for i, (c, r) in enumerate(zip(full_c, full_r)):
        tc = truncate(tokenizer, c, max_length=max_length, truncation=truncation)
        tr = truncate(tokenizer, r, max_length=max_length, truncation=truncation)
        if tc is None or tr is None:
            out.dropped += 1
            continue
        out.truncated += (len(c) > max_length) + (len(r) > max_length)
        out.chosen.append(tc)
        out.rejected.append(tr)
        out.rows.append(i)
        if out.margins is not None:
            out.margins.append(float(margins[i] or 0.0))
    out.stats = {
        "pairs_in": len(full_c),
        "pairs_kept": len(out),
        "sequences_truncated": out.truncated,
        "pairs_dropped": out.dropped,
    }
    log.info(
        "encoded %d pairs: kept %d, %d sequences truncated from the left, %d pairs dropped (max_length=%d)",
        len(full_c),
        len(out),
        out.truncated,
        out.dropped,
        max_length,
    )
    return out


@dataclass
class SeqGroup:
    """A rectangular sub-batch: ``rows`` are its positions in [chosen block; rejected block]."""

    rows: torch.Tensor
    input_ids: torch.Tensor
    attention_mask: torch.Tensor


@dataclass
class PairBatch:
    """One micro-batch of B pairs: 2B sequences, chosen block (rows [0, B)) then rejected block.

    With ``max_groups=1`` there is one group: the classic right-padded [2B, T] tensor
    (``input_ids``/``attention_mask``). With more groups the sequences are padded in
    length-sorted sub-batches (see ``rmcore.train.batching``); ``pair_rewards`` restores the order.
    """

    groups: list[SeqGroup]
    num_pairs: int
    real_tokens: int
    """Non-pad tokens in the batch."""
    margins: torch.Tensor | None = None

    @property
    def processed_tokens(self) -> int:
        return sum(g.input_ids.numel() for g in self.groups)

    @property
    def input_ids(self) -> torch.Tensor:
        return self._single().input_ids

    @property
    def attention_mask(self) -> torch.Tensor:
        return self._single().attention_mask

    def _single(self) -> SeqGroup:
        if len(self.groups) != 1:
            raise ValueError("this batch is split into length groups; use rmcore.train.batching.pair_rewards")
        return self.groups[0]


def _pad(seqs: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for row, s in enumerate(seqs):
        ids[row, : len(s)] = torch.as_tensor(s, dtype=torch.long)
        mask[row, : len(s)] = 1
    return ids, mask


def collate_pairs(
    chosen: Sequence[Sequence[int]],
    rejected: Sequence[Sequence[int]],
    *,
    pad_id: int,
    margins: Sequence[float] | None = None,
    max_groups: int = 1,
    group_overhead: int = 32,
) -> PairBatch:
    """Right-pad chosen + rejected sequences (chosen block first), optionally in length groups."""
    if len(chosen) != len(rejected) or not chosen:
        raise ValueError(
            f"need the same non-zero number of chosen and rejected, got {len(chosen)} and {len(rejected)}"
        )
    batch = collate_sequences([*chosen, *rejected], pad_id=pad_id, max_groups=max_groups, group_overhead=group_overhead)
    batch.num_pairs = len(chosen)
    batch.margins = torch.as_tensor(margins, dtype=torch.float32) if margins is not None else None
    return batch


def collate_sequences(
    seqs: Sequence[Sequence[int]], *, pad_id: int, max_groups: int = 1, group_overhead: int = 32
) -> PairBatch:
    """Right-pad any sequences (a listwise group's responses, rated responses), optionally in length
    groups; ``rmcore.train.batching.pair_rewards`` gives their rewards in the order given."""
    from rmcore.train.batching import length_groups

    if not seqs:
        raise ValueError("need at least one sequence to collate")
    if max_groups <= 1:
        index_groups = [list(range(len(seqs)))]
    else:
        index_groups = length_groups([len(s) for s in seqs], max_groups, overhead=group_overhead)
    groups = []
    for idx in index_groups:
        ids, mask = _pad([seqs[i] for i in idx], pad_id)
        groups.append(SeqGroup(torch.as_tensor(idx, dtype=torch.long), ids, mask))
    return PairBatch(groups, num_pairs=0, real_tokens=sum(len(s) for s in seqs))
