"""The packed encoder pass (rmcore.train.packed_encoder): same rewards and gradients as the stock
forward run group by group, used by training only where it is exact, off on request."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from tiny import build_tiny_model_dir
from train_helpers import changed, tiny_config, toy_pairs, write_mixture

from rmcore.model import load_reward_model
from rmcore.train import ListSink, disable_dropout, train_reward_model
from rmcore.train.config import TrainConfig
from rmcore.train.packed_encoder import unsupported_reason


def _groups(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Three length groups of different shapes; the first row of each is half padding."""
    gen = torch.Generator().manual_seed(seed)
    groups = []
    for batch, length in ((3, 11), (2, 23), (4, 5)):
        ids = torch.randint(5, 60, (batch, length), generator=gen)
        mask = torch.ones(batch, length, dtype=torch.long)
        mask[0, length // 2 :] = 0
        ids[0, length // 2 :] = 0
        groups.append((ids, mask))
    return groups


def _rewards_and_grads(model, groups, *, packed: bool):
    model.zero_grad(set_to_none=True)
    model.packed = packed
    rewards = model.grouped_rewards(groups)
    torch.cat(rewards).pow(2).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return [r.detach() for r in rewards], grads


@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_packed_pass_equals_the_stock_forward_group_by_group(tiny_bert, attention):
    model = load_reward_model(tiny_bert, pooling="mean", max_length=64)
    model.hf.set_attn_implementation(attention)
    disable_dropout(model)
    model.train()
    assert unsupported_reason(model.hf, "mean") is None
    groups = _groups()
    stock, stock_grads = _rewards_and_grads(model, groups, packed=False)
    packed, packed_grads = _rewards_and_grads(model, groups, packed=True)
    assert [r.shape for r in packed] == [torch.Size([3]), torch.Size([2]), torch.Size([4])]
    for a, b in zip(stock, packed, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    # every parameter the stock forward trains gets a gradient here too (and the unused pooler none)
    assert set(packed_grads) == set(stock_grads)
    assert not any(name.startswith("hf.bert.pooler") for name in packed_grads)
    for name, grad in stock_grads.items():
        torch.testing.assert_close(packed_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    # padding is still masked: changing a padded token's id changes nothing
    changed = [(ids.clone(), mask) for ids, mask in groups]
    changed[0][0][0, -1] = 7
    model.packed = True
    with torch.no_grad():
        torch.testing.assert_close(model.grouped_rewards(changed)[0], packed[0], rtol=0, atol=0)


def test_unsupported_models_name_the_reason(tiny_bert, tmp_path):
    model = load_reward_model(tiny_bert, pooling="mean", max_length=64)
    model.hf.set_attn_implementation("eager")
    assert "pooling is 'cls'" in unsupported_reason(model.hf, "cls")
    model.hf.activation_checkpointing_enable()
    assert unsupported_reason(model.hf, "mean") == "gradient checkpointing is on"
    llama = load_reward_model(build_tiny_model_dir(tmp_path / "llama", "llama"), max_length=64)
    assert "not BertModel" in unsupported_reason(llama.hf, "mean")


def _config(model: Path, **kw) -> TrainConfig:
    settings = {"micro_batch": 8, "max_groups": 3, "group_overhead": 0, "epochs": 2, "bf16": False}
    return tiny_config(model, **{**settings, **kw})


def test_training_uses_the_packed_pass_and_matches_the_stock_run(tiny_bert, tmp_path, caplog):
    """fp32: same per-step losses as packed_encoder=off on the same batches; the log says which ran."""
    mixture = write_mixture(tmp_path / "mixture.parquet", toy_pairs(40))
    sinks = {"auto": ListSink(), "off": ListSink()}
    with caplog.at_level(logging.INFO, logger="rmcore.train"):
        for mode, sink in sinks.items():
            cfg = changed(_config(tiny_bert), packing=mode)
            train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / mode, sink=sink)
    assert "packed encoder pass: on" in caplog.text
    assert "packed encoder pass: off (packing is off)" in caplog.text
    auto, off = sinks["auto"].series("train/loss"), sinks["off"].series("train/loss")
    assert len(auto) == len(off) == 8
    assert max(abs(a - b) for a, b in zip(auto, off, strict=True)) < 1e-5
    assert auto[0] != auto[-1]  # the steps trained something
