"""bf16 with fp32 master weights (rmcore.train.master_weights) and the CPU attention choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import changed, tiny_config, toy_pairs

from rmcore.encoding import collate_pairs, encode_pairs
from rmcore.model import load_reward_model
from rmcore.train import ListSink, disable_dropout, split_rewards, train_reward_model
from rmcore.train.batching import pair_rewards
from rmcore.train.config import TrainConfig
from rmcore.train.loss import bradley_terry_loss
from rmcore.train.master_weights import MasterWeightsEngine


def _config(model: Path, **kw) -> TrainConfig:
    return tiny_config(model, **{"bf16": True, **kw})


def _loss(engine: MasterWeightsEngine, pairs) -> torch.Tensor:
    tok = engine.model.tokenizer
    batch = collate_pairs(pairs.chosen, pairs.rejected, pad_id=tok.pad_token_id)
    r_c, r_r = split_rewards(pair_rewards(engine.module, batch))
    return bradley_terry_loss(r_c, r_r)[0]


def test_updates_too_small_for_bf16_accumulate_in_the_fp32_masters(tiny_bert):
    """lr 1e-5 moves a weight of size ~0.02 by ~1e-5: below bf16's resolution there (2^-13 ~ 1.2e-4),
    so a bf16-only model would not move at all; the fp32 master moves every step, and the bf16
    copy is always exactly the master rounded to bf16."""
    cfg = _config(tiny_bert, lr=1e-5, warmup_ratio=0.0, scheduler="constant", weight_decay=0.0)
    model = load_reward_model(tiny_bert, pooling="mean", max_length=64)
    disable_dropout(model)
    engine = MasterWeightsEngine(cfg, model, total=10)
    rows = toy_pairs(8)
    pairs = encode_pairs(
        model.tokenizer, [r["chosen"] for r in rows], [r["rejected"] for r in rows], max_length=64
    )
    head = model.hf.classifier.weight
    start = head.detach().clone()
    assert engine.module.hf.classifier.weight.dtype == torch.bfloat16
    assert head.dtype == torch.float32

    engine.backward(_loss(engine, pairs))
    assert head.grad is not None and head.grad.dtype == torch.float32
    assert all(work.grad is None for _, work in engine.pairs)  # moved into the masters
    for _ in range(3):
        engine.step()
        engine.backward(_loss(engine, pairs))
    engine.step()

    moved = (head.detach() - start).abs()
    assert moved.max() > 0  # fp32 masters moved by ~4e-5 per element
    assert moved.max() < 1e-4
    rounded_start = start.to(torch.bfloat16)
    work = engine.module.hf.classifier.weight.detach()
    assert torch.equal(work, head.detach().to(torch.bfloat16))
    # most elements' bf16 value did not change at all: a bf16-only optimizer would be stuck there
    assert (work == rounded_start).float().mean() > 0.5


def test_gradients_accumulate_in_fp32_across_micro_batches(tiny_bert):
    """Two backward calls before a step add up in the fp32 master gradient."""
    cfg = _config(tiny_bert)
    model = load_reward_model(tiny_bert, pooling="mean", max_length=64)
    disable_dropout(model)
    engine = MasterWeightsEngine(cfg, model, total=10)
    rows = toy_pairs(4)
    pairs = encode_pairs(
        model.tokenizer, [r["chosen"] for r in rows], [r["rejected"] for r in rows], max_length=64
    )
    engine.backward(_loss(engine, pairs))
    once = model.hf.classifier.weight.grad.clone()
    engine.backward(_loss(engine, pairs))
    torch.testing.assert_close(model.hf.classifier.weight.grad, 2 * once)


def test_bf16_master_weights_training_tracks_fp32(tiny_bert, mixture, tmp_path):
    """Same data and steps: bf16 (master weights) step losses stay within bf16 noise of fp32 and
    the exported model is fp32 and has learned (loss falls)."""
    sinks = {"bf16": ListSink(), "fp32": ListSink()}
    runs = {
        name: train_reward_model(
            _config(tiny_bert, bf16=name == "bf16", epochs=3),
            mixture_path=mixture,
            output_dir=tmp_path / name,
            sink=sinks[name],
        )
        for name in sinks
    }
    bf16, fp32 = sinks["bf16"].series("train/loss"), sinks["fp32"].series("train/loss")
    assert len(bf16) == len(fp32) == 12
    assert max(abs(a - b) for a, b in zip(bf16, fp32)) < 0.02
    assert sum(bf16[-3:]) / 3 < sum(bf16[:3]) / 3 - 0.05
    weights = load_file(str(runs["bf16"].model_dir / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())


def test_interrupted_and_resumed_master_weights_run_ends_bitwise_equal(tiny_bert, mixture, tmp_path):
    cfg = _config(tiny_bert, epochs=2, checkpoint_every=2)

    class Stop(ListSink):
        def log_metrics(self, metrics, step):
            if step == 5:
                raise KeyboardInterrupt
            super().log_metrics(metrics, step)

    full = train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "full")
    with pytest.raises(KeyboardInterrupt):
        train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "cut", sink=Stop())
    resumed = train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "cut")
    wa = load_file(str(full.model_dir / "model.safetensors"))
    wb = load_file(str(resumed.model_dir / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_autocast_mode_and_sdpa_remain_selectable(tiny_bert, mixture, tmp_path):
    """bf16_mode=autocast keeps the fp32-weights path; attn_implementation is applied."""
    cfg = changed(_config(tiny_bert, max_steps=2), bf16_mode="autocast", attn_implementation="sdpa")
    run = train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "a")
    assert run.metrics["train/loss"] > 0
    model = load_reward_model(tiny_bert)
    from rmcore.train.setup import set_attention

    set_attention(model, _config(tiny_bert), torch.device("cpu"), bf16=True)
    assert model.hf.config._attn_implementation == "eager"  # auto, bf16 on CPU
    set_attention(model, _config(tiny_bert), torch.device("cpu"), bf16=False)
    assert model.hf.config._attn_implementation == "sdpa"  # auto, fp32 on CPU
    set_attention(model, changed(_config(tiny_bert), attn_implementation="eager"), torch.device("cpu"), False)
    assert model.hf.config._attn_implementation == "eager"  # an explicit choice wins
