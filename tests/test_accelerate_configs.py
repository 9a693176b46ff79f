"""deployments/accelerate/*.yaml: accelerate launcher configs for the GPU pool (parsed by accelerate itself)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "deployments" / "accelerate").glob("*.yaml"))


def test_the_three_launcher_configs_exist():
    assert [p.name for p in CONFIGS] == ["multi_gpu.yaml", "zero2.yaml", "zero3.yaml"]


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_config_loads_in_accelerate_and_names_an_existing_deepspeed_json(path):
    from accelerate.commands.config.config_args import load_config_from_file

    config = load_config_from_file(str(path))
    assert config.distributed_type == "DEEPSPEED" and config.num_processes == 8 and config.num_machines == 1
    ds_file = REPO / config.deepspeed_config["deepspeed_config_file"]  # relative to the repository root
    assert ds_file.is_file(), ds_file
    stage = json.loads(ds_file.read_text())["zero_optimization"]["stage"]
    assert stage == {"multi_gpu.yaml": 1, "zero2.yaml": 2, "zero3.yaml": 3}[path.name]
    assert "-m rmflow.cli train" in path.read_text().splitlines()[0]


def test_gpu_training_configs_name_existing_deepspeed_jsons():
    named = {}
    for path in sorted((REPO / "deployments" / "train").glob("*.yaml")):
        ds = yaml.safe_load(path.read_text()).get("deepspeed")
        if ds is not None:
            named[path.name] = ds
            assert (REPO / ds).is_file(), f"{path}: deepspeed: {ds} does not exist"
    assert named  # the Gemma/Mistral recipes train through DeepSpeed
