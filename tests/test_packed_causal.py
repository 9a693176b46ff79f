"""The packed causal pass (rmcore.train.packed_causal): same rewards and gradients as the stock
forward run group by group, no attention across sequences, nothing left switched afterwards,
and training uses it where it applies."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from tiny import build_tiny_model_dir
from train_helpers import changed, tiny_config, toy_pairs, write_mixture

from rmcore.model import RewardModel, load_reward_model
from rmcore.train import ListSink, packed_causal, train_reward_model
from rmcore.train.config import TrainConfig
from rmcore.train.packed_causal import causal_matmul_attention, pack, unsupported_reason

PAD = 0
LENGTHS = ((11, 6, 11), (23, 17), (5, 5, 3, 5))
"""Three length groups; equal lengths (11, 11 and 5, 5, 5) share one attention call."""


def _tiny(arch: str, attention: str = "sdpa", seed: int = 0) -> RewardModel:
    """A 2-layer fp32 reward model from a config: grouped-query attention (4 heads, 2 kv heads);
    Mistral with a 6-token sliding window, shorter than the longest sequences."""
    from transformers import (
        AutoModelForSequenceClassification,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        Qwen3Config,
    )

    configs = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig}
    extra = {"sliding_window": 6} if arch == "mistral" else {}
    config = configs[arch](
        vocab_size=150,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=PAD,
        attn_implementation=attention,
        **extra,
    )
    torch.manual_seed(seed)
    hf = AutoModelForSequenceClassification.from_config(config)
    return RewardModel(hf, tokenizer=None, pooling="last", max_length=64).train()


def _groups(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Right-padded (input_ids, attention_mask) groups of the ``LENGTHS`` sequences."""
    gen = torch.Generator().manual_seed(seed)
    groups = []
    for lengths in LENGTHS:
        ids = torch.full((len(lengths), max(lengths)), PAD)
        mask = torch.zeros_like(ids)
        for row, n in enumerate(lengths):
            ids[row, :n] = torch.randint(1, 150, (n,), generator=gen)
            mask[row, :n] = 1
        groups.append((ids, mask))
    return groups


def _rewards_and_grads(model: RewardModel, groups, *, packed: bool):
    """Rewards, and every parameter's gradient of a Bradley-Terry loss over pairs of them."""
    model.zero_grad(set_to_none=True)
    model.packed = packed
    rewards = model.grouped_rewards(groups)
    flat = torch.cat(rewards)
    chosen, rejected = flat[: len(flat) // 2], flat[len(flat) // 2 : 2 * (len(flat) // 2)]
    loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean() + 0.1 * flat.pow(2).mean()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return [r.detach() for r in rewards], grads


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3", "mistral"])
def test_packed_pass_equals_the_stock_forward_group_by_group(arch, attention):
    model = _tiny(arch, attention)
    assert unsupported_reason(model.hf, "last") is None
    groups = _groups()
    stock, stock_grads = _rewards_and_grads(model, groups, packed=False)
    packed, packed_grads = _rewards_and_grads(model, groups, packed=True)
    assert [(r.shape, r.dtype) for r in packed] == [(torch.Size([len(n)]), torch.float32) for n in LENGTHS]
    for a, b in zip(stock, packed, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    # every trainable parameter has a gradient, in both runs, and they agree
    assert (
        set(packed_grads) == set(stock_grads) == {n for n, p in model.named_parameters() if p.requires_grad}
    )
    for name, grad in stock_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.parametrize(("heads", "kv_heads"), [(6, 2), (4, 4)])
def test_matmul_attention_equals_causal_sdpa_values_and_gradients(heads, kv_heads):
    """The CPU 16-bit kernel, run here in fp32 so rounding cannot hide a wrong mask or head
    mapping: same output and same gradients for queries, keys and values as causal SDPA."""
    gen = torch.Generator().manual_seed(3)
    shapes = [(3, heads, 9, 8), (3, kv_heads, 9, 8), (3, kv_heads, 9, 8)]
    inputs = [torch.randn(*s, generator=gen) for s in shapes]
    upstream = torch.randn(3, heads, 9, 8, generator=gen)

    def run(kernel):
        q, k, v = (t.clone().requires_grad_() for t in inputs)
        out = kernel(q, k, v)
        out.backward(upstream)
        return out.detach(), q.grad, k.grad, v.grad

    sdpa = run(
        lambda q, k, v: torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=True, scale=0.3, enable_gqa=heads != kv_heads
        )
    )
    mine = run(lambda q, k, v: causal_matmul_attention(q, k, v, scaling=0.3))
    for name, a, b in zip(("out", "dq", "dk", "dv"), sdpa, mine, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)


def test_bf16_packed_pass_on_cpu_runs_the_matmul_kernel_and_agrees_with_the_stock_forward(monkeypatch):
    calls = []
    kernel = packed_causal.causal_matmul_attention
    monkeypatch.setattr(
        packed_causal, "causal_matmul_attention", lambda *a, **k: calls.append(a[0].shape) or kernel(*a, **k)
    )
    model = _tiny("llama")
    model.hf.to(torch.bfloat16)
    groups = _groups()
    with torch.no_grad():
        stock = torch.cat(model.grouped_rewards(groups))
        model.packed = True
        packed = torch.cat(model.grouped_rewards(groups))
    runs = len({n for lengths in LENGTHS for n in lengths})  # distinct lengths: one call each, per layer
    assert len(calls) == 2 * runs and all(shape[1] == 4 for shape in calls)
    torch.testing.assert_close(packed, stock, rtol=0.02, atol=0.02)
    assert not torch.equal(packed, torch.zeros_like(packed))


def test_the_row_is_sorted_by_length_with_positions_restarting_per_sequence():
    ids = torch.tensor([[5, 6, 7, PAD], [8, 9, 10, 11]]), torch.tensor([[12, 13]])
    masks = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]).bool(), torch.tensor([[1, 1]])  # bool or 0/1
    p = pack(list(zip(ids, masks, strict=True)))
    assert p.ids.tolist() == [12, 13, 5, 6, 7, 8, 9, 10, 11]
    assert p.positions.tolist() == [0, 1, 0, 1, 2, 0, 1, 2, 3]
    assert p.last.tolist() == [1, 4, 8]
    assert p.slots.tolist() == [1, 2, 0]  # group order (3, 4, 2 tokens) -> packed places
    assert p.lengths.tolist() == [0, 2, 5, 9] and p.longest == 4
    assert p.runs == ((0, 1, 2), (2, 1, 3), (5, 1, 4))


def test_a_sequence_sees_no_token_of_another():
    """Change every other sequence's tokens (the ones packed right before it included) and one
    pad id: the reward of the sequence kept unchanged stays bit for bit the same."""
    model = _tiny("llama")
    model.packed = True
    groups = _groups()
    keep = (1, 0)  # group 1, row 0: the longest sequence, packed last, after all the others
    with torch.no_grad():
        before = model.grouped_rewards(groups)
        edited = []
        for g, (ids, mask) in enumerate(groups):
            ids = ids.clone()
            for row in range(len(ids)):
                if (g, row) != keep:
                    ids[row, : int(mask[row].sum())] = torch.randint(1, 150, (int(mask[row].sum()),))
            edited.append((ids, mask))
        edited[1][0][1, -1] = 7  # a pad position of group 1's second row
        after = model.grouped_rewards(edited)
    assert after[keep[0]][keep[1]] == before[keep[0]][keep[1]]
    others = [(g, r) for g, n in enumerate(LENGTHS) for r in range(len(n)) if (g, r) != keep]
    assert all(after[g][r] != before[g][r] for g, r in others)


def test_nothing_stays_switched_after_a_packed_call():
    model = _tiny("qwen2", "eager")
    groups = _groups()
    with torch.no_grad():
        before = [model(ids, mask) for ids, mask in groups]
        model.packed = True
        model.grouped_rewards(groups)
        assert model.hf.config._attn_implementation == "eager"
        after = [model(ids, mask) for ids, mask in groups]
    for a, b in zip(before, after, strict=True):
        torch.testing.assert_close(b, a, rtol=0, atol=0)


def test_left_padding_is_refused_with_the_fix():
    model = _tiny("llama")
    model.packed = True
    ids, mask = torch.tensor([[PAD, 5, 6]]), torch.tensor([[0, 1, 1]])
    with pytest.raises(ValueError, match="right-padded.*compute.packing: off"):
        model.grouped_rewards([(ids, mask)])
    assert model.hf.config._attn_implementation == "sdpa"


def test_unsupported_models_name_the_reason(tiny_bert):
    model = _tiny("llama")
    assert "pooling is 'mean'" in unsupported_reason(model.hf, "mean")
    model.hf.activation_checkpointing_enable()
    assert unsupported_reason(model.hf, "last") == "gradient checkpointing is on"
    bert = load_reward_model(tiny_bert, pooling="mean", max_length=64)
    assert "'bert' is not a causal LM verified for packing" in unsupported_reason(bert.hf, "last")
    unpadded = _tiny("qwen2")
    unpadded.hf.config.pad_token_id = None
    assert "no pad token id" in unsupported_reason(unpadded.hf, "last")


def _config(model: Path, **kw) -> TrainConfig:
    settings = {"micro_batch": 8, "max_groups": 3, "group_overhead": 0, "epochs": 2, "bf16": False}
    return tiny_config(model, **{**settings, **kw})


def test_training_uses_the_packed_pass_and_matches_the_stock_run(tmp_path, caplog):
    """fp32: same per-step losses as packing=off on the same batches; the log says which ran."""
    llama = build_tiny_model_dir(tmp_path / "llama", "llama")
    mixture = write_mixture(tmp_path / "mixture.parquet", toy_pairs(40))
    sinks = {"auto": ListSink(), "off": ListSink()}
    with caplog.at_level(logging.INFO, logger="rmcore.train"):
        for mode, sink in sinks.items():
            cfg = changed(_config(llama), packing=mode)
            train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / mode, sink=sink)
    assert "packed causal pass: on" in caplog.text
    assert "packed causal pass: off (packing is off)" in caplog.text
    auto, off = sinks["auto"].series("train/loss"), sinks["off"].series("train/loss")
    assert len(auto) == len(off) == 8
    assert max(abs(a - b) for a, b in zip(auto, off, strict=True)) < 1e-5
    assert auto[0] != auto[-1]  # the steps trained something
    # the packed row has no padding; the padded run's length groups do (toy pairs differ in length)
    assert set(sinks["auto"].series("train/padding_efficiency")) == {1.0}
    assert all(e < 1.0 for e in sinks["off"].series("train/padding_efficiency"))
