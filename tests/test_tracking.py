"""Tracking helpers against a real SQLite MLflow store: store location, one run per pipeline
run, flattened params, metric trees, the training sink, dataset lineage, artifacts."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pyarrow as pa
import pytest

import tracking
from data_contracts import MIXTURE
from rmcore.io import table_digest, write_table
from tracking.sinks import MlflowMetricsSink

# mlflow_uri: conftest's per-test SQLite store (a copy of a migrated template DB)


def _config(uri: str) -> tracking.TrackingConfig:
    return tracking.TrackingConfig(tracking_uri=uri)


# ------------------------------------------------------------- store location (no MLflow calls)


def test_tracking_uri_config_beats_env_beats_local_default(tmp_path):
    env = {"RMFLOW_HOME": str(tmp_path / "home")}
    assert (
        tracking.resolve_tracking_uri(None, env) == f"sqlite:///{tmp_path / 'home' / 'mlflow' / 'mlflow.db'}"
    )
    env["MLFLOW_TRACKING_URI"] = "http://127.0.0.1:5000"
    assert tracking.resolve_tracking_uri(None, env) == "http://127.0.0.1:5000"
    assert tracking.resolve_tracking_uri(_config("sqlite:////x/y.db"), env) == "sqlite:////x/y.db"
    # the files `rmflow up` serves (rmflow/stack.py: <home>/mlflow/mlflow.db, <home>/mlflow/artifacts)
    assert tracking.local_store_paths(tmp_path) == (
        tmp_path / "mlflow" / "mlflow.db",
        tmp_path / "mlflow" / "artifacts",
    )


def test_secret_keys_and_values_are_recognised(monkeypatch):
    monkeypatch.setenv("MY_API_KEY", "k-1234567890")
    secrets = tracking.secret_values()
    assert "k-1234567890" in secrets
    assert tracking.is_secret("hf_token", "x", secrets)
    assert tracking.is_secret("db.password", "x", secrets)
    assert tracking.is_secret("auth.api_key", "x", secrets)
    assert tracking.is_secret("url", "https://h/?k=k-1234567890", secrets)
    assert not tracking.is_secret("tokenizer", "bert", secrets)
    assert not tracking.is_secret("max_tokens", "512", secrets)


def test_flatten_nested_config():
    cfg = {
        "recipe": "v1",
        "train": {"lr": 1e-5, "batch": 8},
        "sources": [{"source": "a"}, {"source": "b"}],
        "tags": ["x", "y"],
    }
    assert tracking.flatten(cfg) == {
        "recipe": "v1",
        "train.lr": 1e-5,
        "train.batch": 8,
        "sources.0.source": "a",
        "sources.1.source": "b",
        "tags": ["x", "y"],
    }


# ------------------------------------------------------------- runs


def test_one_run_per_pipeline_run_and_artifacts_beside_the_db(mlflow_uri, tmp_path):
    first = tracking.start_pipeline_run("pipe-A", config=_config(mlflow_uri), run_name="v1")
    tracking.end_pipeline_run(first)
    again = tracking.start_pipeline_run("pipe-A", config=_config(mlflow_uri))  # a retried stage
    other = tracking.start_pipeline_run("pipe-B", config=_config(mlflow_uri))
    assert again == first and other != first
    c = tracking.client()
    assert c.get_run(first).info.status == "RUNNING"
    assert c.get_run(first).data.tags[tracking.PIPELINE_RUN_TAG] == "pipe-A"
    experiment = c.get_experiment_by_name(tracking.DEFAULT_EXPERIMENT)
    assert experiment.artifact_location == str(tmp_path / "artifacts" / "rmflow")
    assert len(c.search_runs([experiment.experiment_id])) == 2


def test_runs_left_running_by_a_dead_pipeline_process_are_closed_as_killed(mlflow_uri):
    """The next pipeline on this host closes a killed pipeline's run, and only that one."""
    import subprocess
    import sys

    from tracking.orphan_runs import HOST_TAG, PID_TAG

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # its pid no longer exists
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        cfg = _config(mlflow_uri)
        runs = {
            name: tracking.start_pipeline_run(name, config=cfg)
            for name in ("killed", "live", "remote", "done")
        }
        c = tracking.client()
        assert c.get_run(runs["live"]).data.tags[PID_TAG] == str(os.getpid())  # the owner is recorded
        for name, pid in (("killed", dead.pid), ("live", live.pid), ("remote", dead.pid), ("done", dead.pid)):
            c.set_tag(runs[name], PID_TAG, str(pid))
        c.set_tag(runs["remote"], HOST_TAG, "another")  # another machine: its pids mean nothing here
        tracking.end_pipeline_run(runs["done"])
        runs["next"] = tracking.start_pipeline_run("next", config=cfg)
        status = {name: c.get_run(run_id).info.status for name, run_id in runs.items()}
        assert status == {
            "killed": "KILLED", "live": "RUNNING", "remote": "RUNNING", "done": "FINISHED", "next": "RUNNING",
        }  # fmt: skip
    finally:
        live.kill()
        live.wait()


def test_params_are_flattened_filtered_and_retry_safe(mlflow_uri):
    run_id = tracking.start_pipeline_run("p", config=_config(mlflow_uri))
    params = {
        "recipe": "v1",
        "config_hash": "0123abcd",
        "train": {"lr": 2e-5, "max_length": 256},
        "hub": {"token": "t0k3n-xyz"},
    }
    logged = tracking.log_params(run_id, params)
    expected = {"recipe": "v1", "config_hash": "0123abcd", "train.lr": "2e-05", "train.max_length": "256"}
    assert logged == expected
    assert tracking.client().get_run(run_id).data.params == expected
    assert tracking.log_params(run_id, params) == {}  # a retried stage logs the same params again
    with pytest.raises(ValueError, match=r"param 'train.lr' is already '2e-05', cannot log '3e-05'"):
        tracking.log_params(run_id, {"train": {"lr": 3e-5}})


def test_metric_trees_become_slash_keys(mlflow_uri):
    run_id = tracking.start_pipeline_run("p", config=_config(mlflow_uri))
    summary = {
        "overall": 71.5,
        "categories": {"Chat": 90.0, "Chat Hard": 45.25},
        "subsets": {"alpacaeval-easy": {"accuracy": 0.97, "ties": 1}},
        "model": "tiny",  # not a metric
        "complete": True,  # not a metric
    }
    logged = tracking.log_metrics(run_id, summary, prefix="rewardbench")
    expected = {
        "rewardbench/overall": 71.5,
        "rewardbench/categories/Chat": 90.0,
        "rewardbench/categories/Chat Hard": 45.25,
        "rewardbench/subsets/alpacaeval-easy/accuracy": 0.97,
        "rewardbench/subsets/alpacaeval-easy/ties": 1.0,
    }
    assert logged == expected
    assert tracking.client().get_run(run_id).data.metrics == expected
    # a trailing slash on the prefix and characters MLflow refuses do not break logging
    final = tracking.log_metrics(run_id, {"loss": 0.5, "hh (test)": {"acc": 0.61}}, prefix="final/")
    assert final == {"final/loss": 0.5, "final/hh _test_/acc": 0.61}


def test_training_sink_writes_curves_with_steps(mlflow_uri):
    run_id = tracking.start_pipeline_run("p", config=_config(mlflow_uri))
    with MlflowMetricsSink(run_id, prefix="train/", flush_every=2) as sink:
        for step, loss in enumerate([0.69, 0.6, 0.5]):
            sink.log_metrics({"loss": loss, "accuracy": 0.5 + step / 10}, step)
    history = tracking.client().get_metric_history(run_id, "train/loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [
        (0, 0.69),
        (1, 0.6),
        (2, 0.5),
    ]
    assert len(tracking.client().get_metric_history(run_id, "train/accuracy")) == 3
    with pytest.raises(TypeError, match="metric 'loss' at step 3: expected a number"):
        sink.log_metrics({"loss": "high"}, 3)


def test_training_sink_flushes_by_time_so_curves_grow_while_training(mlflow_uri, monkeypatch):
    from tracking import sinks

    run_id = tracking.start_pipeline_run("p", config=_config(mlflow_uri))
    clock = [1000.0]
    monkeypatch.setattr(sinks.time, "monotonic", lambda: clock[0])
    sink = MlflowMetricsSink(run_id, flush_every=100, flush_seconds=30)
    sink.log_metrics({"train/loss": 0.69}, 1)
    clock[0] += 29  # under 30 s and under 100 calls: still buffered
    sink.log_metrics({"train/loss": 0.6}, 2)
    assert tracking.client().get_metric_history(run_id, "train/loss") == []
    clock[0] += 1  # 30 s since the sink started: this call writes all three
    sink.log_metrics({"train/loss": 0.5}, 3)
    history = tracking.client().get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(1, 0.69), (2, 0.6), (3, 0.5)]


@pytest.mark.slow  # trains a tiny model for 2 steps (~5 s idle, ~30 s on 2 busy cores)
def test_training_loop_reports_through_the_sink(mlflow_uri, tmp_path):
    from tiny import build_tiny_model_dir
    from train_helpers import tiny_config, toy_pairs, write_mixture

    from rmcore.train import train_reward_model

    model = build_tiny_model_dir(tmp_path / "bert", "bert", pooling="mean")
    mixture = write_mixture(tmp_path / "mixture.parquet", toy_pairs(20))
    config = tiny_config(model, warmup_ratio=0.05)  # TrainConfig's default warmup
    run_id = tracking.start_pipeline_run("p", config=_config(mlflow_uri))
    with MlflowMetricsSink(run_id) as sink:
        result = train_reward_model(config, mixture_path=mixture, output_dir=tmp_path / "out", sink=sink)
    # 20 pairs, 20% held out -> 16 train pairs -> 2 steps of 8, each logged once
    assert result.steps == 2
    history = tracking.client().get_metric_history(run_id, "train/loss")
    assert sorted(m.step for m in history) == [1, 2]
    metrics = tracking.client().get_run(run_id).data.metrics
    assert {"train/accuracy", "train/tokens_per_s", "train/grad_norm"} <= set(metrics)


def _mixture(tmp_path: Path) -> tuple[Path, Path, str]:
    msg = [{"role": "user", "content": "hi"}]
    table = pa.table(
        {
            "pair_id": ["p1", "p2"],
            "source": ["hh-rlhf/helpful-base"] * 2,
            "prompt": [msg, msg],
            "chosen": [msg + [{"role": "assistant", "content": "hello"}]] * 2,
            "rejected": [msg + [{"role": "assistant", "content": "go away"}]] * 2,
            "chosen_score": [None, None],
            "rejected_score": [None, None],
            "split": ["train", "train"],
            "subset": ["hh-rlhf/helpful-base/train"] * 2,
        },
        schema=MIXTURE.schema,
    )
    path = tmp_path / "mixture" / "mixture.parquet"
    write_table(table, path, MIXTURE)
    manifest = tmp_path / "mixture" / "manifest.json"
    manifest.write_text(json.dumps({"digest": table_digest(table)}))
    return path, manifest, table_digest(table)


def test_dataset_input_records_path_digest_manifest_and_schema(mlflow_uri, tmp_path):
    path, manifest, digest = _mixture(tmp_path)
    run_id = tracking.start_pipeline_run("p", config=_config(mlflow_uri))
    tracking.log_dataset_input(
        run_id, path, name="mixture:v1", digest=digest, context="training", manifest_path=manifest, rows=2
    )
    [entry] = tracking.run_inputs(run_id)
    assert entry["name"] == "mixture:v1"
    assert entry["digest"] == digest[:32]
    assert entry["source"] == {"uri": str(path.resolve())}
    assert entry["tags"] == {
        "mlflow.data.context": "training",
        "rmflow.digest": digest,
        "rmflow.path": str(path.resolve()),
        "rmflow.manifest": str(manifest.resolve()),
        "rmflow.rows": "2",
    }
    schema = json.loads(tracking.client().get_run(run_id).inputs.dataset_inputs[0].dataset.schema)
    columns = {c["name"]: c["type"] for c in schema["mlflow_colspec"]}
    assert list(columns) == [f.name for f in MIXTURE.schema]
    assert (columns["pair_id"], columns["chosen_score"], columns["chosen"]) == ("string", "double", "array")
    with pytest.raises(FileNotFoundError, match="missing.parquet: dataset to log"):
        tracking.log_dataset_input(
            run_id, tmp_path / "missing.parquet", name="x", digest="0", context="training"
        )


def test_artifacts_land_in_the_run(mlflow_uri, tmp_path):
    run_id = tracking.start_pipeline_run("p", config=_config(mlflow_uri))
    stats = tmp_path / "stats.md"
    stats.write_text("| source | pairs |\n")
    plots = tmp_path / "plots"
    plots.mkdir()
    (plots / "calibration.png").write_bytes(b"\x89PNG fake")
    assert tracking.log_artifacts(run_id, [stats, plots], artifact_path="reports") == ["stats.md", "plots"]
    names = sorted(a.path for a in tracking.client().list_artifacts(run_id, "reports"))
    assert names == ["reports/plots", "reports/stats.md"]
    assert [a.path for a in tracking.client().list_artifacts(run_id, "reports/plots")] == [
        "reports/plots/calibration.png"
    ]


def test_experiments_open_as_model_training_and_a_users_choice_stays(mlflow_uri):
    from tracking.store import EXPERIMENT_KIND, EXPERIMENT_KIND_TAG

    tracking.configure(_config(mlflow_uri))
    made = tracking.ensure_experiment("fresh")
    assert tracking.client().get_experiment(made).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    untagged = tracking.client().create_experiment("made-elsewhere")  # e.g. by an older rmflow
    assert tracking.ensure_experiment("made-elsewhere") == untagged
    assert tracking.client().get_experiment(untagged).tags[EXPERIMENT_KIND_TAG] == EXPERIMENT_KIND
    chosen = tracking.client().create_experiment("genai", tags={EXPERIMENT_KIND_TAG: "genai_development"})
    tracking.ensure_experiment("genai")
    assert tracking.client().get_experiment(chosen).tags[EXPERIMENT_KIND_TAG] == "genai_development"
