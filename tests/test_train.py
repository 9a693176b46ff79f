"""The training loop end to end on a tiny model (CPU, fp32, seconds)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from train_helpers import changed, grouped, tiny_config, toy_pairs, train_config, write_mixture

from rmcore.config import ConfigError, from_mapping, load_yaml
from rmcore.model import load_reward_model
from rmcore.train import ListSink, lr_factor, train_reward_model
from rmcore.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _config(model: Path, **kw) -> TrainConfig:
    return tiny_config(model, **kw)


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


def test_training_learns_changes_parameters_and_writes_a_loadable_model(tiny_bert, mixture, tmp_path):
    sink = ListSink()
    result = train_reward_model(
        _config(tiny_bert, epochs=6), mixture_path=mixture, output_dir=tmp_path, sink=sink
    )
    # 40 pairs, 20% held out -> 32 train pairs, 4 steps of 8 per epoch, 6 epochs.
    assert (result.steps, result.data["train_pairs"], result.data["eval_pairs"]) == (24, 32, 8)
    losses = sink.series("train/loss")
    assert len(losses) == 24 and losses[-1] < 0.5 * losses[0]
    assert result.metrics["train/accuracy"] == 1.0 and result.metrics["eval/accuracy"] == 1.0
    for key in (
        "loss",
        "accuracy",
        "mean_margin",
        "reward_mean",
        "reward_std",
        "tokens_per_s",
        "padding_efficiency",
        "grad_norm",
        "lr",
    ):
        assert f"train/{key}" in sink.records[0][1]
    before, after = _weights(tiny_bert), _weights(result.model_dir)
    unchanged = sorted(k for k in before if torch.equal(before[k], after[k]))
    # every trainable tensor moved, except the BERT pooler: mean pooling never reads it (no gradient)
    assert unchanged == ["bert.pooler.dense.bias", "bert.pooler.dense.weight"], unchanged
    reloaded = load_reward_model(result.model_dir)
    assert reloaded.pooling == "mean" and set(reloaded.norm_stats) == {"mean", "std"}
    assert (result.checkpoints_dir / "step-0000024" / "model.safetensors").exists()


def test_lr_schedule_warmup_then_cosine():
    # 10 steps, 2 warmup: 0.5, 1.0, then 0.5 * (1 + cos(pi * k / 8)) for k = 1..7.
    factors = [lr_factor(s, total=10, warmup=2, kind="cosine") for s in range(10)]
    assert factors[:3] == [0.5, 1.0, 1.0]
    assert factors[6] == pytest.approx(0.5)  # halfway through the decay
    assert factors[9] == pytest.approx(0.5 * (1 + torch.cos(torch.tensor(torch.pi * 7 / 8)).item()))


def test_gradient_accumulation_matches_one_big_micro_batch(tiny_bert, mixture, tmp_path):
    """micro-batch 8 x accumulation 1 == micro-batch 2 x accumulation 4, up to float noise.

    adam_eps=1 keeps Adam's update proportional to the gradient: with the usual 1e-8 a
    parameter whose gradient is ~0 gets a full-size step in the direction of float noise.
    """
    common = {"max_steps": 3, "global_batch": 8, "max_grad_norm": 0.5, "lr": 0.05, "adam_eps": 1.0}
    sinks = ListSink(), ListSink()
    runs = [
        train_reward_model(
            _config(tiny_bert, micro_batch=mb, **common),
            mixture_path=mixture,
            output_dir=tmp_path / str(mb),
            sink=sink,
        )
        for mb, sink in zip((8, 2), sinks)
    ]
    assert sinks[0].series("train/grad_norm") == pytest.approx(sinks[1].series("train/grad_norm"), rel=1e-5)
    assert sinks[0].series("train/loss") == pytest.approx(sinks[1].series("train/loss"), abs=1e-6)
    initial, wa, wb = _weights(tiny_bert), _weights(runs[0].model_dir), _weights(runs[1].model_dir)
    assert all(
        not torch.equal(wa[k], initial[k])
        for k in ("classifier.weight", "bert.embeddings.word_embeddings.weight")
    )
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=1e-6, rtol=1e-5)


class _Interrupt(Exception):
    pass


class _StopAt(ListSink):
    def __init__(self, step: int) -> None:
        super().__init__()
        self.stop = step

    def log_metrics(self, metrics, step):
        super().log_metrics(metrics, step)
        if step == self.stop:
            raise _Interrupt(f"stopped at step {step}")


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tiny_bert, mixture, tmp_path):
    cfg = _config(tiny_bert, epochs=2, checkpoint_every=2)  # 8 steps, crossing an epoch boundary
    full = train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "full")
    with pytest.raises(_Interrupt):
        train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "cut", sink=_StopAt(5))
    assert sorted(p.name for p in (tmp_path / "cut" / "checkpoints").iterdir()) == [
        "step-0000002",
        "step-0000004",
    ]
    sink = ListSink()
    resumed = train_reward_model(cfg, mixture_path=mixture, output_dir=tmp_path / "cut", sink=sink)
    assert [step for step, _ in sink.records] == [5, 6, 7, 8]  # continued after step 4
    wa, wb = _weights(full.model_dir), _weights(resumed.model_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    # resume=False starts over and ignores the checkpoints
    fresh = ListSink()
    train_reward_model(
        changed(cfg, max_steps=2), mixture_path=mixture, output_dir=tmp_path / "cut", sink=fresh, resume=False
    )
    assert [step for step, _ in fresh.records] == [1, 2]


def test_drop_truncation_counts_dropped_pairs(tiny_bert, tmp_path):
    pairs = toy_pairs(12)
    pairs[0]["chosen"][-1]["content"] = "word " * 80  # longer than max_length
    pairs[1]["rejected"][-1]["content"] = "word " * 80
    mix = write_mixture(tmp_path / "m.parquet", pairs, splits=["train"] * 10 + ["validation"] * 2)
    cfg = _config(tiny_bert, truncation="drop", max_steps=1)
    result = train_reward_model(cfg, mixture_path=mix, output_dir=tmp_path / "o")
    assert result.data == {"train_pairs": 8, "eval_pairs": 2, "sequences_truncated": 0, "pairs_dropped": 2}
    left = train_reward_model(changed(cfg, truncation="left"), mixture_path=mix, output_dir=tmp_path / "l")
    assert left.data == {"train_pairs": 10, "eval_pairs": 2, "sequences_truncated": 2, "pairs_dropped": 0}


def test_margin_from_score_gap_and_centering_train(tiny_bert, tmp_path):
    pairs = toy_pairs(16)
    mix = write_mixture(tmp_path / "m.parquet", pairs, scores=[(5.0, 1.0)] * 8 + [(None, None)] * 8)
    cfg = from_mapping(
        TrainConfig,
        grouped({
            "model": str(tiny_bert),
            "max_length": 64,
            "micro_batch": 4,
            "global_batch": 8,
            "max_steps": 2,
            "log_every": 1,
            "bf16": False,
            "loss": {"margin": "score_gap", "margin_scale": 0.25, "center_coef": 0.01},
        }),
    )
    with_margin, without = ListSink(), ListSink()
    result = train_reward_model(cfg, mixture_path=mix, output_dir=tmp_path / "o", sink=with_margin)
    plain = replace(cfg, loss=replace(cfg.loss, margin="none"))
    train_reward_model(plain, mixture_path=mix, output_dir=tmp_path / "p", sink=without)
    assert result.steps == 2 and result.metrics["train/loss"] > 0
    # Same weights, same first batch: -log sigmoid(d - m) with margins m = 0.25 * (5 - 1) = 1 on the
    # scored pairs is strictly larger than without them (a dropped margin would make them equal).
    first_with, first_without = with_margin.records[0][1], without.records[0][1]
    assert first_with["train/reward_mean"] == first_without["train/reward_mean"]  # same model, same batch
    assert first_with["train/loss"] > first_without["train/loss"] + 0.1


def test_example_configs_load_and_bad_keys_are_refused():
    paths = sorted((REPO / "deployments" / "train").glob("*.yaml"))
    assert paths, "deployments/train/*.yaml missing"
    for path in paths:
        cfg = from_mapping(TrainConfig, load_yaml(path), where=str(path))
        assert cfg.batching.global_batch % cfg.batching.micro_batch == 0
        if cfg.deepspeed:
            assert (REPO / cfg.deepspeed).exists()
    with pytest.raises(ConfigError, match="unknown key"):
        from_mapping(TrainConfig, {"model": "x", "learning_rate": 1.0})
    with pytest.raises(ConfigError, match="multiple of micro_batch"):
        train_config(model="x", micro_batch=3, global_batch=8)


def test_rmflow_train_cli_prints_one_json_object(tiny_bert, mixture, tmp_path, capsys):
    import json

    from rmflow.cli import main

    cfg = tmp_path / "train.yaml"
    cfg.write_text(
        f"model: {tiny_bert}\nbackbone: {{max_length: 64}}\nbatching: {{micro_batch: 4, global_batch: 8}}\n"
        "optim: {max_steps: 2}\n"
    )
    assert main(["train", str(cfg), "--mixture", str(mixture), "--out", str(tmp_path / "o"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["steps"] == 2 and result["model_dir"] == str(tmp_path / "o" / "model")
    assert {"train/loss", "eval/accuracy"} <= set(result["metrics"])
    assert main(["train", str(cfg), "--out", str(tmp_path / "o")]) == 1
    assert "no mixture given" in capsys.readouterr().err
