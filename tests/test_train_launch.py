"""Every device of the node: the train flow launches N ranks itself (torch elastic launcher).

On this CPU machine ``train.processes: 2`` starts two gloo ranks through ``torchrun``; the
model they train must be the in-process model (the tolerance of the DeepSpeed tests), the
placement keys must not change the cache key, and a failing rank must fail the task with
that rank's own last lines.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file
from tiny import build_tiny_model_dir
from train_helpers import grouped, toy_pairs, train_config, write_mixture

from rmcore.config import ConfigError, config_hash
from rmcore.train import ListSink, train_reward_model
from rmcore.train.launch import LaunchError, launch_torchrun, rank_command, resolve_processes

REPO = Path(__file__).resolve().parents[1]
ZERO2 = str(REPO / "deployments" / "deepspeed" / "zero2.json")
BASE = {
    "max_length": 64,
    "lr": 3e-3,
    "micro_batch": 2,
    "global_batch": 8,  # 2 ranks x 2 accumulation steps x 2 pairs
    "epochs": 1,
    "log_every": 1,
    "eval_fraction": 0.2,
    "bf16": False,
}


def test_processes_auto_is_one_per_visible_device_with_deepspeed():
    plain = train_config(model="m")
    zero = train_config(model="m", deepspeed=ZERO2)
    assert resolve_processes(plain, devices=8) == 1  # no DeepSpeed: nothing averages the gradients
    assert resolve_processes(zero, devices=8) == 8
    assert resolve_processes(zero, devices=0) == 1  # CPU
    assert resolve_processes(replace(zero, processes=3), devices=8) == 3


def test_more_than_one_process_needs_deepspeed():
    with pytest.raises(ConfigError, match=r"processes: 2 needs a deepspeed config"):
        train_config(model="m", processes=2)


def test_where_training_runs_is_not_part_of_the_cache_key():
    cfg = train_config(model="m", deepspeed=ZERO2)
    moved = replace(cfg, processes=2, work_pool="gpu", launcher="ray", dispatch_timeout_s=60.0)
    assert config_hash(moved) == config_hash(cfg)
    assert config_hash(replace(cfg, seed=7)) != config_hash(cfg)  # what it computes still is


def test_each_rank_runs_the_rmflow_train_entry_point(tmp_path):
    cmd = rank_command(tmp_path / "c.yaml", tmp_path / "m.parquet", tmp_path / "out", tmp_path / "r.json")
    assert cmd[:3] == ["-m", "rmflow.cli", "train"]
    assert "--result-json" in cmd and "--no-resume" not in cmd


@pytest.fixture
def launched(tmp_path, prefect_harness):
    """The train flow with ``train.processes: 2``: its task launches two torchrun ranks."""
    from flows.train import train_flow

    model = build_tiny_model_dir(tmp_path / "bert", "bert", pooling="mean")  # beside the recipe: allowed
    mix = write_mixture(tmp_path / "mix.parquet", toy_pairs(45))
    train = {"model": str(model), "deepspeed": ZERO2, "processes": 2, **BASE}
    recipe = tmp_path / "launch.yaml"
    recipe.write_text(
        yaml.safe_dump(
            {"name": "launch", "data": {"sources": [{"source": "helpsteer"}]}, "train": grouped(train)}
        )
    )
    from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: True}):  # logs into the Prefect API
        state = train_flow(
            recipe=str(recipe), work_dir=str(tmp_path / "work"), mixture_path=str(mix), return_state=True
        )
    return train_config(**train), mix, state.result(), _flow_logs(state.state_details.flow_run_id)


def _flow_logs(flow_run_id, settle_seconds: float = 20.0) -> list[str]:
    """The flow run's log messages as the Prefect API holds them (they arrive in batches)."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=settle_seconds)
    deadline, seen = time.monotonic() + settle_seconds, -1
    with get_client(sync_client=True) as client:
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
            if len(logs) == seen or time.monotonic() > deadline:
                return [log.message for log in logs]
            seen = len(logs)
            time.sleep(1.0)


@pytest.mark.slow
def test_the_train_flow_launches_two_ranks_that_train_the_in_process_model(tmp_path, launched):
    """~60 s: two torchrun ranks (gloo, ZeRO-2) vs the same ZeRO-2 run in this process."""
    config, mix, result, lines = launched
    ref = train_reward_model(
        replace(config, processes=1), mixture_path=mix, output_dir=tmp_path / "one", sink=ListSink()
    )
    assert result["steps"] == ref.steps == 5  # 36 train pairs / global batch 8
    assert result["metrics"]["train/loss"] == pytest.approx(ref.metrics["train/loss"], abs=1e-4)
    assert result["metrics"]["eval/loss"] == pytest.approx(ref.metrics["eval/loss"], abs=1e-4)
    two = load_file(Path(result["model_dir"]) / "model.safetensors")
    one = load_file(ref.model_dir / "model.safetensors")
    assert two.keys() == one.keys()
    diffs = {k: (two[k].float() - one[k].float()).abs().max().item() for k in one}
    # A reward shift (the head's bias, the last LayerNorm's bias under mean pooling) moves chosen and
    # rejected alike: its Bradley-Terry gradient is exactly 0, so what it gets is rounding noise,
    # which Adam scales up to steps of ~lr. Those two may differ by up to steps * lr; the rest by 1e-4.
    shift = {"classifier.bias", "bert.encoder.layer.1.output.LayerNorm.bias"}
    assert max(d for k, d in diffs.items() if k not in shift) < 1e-4
    assert max(diffs[k] for k in shift) <= result["steps"] * BASE["lr"]
    # rank 0's progress reached the flow run's Prefect logs; the ranks ran the config written for them
    assert any("launching 2 training processes" in line for line in lines), lines
    assert any("train step 5/5" in line for line in lines), lines[-20:]  # rank 0's progress lines
    out = Path(result["model_dir"]).parent
    written = yaml.safe_load((out / "launch" / "train.yaml").read_text())
    assert written["deepspeed"] == ZERO2 and "processes" not in written and "work_pool" not in written
    assert grouped(BASE)["optim"]["lr"] == written["optim"]["lr"]
    # every rank's own log file exists
    assert {p.parent.name for p in (out / "launch" / "logs").glob("*/attempt_*/*/stderr.log")} == {
        "0",
        "1",
    }


def test_a_failing_rank_fails_the_launch_with_its_last_lines(tmp_path, tiny_bert):
    bad = tmp_path / "mix.parquet"
    bad.write_bytes(b"not a parquet file")
    config = train_config(model=str(tiny_bert), deepspeed=ZERO2, processes=2, **BASE)
    with pytest.raises(LaunchError) as err:
        launch_torchrun(config, bad, tmp_path / "out", processes=2, on_line=lambda _: None)
    message = str(err.value)
    assert "torchrun exit code 1" in message
    assert "rank 0 failed; its last lines" in message or "rank 1 failed; its last lines" in message
    assert "mix.parquet" in message  # the rank's own error, not just the launcher's
