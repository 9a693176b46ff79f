"""``compute.cache_frozen`` (rmcore.train.frozen_cache): the frozen lower blocks run once per
training sequence; rewards, gradients and per-step losses equal the run without the cache."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Self

import pytest
import torch
from tiny import build_tiny_model_dir
from train_helpers import changed, tiny_config, toy_pairs, write_mixture

from rmcore.encoding import EncodedPairs, collate_pairs
from rmcore.model import RewardModel, load_reward_model
from rmcore.train import ListSink, train_reward_model
from rmcore.train.backbone import disable_dropout, freeze_lower_layers, transformer_layers
from rmcore.train.batching import pair_rewards
from rmcore.train.frozen_cache import FrozenCache, frozen_cache

PAD = 0
CHOSEN = (11, 6, 23, 5, 17, 5)
REJECTED = (5, 9, 23, 3, 11, 8)
"""Token counts of the 6 training pairs' sides: equal lengths share a packed attention call."""


def _tiny(arch: str, *, attention_dropout: float = 0.0) -> RewardModel:
    """A 3-block fp32 reward model from a config (grouped-query attention; Mistral with a
    6-token sliding window, shorter than the longest sequences), the top block trainable."""
    from transformers import AutoModelForSequenceClassification, LlamaConfig, MistralConfig, Qwen2Config

    configs = {"llama": LlamaConfig, "qwen2": Qwen2Config, "mistral": MistralConfig}
    extra = {"sliding_window": 6} if arch == "mistral" else {}
    config = configs[arch](
        vocab_size=150, hidden_size=48, intermediate_size=96, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, num_labels=1, pad_token_id=PAD,
        attn_implementation="sdpa", attention_dropout=attention_dropout, **extra,
    )  # fmt: skip
    torch.manual_seed(0)
    hf = AutoModelForSequenceClassification.from_config(config)
    model = RewardModel(hf, tokenizer=None, pooling="last", max_length=64).train()
    freeze_lower_layers(model, 1)
    return model


def _pairs() -> EncodedPairs:
    gen = torch.Generator().manual_seed(0)
    chosen, rejected = (
        [torch.randint(1, 150, (n,), generator=gen).tolist() for n in side] for side in (CHOSEN, REJECTED)
    )
    return EncodedPairs(chosen, rejected, rows=list(range(len(chosen))), margins=None)


def _batch(pairs: EncodedPairs, idx: list[int]):
    return collate_pairs(
        [pairs.chosen[i] for i in idx],
        [pairs.rejected[i] for i in idx],
        pad_id=PAD,
        max_groups=3,
        group_overhead=0,
    )


class FrozenCalls:
    """Calls of the frozen blocks' forward (every module whose block index is below ``first``)."""

    def __init__(self, first: int) -> None:
        self.first, self.count = first, 0

    def __enter__(self) -> Self:
        def hook(module, args, out):
            idx = getattr(getattr(module, "self_attn", None), "layer_idx", None)
            if type(module).__name__.endswith("DecoderLayer") and idx is not None and idx < self.first:
                self.count += 1

        self.handle = torch.nn.modules.module.register_module_forward_hook(hook)
        return self

    def __exit__(self, *exc) -> None:
        self.handle.remove()


def _step(model: RewardModel, batch, run) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Rewards, and every parameter's gradient of a Bradley-Terry loss (+ a centring term) over them."""
    model.zero_grad(set_to_none=True)
    rewards = run(batch)
    chosen, rejected = rewards.chunk(2)
    loss = -torch.nn.functional.logsigmoid(chosen - rejected).mean() + 0.1 * rewards.pow(2).mean()
    loss.backward()
    return rewards.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("layout", ["packed", "padded", "padded-checkpointing"])
@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_rewards_and_gradients_from_kept_rows_equal_the_full_forward(arch: str, layout: str) -> None:
    """Packed (CPU training), padded length groups, and padded with gradient checkpointing (the
    GPU default: the top block recomputed in backward)."""
    model = _tiny(arch)
    packed = model.packed = layout == "packed"
    if layout == "padded-checkpointing":
        model.hf.activation_checkpointing_enable()
    pairs = _pairs()
    cache = FrozenCache(first=2, lengths=[*map(len, pairs.chosen), *map(len, pairs.rejected)])
    idx = [4, 0, 2, 5]
    batch = _batch(pairs, idx)
    assert len(batch.groups) == 3
    reference, ref_grads = _step(model, batch, lambda b: pair_rewards(model, b))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(ref_grads) == trainable and any(".layers.2." in n for n in trainable)
    assert not any(".layers.0." in n or ".layers.1." in n or "embed" in n for n in trainable)

    with FrozenCalls(2) as filling:  # the first time: the full forward, its frozen output kept
        first, first_grads = _step(model, batch, lambda b: cache.rewards(model, b, idx))
    with FrozenCalls(2) as kept:  # the second time: from the kept rows, no frozen block runs
        second, second_grads = _step(model, batch, lambda b: cache.rewards(model, b, idx))

    assert filling.count == (2 if packed else 6) and kept.count == 0
    assert cache.count == 8 and sum(cache.kept) == 8
    assert [cache.kept[k] for k in range(6)] == [True, False, True, False, True, True]  # chosen sides
    for rewards, grads in ((first, first_grads), (second, second_grads)):
        torch.testing.assert_close(rewards, reference, rtol=1e-5, atol=1e-5)
        assert set(grads) == set(ref_grads)
        for name, grad in ref_grads.items():
            torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-5, msg=name)
    assert not torch.equal(second, torch.zeros_like(second))


def test_kept_rows_are_the_frozen_output_of_each_sequence_alone() -> None:
    """A kept sequence's rows: what the frozen blocks give for that sequence run on its own."""
    model = _tiny("llama")
    model.packed = True
    pairs = _pairs()
    cache = FrozenCache(first=2, lengths=[*map(len, pairs.chosen), *map(len, pairs.rejected)])
    cache.rewards(model, _batch(pairs, [1, 3]), [1, 3])
    base, layers = model.hf.base_model, transformer_layers(model.hf)
    for key, ids in ((1, pairs.chosen[1]), (6 + 3, pairs.rejected[3])):
        with torch.no_grad():
            hidden = base.embed_tokens(torch.tensor([ids]))
            positions = torch.arange(len(ids))[None]
            rotary = base.rotary_emb(hidden, positions)
            for block in layers[:2]:
                hidden = block(
                    hidden, attention_mask=None, position_embeddings=rotary, position_ids=positions
                )
        torch.testing.assert_close(cache.rows[cache.offsets[key] : cache.offsets[key + 1]], hidden[0])


def test_a_micro_batch_with_an_unkept_sequence_runs_the_full_forward_and_keeps_it() -> None:
    model = _tiny("llama")
    model.packed = True
    pairs = _pairs()
    cache = FrozenCache(first=2, lengths=[*map(len, pairs.chosen), *map(len, pairs.rejected)])
    counts = []
    for idx in ([0, 1], [1, 2], [2, 0, 1]):
        with FrozenCalls(2) as calls, torch.no_grad():
            cache.rewards(model, _batch(pairs, idx), idx)
        counts.append((calls.count, cache.count))
    assert counts == [(2, 4), (2, 6), (0, 6)]


def _three_block_dir(path: Path, **config) -> Path:
    """The tiny Llama folder of tests/tiny.py with 3 blocks (and any other config changes)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    folder = build_tiny_model_dir(path, "llama")
    cfg = AutoConfig.from_pretrained(folder)
    for key, value in {"num_hidden_layers": 3, **config}.items():
        setattr(cfg, key, value)
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(cfg).save_pretrained(folder, safe_serialization=True)
    return folder


class CallsPerStep(ListSink):
    """A ListSink that also notes, at each step, the frozen-block calls made so far."""

    def __init__(self, calls: FrozenCalls) -> None:
        super().__init__()
        self.calls, self.seen = calls, []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        super().log_metrics(metrics, step)
        self.seen.append(self.calls.count)


@pytest.mark.parametrize("packing", ["auto", "off"])
def test_training_with_the_cache_gives_the_same_losses_and_epoch_2_skips_the_frozen_blocks(
    tmp_path: Path, caplog, packing: str
) -> None:
    folder = _three_block_dir(tmp_path / "llama")
    mixture = write_mixture(tmp_path / "mix.parquet", toy_pairs(32))
    base = tiny_config(
        folder, trainable_layers=1, epochs=2, micro_batch=4, global_batch=8, eval_fraction=0.0,
        max_groups=3, group_overhead=0, packing=packing,
    )  # fmt: skip
    losses, per_step = {}, {}
    with caplog.at_level(logging.INFO, logger="rmcore.train"):
        for mode in ("auto", "off"):
            with FrozenCalls(2) as calls:
                sink = CallsPerStep(calls)
                train_reward_model(
                    changed(base, cache_frozen=mode),
                    mixture_path=mixture,
                    output_dir=tmp_path / mode,
                    sink=sink,
                )
            losses[mode] = sink.series("train/loss")
            per_step[mode] = [b - a for a, b in zip([0, *sink.seen], sink.seen)]
    assert "frozen-layer cache: on (the 2 frozen blocks run once per training sequence" in caplog.text
    assert "frozen-layer cache full: 64 sequences" in caplog.text
    assert "frozen-layer cache: off (cache_frozen is off)" in caplog.text
    assert len(losses["auto"]) == len(losses["off"]) == 8  # 32 pairs / 8 per step, 2 epochs
    assert max(abs(a - b) for a, b in zip(losses["auto"], losses["off"], strict=True)) < 1e-5
    assert losses["auto"][0] != losses["auto"][-1]  # the steps trained something
    calls_per_step = (2 if packing == "auto" else 2 * 3) * 2  # blocks x (1 packed pass | 3 groups) x 2 micro
    assert min(per_step["auto"][:4]) >= 2 and per_step["auto"][4:] == [0, 0, 0, 0]
    assert max(per_step["auto"][:4]) <= calls_per_step and min(per_step["off"][4:]) >= 2


def _decision(folder: Path, caplog, **overrides) -> str:
    """The ``frozen-layer cache`` log line for a training config of ``folder`` (no training)."""
    cfg = tiny_config(folder, **{"trainable_layers": 1, "epochs": 2, **overrides})
    model = load_reward_model(folder, pooling="auto", max_length=64)
    freeze_lower_layers(model, cfg.backbone.trainable_layers)
    if not cfg.backbone.dropout:
        disable_dropout(model)
    model.packed = model.pooling == "last"
    pairs = EncodedPairs([[1, 2, 3]] * 4, [[4, 5]] * 4, rows=[0, 1, 2, 3], margins=None)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="rmcore.train.frozen_cache"):
        kept = frozen_cache(
            cfg, model.train(), pairs, total=2 * cfg.optim.epochs, per_epoch=2,
            dtype=torch.float32, device=torch.device("cpu"),
        )  # fmt: skip
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("frozen-layer cache")]
    assert (kept is not None) == line.startswith("frozen-layer cache: on")
    return line


def test_auto_says_why_it_stays_off(tmp_path: Path, caplog) -> None:
    llama = _three_block_dir(tmp_path / "llama")
    dropping = _three_block_dir(tmp_path / "dropping", attention_dropout=0.1)
    bert = build_tiny_model_dir(tmp_path / "bert", "bert", sentence_transformers_mean=True)
    assert _decision(llama, caplog).startswith("frozen-layer cache: on (the 2 frozen blocks")
    assert _decision(llama, caplog, trainable_layers=None) == (
        "frozen-layer cache: off (backbone.trainable_layers is not set: every block trains)"
    )
    assert _decision(llama, caplog, trainable_layers=3) == (
        "frozen-layer cache: off (trainable_layers 3 covers all 3 blocks: none is frozen)"
    )
    assert _decision(dropping, caplog, dropout=True) == (
        "frozen-layer cache: off (dropout in the frozen blocks (layers.0.self_attn p=0.1): "
        "each epoch draws new masks, kept outputs would differ)"
    )
    # backbone.dropout off (the default) turns the attention dropout off too: the cache is on
    assert _decision(dropping, caplog).startswith("frozen-layer cache: on")
    assert _decision(llama, caplog, epochs=1) == (
        "frozen-layer cache: off (2 steps, one pass over the pairs: each sequence runs once, nothing to reuse)"
    )
    assert _decision(bert, caplog).startswith(
        "frozen-layer cache: off (the cache implements last-token rewards of verified causal LMs: pooling is 'mean'"
    )
    assert _decision(llama, caplog, cache_frozen="off") == "frozen-layer cache: off (cache_frozen is off)"


class _Interrupt(RuntimeError):
    pass


class _StopAt(ListSink):
    def __init__(self, stop: int) -> None:
        super().__init__()
        self.stop = stop

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        super().log_metrics(metrics, step)
        if step == self.stop:
            raise _Interrupt(f"stopped at step {step}")


def test_a_run_resumed_in_epoch_2_refills_the_cache_and_ends_with_the_same_weights(tmp_path: Path) -> None:
    """The cache is not in checkpoints: resumed at step 6 (epoch 2), the run computes the frozen
    blocks again for the sequences it meets, and ends where the uninterrupted run ends."""
    from safetensors.torch import load_file

    folder = _three_block_dir(tmp_path / "llama")
    mixture = write_mixture(tmp_path / "mix.parquet", toy_pairs(32))
    cfg = tiny_config(folder, trainable_layers=1, epochs=2, eval_fraction=0.0, checkpoint_every=2)
    full = train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "full")
    with pytest.raises(_Interrupt):
        train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "cut", sink=_StopAt(7))
    sink = ListSink()
    with FrozenCalls(2) as calls:
        resumed = train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "cut", sink=sink)
    assert [step for step, _ in sink.records] == [7, 8]  # continued after the step-6 checkpoint
    assert calls.count > 0  # epoch 2, but the resumed process starts with an empty cache
    a, b = (
        load_file(str(full.model_dir / "model.safetensors")),
        load_file(str(resumed.model_dir / "model.safetensors")),
    )
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)
