"""kill -9 during each stage, then rerun: the outputs equal an uninterrupted run's.

Each stage runs in a child process that SIGKILLs itself at an exact point (see
``fault_helpers``): while a stage's Parquet file is half written, after a checkpoint's
weights are saved but before its optimizer state is complete, in the middle of an epoch,
right after MLflow registered the version. Then the same flow reruns in this process (real
Prefect API, real SQLite MLflow store) and must end with the tables, weights and registry an
uninterrupted run produces; no partial file may be visible at a final name in between.
"""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import yaml
from fault_helpers import (
    child_env,
    run_child,
    same_weights,
    stage_digests,
    stage_dirs,
    visible_unmarked_files,
)
from tiny import build_tiny_model_dir
from train_helpers import grouped

pytestmark = pytest.mark.usefixtures("prefect_harness")

KILLED = -signal.SIGKILL
TRAIN_STEPS = 6  # 48 train pairs / global batch 8; checkpoints at 2, 4, 6


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny model, a small generated mirror, a two-source recipe with one held-out split."""
    from rmcore.data.sample_data import write_sample_mirror
    from rmcore.data.sample_rewardbench import write_rewardbench_sample

    tmp = tmp_path_factory.mktemp("faults-kill")
    model = build_tiny_model_dir(tmp / "tiny")
    data = write_sample_mirror(tmp / "data", rows_per_source=24)
    write_rewardbench_sample(data, per_subset=1)
    recipe = {
        "name": "faults",
        "data": {
            "seed": 7,
            "validation_fraction": 0.1,
            "sources": [
                {"source": "helpsteer", "pairing": "all-pairs", "max_pairs": 30},
                {"source": "pku-saferlhf", "max_pairs": 24},
            ],
            "heldout": [{"source": "hh-rlhf/helpful-base", "split": "test"}],
        },
        "train": grouped({
            "model": str(model),
            "max_length": 64,
            "bf16": False,
            "micro_batch": 4,
            "global_batch": 8,
            "max_steps": TRAIN_STEPS,
            "log_every": 1,
            "checkpoint_every": 2,
            "keep_checkpoints": 5,
        }),
        "eval": {"batch_size": 8, "max_length": 64, "bf16": False, "sample_per_subset": 1},
        "register": {"model_name": "faults-reward"},
    }
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return {"recipe": str(path), "data": str(data), "tmp": tmp}


def _args(setup: dict, work: Path) -> dict:
    return {"recipe": setup["recipe"], "data_dir": setup["data"], "work_dir": str(work)}


@pytest.fixture(scope="module")
def reference_data(setup: dict) -> dict:
    """One uninterrupted mixture flow (download, clean, mixture)."""
    from flows.mixture import mixture_flow

    work = setup["tmp"] / "reference-data"
    mixture_flow(**_args(setup, work))
    return {"work": work, "digests": stage_digests(work)}


@pytest.fixture(scope="module")
def reference(setup: dict) -> dict:
    """One uninterrupted evaluate flow (data stages + training + evaluation)."""
    from flows.evaluate import evaluate_flow

    work = setup["tmp"] / "reference"
    evaluate_flow(**_args(setup, work))
    return {"work": work, "digests": stage_digests(work), "model": _final_model(work)}


def _final_model(work: Path) -> Path:
    (model_root,) = stage_dirs(work, "models")
    return model_root / "model"


def _kill(setup: dict, work: Path, call: str, hook: dict, tmp_path: Path, **env: str) -> None:
    config = {"call": call, "kwargs": _args(setup, work), "hooks": [hook]}
    status = run_child(config, child_env(**env), tmp_path / "child.log")
    log = (tmp_path / "child.log").read_text()
    assert status == KILLED, f"the child was not killed at the hook (exit {status}):\n{log[-4000:]}"


# --- data stages: download, clean, mixture ------------------------------------------------

DATA_KILLS = {
    # One source's raw table is published in the stage folder; its bad-rows table is half written.
    "download": {"target": "pyarrow.parquet:write_table", "mode": "torn", "match": "bad_rows.parquet"},
    # One source's cleaned pairs are written; its quarantine table is half written.
    "clean": {"target": "pyarrow.parquet:write_table", "mode": "torn", "match": "quarantine.parquet"},
    # The mixture table, stats and stats table are written; the process dies before the manifest.
    "mixture": {"target": "rmcore.io:write_json", "mode": "kill-before", "match": ["/mixtures/", "manifest"]},
}


@pytest.mark.parametrize("stage", list(DATA_KILLS))
def test_kill_during_data_stage_then_rerun_equals_uninterrupted(
    stage: str, setup: dict, reference_data: dict, tmp_path: Path
):
    from flows.mixture import mixture_flow

    work = tmp_path / "work"
    _kill(setup, work, "flows.mixture:mixture_flow", DATA_KILLS[stage], tmp_path)
    assert visible_unmarked_files(work) == []
    assert any(p.name.startswith(".") for p in work.rglob("*.tmp")), "the kill left no temp output to ignore"

    mixture_flow(**_args(setup, work))
    assert stage_digests(work) == reference_data["digests"]
    assert visible_unmarked_files(work) == []
    assert sorted(work.rglob("*.tmp")) == []  # the rerun removed the dead run's temp outputs


# --- training: mid-epoch and mid-checkpoint-save ------------------------------------------

TRAIN_KILLS = {
    # Before the 4th optimizer step: steps 1-3 done, the last checkpoint is step 2.
    "mid-epoch": {"target": "rmcore.train.loop:Loop.train_step", "mode": "kill-before", "nth": 4},
    # Checkpoint 4: weights saved in its temp folder, optimizer state half written.
    "mid-checkpoint-save": {
        "target": "torch:save",
        "mode": "torn",
        "match": ["step-0000004", "training_state.pt"],
        "path_arg": 1,
    },
}


def _complete_checkpoints(partial: Path) -> list[str]:
    """Names of the checkpoint folders at final names; each must load (weights + state)."""
    import torch
    from safetensors.torch import load_file

    names = []
    for ckpt in sorted((partial / "checkpoints").glob("step-*")):
        load_file(str(ckpt / "model.safetensors"))
        torch.load(ckpt / "training_state.pt", weights_only=True)
        assert (ckpt / "trainer_state.json").is_file()
        names.append(ckpt.name)
    return names


@pytest.mark.slow
@pytest.mark.parametrize("point", list(TRAIN_KILLS))
def test_kill_during_training_then_rerun_resumes_to_the_same_weights(
    point: str, setup: dict, reference: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    from flows.train import train_flow
    from rmcore.train.loop import Loop

    work = tmp_path / "work"
    _kill(setup, work, "flows.train:train_flow", TRAIN_KILLS[point], tmp_path)
    assert visible_unmarked_files(work) == []
    assert stage_dirs(work, "models") == []  # nothing published under the model's final name
    (partial,) = (work / "models").glob("*.partial")
    assert _complete_checkpoints(partial) == ["step-0000002"]

    steps = []
    real_step = Loop.train_step

    def counted(self, batch):  # pass-through: counts the optimizer steps the rerun really takes
        steps.append(len(batch))
        return real_step(self, batch)

    monkeypatch.setattr(Loop, "train_step", counted)
    result = train_flow(**_args(setup, work))
    assert len(steps) == TRAIN_STEPS - 2  # resumed after the step-2 checkpoint
    assert Path(result["model_dir"]) == _final_model(work)
    assert same_weights(_final_model(work), reference["model"])
    assert visible_unmarked_files(work) == []
    assert not list((_final_model(work).parent / "checkpoints").glob(".tmp-*"))
    assert _complete_checkpoints(_final_model(work).parent)[-1] == f"step-{TRAIN_STEPS:07d}"


# --- evaluation -----------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_during_evaluation_then_rerun_equals_uninterrupted(setup: dict, reference: dict, tmp_path: Path):
    from flows.evaluate import evaluate_flow

    work = tmp_path / "work"
    # RewardBench scores and reports are written; the held-out scores table is half written.
    hook = {"target": "pyarrow.parquet:write_table", "mode": "torn", "match": ["/eval/", "heldout"]}
    _kill(setup, work, "flows.evaluate:evaluate_flow", hook, tmp_path)
    assert visible_unmarked_files(work) == []
    assert stage_dirs(work, "eval") == []

    evaluate_flow(**_args(setup, work))
    assert stage_digests(work) == reference["digests"]
    assert visible_unmarked_files(work) == []


# --- registration -----------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_right_after_registration_then_rerun_registers_no_duplicate(
    setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import mlflow

    from flows.pipeline import pipeline_flow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)  # this store for the registry too, whatever ran before
    work = tmp_path / "work"
    # MLflow has created version 1 (with its tags); the process dies before alias and gate.
    hook = {"target": "mlflow:register_model", "mode": "kill-after"}
    _kill(setup, work, "flows.pipeline:pipeline_flow", hook, tmp_path, MLFLOW_TRACKING_URI=uri)
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    (killed,) = client.search_model_versions("name = 'faults-reward'")
    assert int(killed.version) == 1 and not killed.aliases

    summary = pipeline_flow(**_args(setup, work))
    assert summary["registered"]["version"] == 1 and summary["registered"]["created"] is False
    versions = client.search_model_versions("name = 'faults-reward'")
    assert [int(v.version) for v in versions] == [1]
    assert sorted(client.get_model_version("faults-reward", "1").aliases) == ["candidate", "champion"]
