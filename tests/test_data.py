"""Tokenisation (chat template, no doubled BOS, left truncation/drop), collator, batching."""

from __future__ import annotations

import random

import pytest
from tiny import build_tiny_tokenizer
from train_helpers import hh_pairs

from rmcore.encoding import collate_pairs, encode_conversation, encode_pairs
from rmcore.train.batching import length_groups, plan_global_batches, split_micro_batches

HI = [{"role": "user", "content": "hi there"}, {"role": "assistant", "content": "hello you"}]


def _tokens(tok, ids):
    return tok.convert_ids_to_tokens(ids)


def test_chat_template_without_doubled_bos():
    tok = build_tiny_tokenizer("llama", chat_template=True)
    # The template itself writes <s>; tokenising its text with specials would give <s> <s>.
    assert _tokens(tok, tok(tok.apply_chat_template(HI, tokenize=False)).input_ids)[:2] == ["<s>", "<s>"]
    ids = encode_conversation(tok, HI, max_length=64)
    assert _tokens(tok, ids) == [
        "<s>",
        "<|user|>",
        "hi",
        "there",
        "</s>",
        "<|assistant|>",
        "hello",
        "you",
        "</s>",
    ]


def test_plain_text_fallback_without_template():
    tok = build_tiny_tokenizer("bert")
    ids = encode_conversation(tok, HI, max_length=64)
    assert _tokens(tok, ids) == [
        "[CLS]",
        "human",
        ":",
        "hi",
        "there",
        "assistant",
        ":",
        "hello",
        "you",
        "[SEP]",
    ]


def test_left_truncation_keeps_the_leading_cls_and_the_answer():
    tok = build_tiny_tokenizer("bert")
    ids = encode_conversation(tok, HI, max_length=8)
    assert _tokens(tok, ids) == ["[CLS]", "hi", "there", "assistant", ":", "hello", "you", "[SEP]"]
    llama = build_tiny_tokenizer("llama", chat_template=True)
    ids = encode_conversation(llama, HI, max_length=5)
    assert _tokens(llama, ids) == ["<s>", "<|assistant|>", "hello", "you", "</s>"]


def test_drop_returns_none_and_pairs_are_counted():
    tok = build_tiny_tokenizer("bert")
    assert encode_conversation(tok, HI, max_length=8, truncation="drop") is None
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]  # 8 tokens
    chosen, rejected = [HI, short, short], [short, short, HI]  # HI has 10 tokens
    dropped = encode_pairs(tok, chosen, rejected, max_length=8, truncation="drop")
    assert (len(dropped), dropped.dropped, dropped.truncated, dropped.rows) == (1, 2, 0, [1])
    cut = encode_pairs(tok, chosen, rejected, max_length=8, truncation="left")
    assert (len(cut), cut.dropped, cut.truncated) == (3, 0, 2)
    assert [len(c) for c in cut.chosen] == [8, 8, 8]


def test_collator_chosen_block_then_rejected_block_on_literal_tokens():
    batch = collate_pairs([[5, 6, 7], [8]], [[9], [10, 11]], pad_id=0, margins=[1.0, 0.5])
    assert batch.input_ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 0, 0], [10, 11, 0]]
    assert batch.attention_mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 0, 0], [1, 1, 0]]
    assert (batch.num_pairs, batch.real_tokens, batch.processed_tokens) == (2, 7, 12)
    assert batch.margins.tolist() == [1.0, 0.5]


def test_collator_length_groups_pad_each_group_to_its_own_longest():
    # Sequences (chosen 0,1; rejected 2,3) of lengths 60, 1, 50, 1: groups {0, 2} and {1, 3}
    # process 2 * 60 + 2 * 1 = 122 tokens (+ 32 overhead) instead of 4 * 60 = 240.
    batch = collate_pairs([[1] * 60, [2]], [[3] * 50, [4]], pad_id=0, max_groups=2)
    assert [g.rows.tolist() for g in batch.groups] == [[0, 2], [1, 3]]
    assert [tuple(g.input_ids.shape) for g in batch.groups] == [(2, 60), (2, 1)]
    assert (batch.real_tokens, batch.processed_tokens) == (112, 122)
    with pytest.raises(ValueError, match="length groups"):
        _ = batch.input_ids


def test_length_groups_minimise_padding_and_charge_overhead():
    assert length_groups([10, 9, 2, 1], 2, overhead=0) == [[0, 1], [2, 3]]
    assert length_groups([10, 9, 2, 1], 4, overhead=0) == [[0], [1], [2], [3]]
    # With 32 tokens per extra group, splitting off 8 saved pad tokens is not worth it.
    assert length_groups([10, 9, 8, 6], 4, overhead=32) == [[0, 1, 2, 3]]


def test_plan_covers_every_pair_once_and_is_seeded():
    lengths = [random.Random(i).randint(5, 300) for i in range(100)]
    plan = plan_global_batches(lengths, 8, seed=3, epoch=0, mega_batches=4)
    assert sorted(i for b in plan for i in b) == list(range(100))
    assert [len(b) for b in plan].count(8) == 12 and len(plan) == 13
    assert plan == plan_global_batches(lengths, 8, seed=3, epoch=0, mega_batches=4)
    assert plan != plan_global_batches(lengths, 8, seed=3, epoch=1, mega_batches=4)
    micro = split_micro_batches(plan[0], lengths, 2)
    assert sorted(i for m in micro for i in m) == sorted(plan[0]) and all(len(m) == 2 for m in micro)


def _efficiency(pairs, plan, lengths, max_groups):
    real = processed = 0
    for batch in plan:
        for micro in split_micro_batches(batch, lengths, 8):
            b = collate_pairs(
                [pairs.chosen[i] for i in micro],
                [pairs.rejected[i] for i in micro],
                pad_id=0,
                max_groups=max_groups,
            )
            real, processed = real + b.real_tokens, processed + b.processed_tokens
    return real / processed


def test_padding_efficiency_on_real_hh_rlhf_pairs(shared_data, minilm_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(minilm_dir))
    rows = hh_pairs(shared_data, "helpful-base", n=1000)
    pairs = encode_pairs(tok, [r["chosen"] for r in rows], [r["rejected"] for r in rows], max_length=256)
    lengths = [len(c) + len(r) for c, r in zip(pairs.chosen, pairs.rejected)]
    grouped = plan_global_batches(lengths, 8, seed=0)
    random_plan = plan_global_batches(lengths, 8, seed=0, group_by_length=False)
    ours = _efficiency(pairs, grouped, lengths, max_groups=4)
    plain = _efficiency(pairs, random_plan, lengths, max_groups=1)
    assert len(pairs) == 1000
    assert ours >= 0.95, ours
    assert plain < 0.7, plain  # random batches padded to one rectangle (TRL's collator: 0.53 at 256, drop)
