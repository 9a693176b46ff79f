"""DeepSpeed ZeRO configs and the in-process CPU path through ``deepspeed.initialize``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from multiprocess_worker import grad_module_calls
from safetensors.torch import load_file
from tiny import build_tiny_model_dir
from train_helpers import toy_pairs, train_config, write_mixture

from rmcore.config import ConfigError
from rmcore.model import load_reward_model
from rmcore.train import ListSink, deepspeed_config, train_reward_model

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_zero_configs_fill_auto_values_from_the_training_config(stage):
    path = REPO / "deployments" / "deepspeed" / f"zero{stage}.json"
    assert json.loads(path.read_text())["zero_optimization"]["stage"] == stage
    cfg = train_config(model="x", micro_batch=4, global_batch=16, max_grad_norm=0.5, deepspeed=str(path))
    ds = deepspeed_config(cfg, bf16=False, world_size=2)
    assert (
        ds["train_micro_batch_size_per_gpu"],
        ds["gradient_accumulation_steps"],
        ds["train_batch_size"],
    ) == (4, 2, 16)  # 16 pairs per step shared by 2 ranks: 2 micro-batches of 4 on each
    assert ds["gradient_clipping"] == 0.5 and ds["bf16"]["enabled"] is False
    assert "auto" not in json.dumps(ds)
    assert deepspeed_config(cfg, bf16=False, world_size=1)["gradient_accumulation_steps"] == 4
    with pytest.raises(ConfigError, match=r"multiple of micro_batch \* world size \(4 \* 3 = 12\)"):
        deepspeed_config(cfg, bf16=False, world_size=3)


CASES = {
    "bert": ({"arch": "bert", "pooling": "mean"}, {}),
    "llama-pad-eos-checkpointing": (
        {"arch": "llama", "pooling": "last", "pad_equals_eos": True},
        {"gradient_checkpointing": True},
    ),
}
"""Tiny model folders (``build_tiny_model_dir`` arguments) and the keys only the ZeRO runs add:
the plain reference run keeps the defaults (no gradient checkpointing on CPU)."""


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_zero2_and_zero3_train_on_cpu_in_one_process_and_export(tmp_path, case):
    """Compiles DeepSpeed's shm comm op on first use (TORCH_EXTENSIONS_DIR): ~1 min, more on a busy CPU.

    The Llama case reads the reward at the last token, ships pad == eos (training adds a pad token
    and resizes the embeddings) and its ZeRO runs recompute the layers in backward."""
    build, extra = CASES[case]
    model = build_tiny_model_dir(tmp_path / "m", **build)
    mix = write_mixture(tmp_path / "mix.parquet", toy_pairs(40))
    base = {
        "model": str(model),
        "max_length": 64,
        "lr": 3e-3,
        "micro_batch": 4,
        "global_batch": 8,
        "epochs": 3,
        "log_every": 4,
        "eval_fraction": 0.2,
        "bf16": False,
    }
    plain = ListSink()
    first = train_reward_model(
        train_config(**base), mixture_path=mix, output_dir=tmp_path / "plain", sink=plain
    )
    stock_linear = torch.nn.functional.linear
    for stage in (2, 3):
        sink = ListSink()
        zero = str(REPO / "deployments" / "deepspeed" / f"zero{stage}.json")
        cfg = train_config(**base, **extra, deepspeed=zero)
        with grad_module_calls() as calls:
            result = train_reward_model(cfg, mixture_path=mix, output_dir=tmp_path / f"z{stage}", sink=sink)
        if build["arch"] == "llama":  # each recomputed layer runs its MLP a second time in backward
            assert calls["LlamaMLP"] == 2 * calls["LlamaDecoderLayer"] > 0, calls
        losses = sink.series("train/loss")
        assert len(losses) == 3 and losses[-1] < losses[0] - 0.05, losses
        # Same data, model, optimizer and schedule as the plain loop: same losses up to float noise.
        assert losses == pytest.approx(plain.series("train/loss"), abs=1e-4)
        reloaded = load_reward_model(result.model_dir)
        assert reloaded.pooling == build["pooling"] and reloaded.norm_stats == pytest.approx(
            {"mean": result.metrics["eval/reward_mean"], "std": result.metrics["eval/reward_std"]}, abs=1e-5
        )
        # pad == eos in the Llama folder: the export keeps the pad token training added
        assert reloaded.tokenizer.pad_token_id not in (None, reloaded.tokenizer.eos_token_id)
        assert (result.checkpoints_dir / "step-0000012" / "ds").is_dir()
    # ZeRO-3 swaps torch.nn.functional.linear process-wide; training puts it back, so a plain run
    # after it in this process (a Prefect worker) gives bitwise the same weights as before it.
    assert torch.nn.functional.linear is stock_linear
    again = train_reward_model(train_config(**base), mixture_path=mix, output_dir=tmp_path / "again")
    wa = load_file(str(first.model_dir / "model.safetensors"))
    wb = load_file(str(again.model_dir / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
