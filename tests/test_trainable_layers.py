"""``backbone.trainable_layers``: only the top N blocks, the final norm and the head train."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny import build_tiny_model_dir
from train_helpers import tiny_config, toy_pairs, write_mixture

from rmcore.config import ConfigError
from rmcore.train import train_reward_model


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize("arch", ["llama", "bert"])
def test_only_the_top_layer_norm_and_head_change(arch: str, tmp_path: Path, caplog) -> None:
    model_dir = build_tiny_model_dir(tmp_path / "tiny", arch=arch)
    mixture = write_mixture(tmp_path / "mix.parquet", toy_pairs(16))
    caplog.set_level("INFO", logger="rmcore.train.backbone")
    result = train_reward_model(
        tiny_config(model_dir, trainable_layers=1, max_steps=2, eval_fraction=0.0, packing="off"),
        mixture_path=mixture,
        output_dir=tmp_path / "out",
    )
    before, after = _weights(model_dir), _weights(result.model_dir)
    changed = {k for k in before if before[k].shape == after[k].shape and not torch.equal(before[k], after[k])}
    layer1 = {k for k in before if ".layers.1." in k or ".layer.1." in k}
    if arch == "llama":  # block 1 of 2, the final norm and the score head; nothing else
        assert changed == layer1 | {"model.norm.weight", "score.weight"}, sorted(changed)
    else:  # BERT read at [CLS]: block 1, the pooler and the classifier
        head = {"bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"}
        assert changed == layer1 | head, sorted(changed)
    assert "training the top 1 of 2 layers + head" in caplog.text


def test_more_trainable_layers_than_the_model_has_is_refused(tmp_path: Path) -> None:
    model_dir = build_tiny_model_dir(tmp_path / "tiny", arch="llama")
    mixture = write_mixture(tmp_path / "mix.parquet", toy_pairs(8))
    with pytest.raises(ConfigError, match="trainable_layers is 3, but llama has 2 layers"):
        train_reward_model(tiny_config(model_dir, trainable_layers=3), mixture_path=mixture, output_dir=tmp_path / "o")


def test_master_weights_steps_keep_the_bf16_copy_equal_to_the_rounded_masters(tmp_path: Path) -> None:
    """The master-weights engine copies only the trainable weights after a step (the frozen ones
    never change): the working copy still equals every fp32 master rounded to bf16."""
    from rmcore.encoding import collate_pairs
    from rmcore.train.backbone import freeze_lower_layers, load_model
    from rmcore.train.batching import pair_rewards
    from rmcore.train.master_weights import MasterWeightsEngine

    model_dir = build_tiny_model_dir(tmp_path / "tiny", arch="llama")
    config = tiny_config(model_dir, trainable_layers=1, bf16=True, bf16_mode="master_weights", lr=1e-2)
    model = load_model(config)
    freeze_lower_layers(model, 1)
    engine = MasterWeightsEngine(config, model.train(), total=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = collate_pairs([[5, 6, 7, 8], [9, 10]], [[11, 12, 13], [14, 15, 16, 17, 18]], pad_id=model.config.pad_token_id)
    for _ in range(2):
        chosen, rejected = pair_rewards(engine.module, batch).chunk(2)
        engine.backward(-torch.nn.functional.logsigmoid(chosen - rejected).mean())
        engine.step()
    after = model.state_dict()
    assert {k for k in after if not torch.equal(after[k], before[k])} == {
        k for k, p in model.named_parameters() if p.requires_grad
    }
    for (name, master), work in zip(after.items(), engine.module.state_dict().values(), strict=True):
        assert torch.equal(work, master.to(torch.bfloat16)), name
