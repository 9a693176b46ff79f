"""Training on Ray Train workers (``train.launcher: ray``), on a local 2-worker CPU Ray.

Ray Train places two workers (1 CPU each); each runs one rank of ``rmflow train`` (gloo,
DeepSpeed ZeRO-2). The run must be the single-process plain run: the same per-step losses
(read at full precision from the MLflow run rank 0 logged to), one exported model, rank 0's
result dict as ``launch_torchrun`` returns it; Ray's files stay under the output folder and the
local Ray ends with the launch. A failing rank fails the launch naming the rank and its error.
Skipped where Ray is not installed (``pip install 'rmflow[ray]'``).
"""

from __future__ import annotations

import re
import sys
from dataclasses import replace
from pathlib import Path

import pytest

pytest.importorskip("ray.train", reason="Ray Train is not installed (pip install 'rmflow[ray]')")

import ray
from train_helpers import toy_pairs, train_config, write_mixture

from rmcore.train import ListSink, train_reward_model
from rmcore.train.launch import LaunchError
from rmcore.train.ray_launch import launch_ray, resolve_ray_processes

REPO = Path(__file__).resolve().parents[1]
ZERO2 = str(REPO / "deployments" / "deepspeed" / "zero2.json")
BASE = {
    "max_length": 64,
    "lr": 3e-3,
    "micro_batch": 2,
    "global_batch": 8,  # 2 workers x 2 accumulation steps x 2 pairs
    "epochs": 1,
    "log_every": 1,
    "eval_fraction": 0.2,
    "bf16": False,
}
RESULT_KEYS = {
    "model_dir", "steps", "metrics", "precision", "tokens_per_s", "padding_efficiency", "data", "checkpoints",
    "model_type", "regression",
}  # fmt: skip
"""What ``rmflow train --result-json`` writes, so what ``launch_torchrun`` returns too."""


def test_processes_auto_under_ray_is_one_per_cluster_gpu_with_use_gpu():
    cpu = train_config(model="m", deepspeed=ZERO2, launcher="ray")
    gpu = train_config(model="m", deepspeed=ZERO2, launcher="ray", ray={"use_gpu": True})
    assert resolve_ray_processes(cpu, cluster_gpus=8) == 1  # CPU workers: one unless set
    assert resolve_ray_processes(gpu, cluster_gpus=8) == 8
    assert resolve_ray_processes(gpu, cluster_gpus=0) == 1
    assert resolve_ray_processes(replace(gpu, processes=3), cluster_gpus=8) == 3


def test_without_ray_the_launch_says_which_extra_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray.train.torch", None)  # as if Ray Train were not installed
    config = train_config(model="m", launcher="ray")
    with pytest.raises(LaunchError, match=r"needs Ray Train .*pip install 'rmflow\[ray\]'"):
        launch_ray(config, tmp_path / "mix.parquet", tmp_path / "out", processes=1)
    assert not (tmp_path / "out").exists()  # refused before anything was written


@pytest.mark.slow
def test_two_ray_workers_train_the_single_process_model(tmp_path, tiny_bert, mlflow_uri):
    """~1-2 min on 2 busy cores: a local Ray starts, 2 workers, ZeRO-2 (DeepSpeed compiles
    its shm comm op into TORCH_EXTENSIONS_DIR on first use: 1-2 min more)."""
    import mlflow

    mix = write_mixture(tmp_path / "mix.parquet", toy_pairs(45))  # 36 train pairs: 5 steps of 8
    plain = ListSink()
    ref = train_reward_model(
        train_config(model=str(tiny_bert), **BASE), mixture_path=mix, output_dir=tmp_path / "one", sink=plain
    )
    config = train_config(model=str(tiny_bert), deepspeed=ZERO2, processes=2, launcher="ray", **BASE)
    run_id = mlflow.MlflowClient().create_run(mlflow.MlflowClient().create_experiment("ray")).info.run_id
    lines: list[str] = []
    out = tmp_path / "two"
    assert not ray.is_initialized()
    result = launch_ray(config, mix, out, processes=2, on_line=lines.append, mlflow_run_id=run_id)
    assert not ray.is_initialized()  # the Ray this launch started has ended

    assert set(result) == RESULT_KEYS and result["steps"] == ref.steps == 5
    history = mlflow.MlflowClient().get_metric_history(run_id, "train/loss")
    assert [m.step for m in history] == [1, 2, 3, 4, 5]  # rank 0 alone logged, once per step
    assert [m.value for m in history] == pytest.approx(plain.series("train/loss"), abs=1e-4)
    assert result["metrics"]["eval/loss"] == pytest.approx(ref.metrics["eval/loss"], abs=1e-4)
    assert result["model_dir"] == str(out.resolve() / "model")
    assert (out / "model" / "model.safetensors").exists()
    shards = sorted(p.name for p in (out / "checkpoints").glob("step-*/ds/zero_pp_rank_*"))
    assert shards[-2:] == [f"zero_pp_rank_{r}_mp_rank_00_optim_states.pt" for r in (0, 1)]
    # rank 0's lines reached the caller; each rank has its log; Ray's run folder is under OUT
    assert sorted(p.name for p in (out / "launch" / "logs").iterdir()) == ["rank-0.log", "rank-1.log"]
    rank0 = [
        line for line in (out / "launch" / "logs" / "rank-0.log").read_text().splitlines() if line.strip()
    ]
    assert lines[0].startswith("launching 2 training processes (Ray Train on a local Ray, DeepSpeed)")
    assert lines[1:] == rank0 and any("DeepSpeed" in line for line in rank0)
    assert any((out / "launch" / "ray").iterdir())


@pytest.mark.slow
def test_a_failing_rank_fails_the_launch_naming_the_rank_and_its_error(tmp_path, tiny_bert):
    """~40-60 s on 2 busy cores: a local Ray and two workers whose ranks cannot read the mixture."""
    bad = tmp_path / "mix.parquet"
    bad.write_bytes(b"not a parquet file")
    config = train_config(model=str(tiny_bert), deepspeed=ZERO2, processes=2, launcher="ray", **BASE)
    with pytest.raises(LaunchError) as err:
        launch_ray(config, bad, tmp_path / "out", processes=2, on_line=lambda _: None)
    message = str(err.value)
    assert message.startswith("training launch failed (Ray Train)")
    assert re.search(r"^rank [01] failed: exited with code 1 on node \S+; its log is ", message, re.MULTILINE)
    assert "mix.parquet" in message  # the rank's own error, from its last lines
    assert not ray.is_initialized()
