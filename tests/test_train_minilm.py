"""The honest proof that gradients flow through a real model and head: MiniLM fits real pairs."""

from __future__ import annotations

import math

import pytest
from train_helpers import hh_pairs, train_config, write_mixture

from rmcore.train import ListSink, train_reward_model


@pytest.mark.slow
def test_minilm_fits_32_real_hh_rlhf_pairs(shared_data, minilm_dir, tmp_path):
    """32 real helpful-base pairs, mean pooling (auto, from modules.json), fp32 on CPU.

    The same 32 pairs are also the held-out split, so the final eval (dropout off) is the
    training accuracy of the final model.
    """
    pairs = hh_pairs(shared_data, "helpful-base", n=32)
    mix = write_mixture(tmp_path / "mix.parquet", pairs + pairs, splits=["train"] * 32 + ["validation"] * 32)
    config = train_config(
        model=str(minilm_dir),
        max_length=128,
        lr=2e-4,
        warmup_ratio=0.1,
        micro_batch=8,
        global_batch=8,
        epochs=8,
        log_every=4,
        seed=0,
        bf16=False,
    )
    sink = ListSink()
    result = train_reward_model(config, mixture_path=mix, output_dir=tmp_path / "out", sink=sink)
    first, last = sink.series("train/loss")[0], result.metrics["eval/loss"]
    assert result.data["train_pairs"] == 32 and result.steps == 32
    assert first == pytest.approx(math.log(2), abs=0.1)  # starts near chance
    assert result.metrics["eval/accuracy"] == 1.0
    assert last < 0.3 < math.log(2), (first, last)
