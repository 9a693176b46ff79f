"""Registry against a real SQLite MLflow store: registered model scores like its folder,
idempotent re-register, the champion gate, and no secret anywhere the run wrote."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from mlflow_helpers import ROWS, direct_rewards, model_lineage, tiny_reward_dir

import tracking
from tracking import registry

NAME = "rmflow-reward"
LINEAGE = {
    "rmflow.mixture_digest": "d" * 64,
    "rmflow.config_hash": "0123456789abcdef",
    "rmflow.git_revision": "abc123",
}

# conftest's per-test SQLite store, but copied from a migrated template DB (saves 10-15 s a test)


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory) -> list[Path]:
    """Three tiny reward models that differ (different init seeds, so different digests)."""
    root = tmp_path_factory.mktemp("models")
    return [tiny_reward_dir(root / f"m{seed}", seed=seed) for seed in range(3)]


def _run(mlflow_uri: str, pipeline_run_id: str) -> str:
    return tracking.start_pipeline_run(
        pipeline_run_id, config=tracking.TrackingConfig(tracking_uri=mlflow_uri)
    )


def test_registered_model_loads_back_and_scores_like_the_folder(mlflow_uri, model_dirs):
    import mlflow.pyfunc

    run_id = _run(mlflow_uri, "pipe-1")
    result = registry.register_reward_model(
        model_dirs[0], name=NAME, run_id=run_id, tags=LINEAGE, rewardbench_overall=61.25
    )
    assert (result.version, result.created, result.model_uri) == (1, True, f"models:/{NAME}/1")
    c = tracking.client()
    mv = c.get_model_version_by_alias(NAME, "candidate")
    assert (int(mv.version), mv.run_id) == (1, run_id)
    assert {k: mv.tags[k] for k in LINEAGE} == LINEAGE
    assert mv.tags[registry.TAG_SCORE] == "61.25"
    assert mv.tags[registry.TAG_MODEL_DIGEST] == registry.model_dir_digest(model_dirs[0])
    assert c.get_run(run_id).info.status == "RUNNING"  # logging the model did not end the pipeline's run

    loaded = mlflow.pyfunc.load_model(f"models:/{NAME}@candidate")
    np.testing.assert_allclose(
        loaded.predict(ROWS)["reward"].to_numpy(), direct_rewards(model_dirs[0], ROWS), rtol=0, atol=1e-6
    )


def test_registering_the_same_run_and_model_twice_keeps_one_version(mlflow_uri, model_dirs):
    run_id = _run(mlflow_uri, "pipe-1")
    first = registry.register_reward_model(
        model_dirs[0], name=NAME, run_id=run_id, tags=LINEAGE, rewardbench_overall=50.0
    )
    again = registry.register_reward_model(
        model_dirs[0], name=NAME, run_id=run_id, tags=LINEAGE, rewardbench_overall=50.0
    )
    assert (first.version, first.created) == (1, True)
    assert (again.version, again.created) == (1, False)
    assert len(tracking.client().search_model_versions(f"name = '{NAME}'")) == 1
    # a different model from the same run is a new version
    other = registry.register_reward_model(
        model_dirs[1], name=NAME, run_id=run_id, tags=LINEAGE, rewardbench_overall=50.0
    )
    assert (other.version, other.created) == (2, True)
    assert int(tracking.client().get_model_version_by_alias(NAME, "candidate").version) == 2


def _register(mlflow_uri: str, folder: Path, pipeline_run_id: str, score: float) -> tuple[int, str]:
    run_id = _run(mlflow_uri, pipeline_run_id)
    r = registry.register_reward_model(
        folder, name=NAME, run_id=run_id, tags=LINEAGE, rewardbench_overall=score
    )
    return r.version, run_id


def test_gate_promotes_first_equal_and_better_and_refuses_worse(mlflow_uri, model_dirs):
    c = tracking.client()
    v1, _ = _register(mlflow_uri, model_dirs[0], "p1", 60.0)
    first = registry.promote_if_better(NAME, v1, 60.0)
    assert (first.promoted, first.champion_before, first.champion_score) == (True, None, None)
    assert first.reason == "first champion (RewardBench overall 60.0000)"

    v2, _ = _register(mlflow_uri, model_dirs[1], "p2", 60.0)
    equal = registry.promote_if_better(NAME, v2, 60.0)
    assert (equal.promoted, equal.champion_before, equal.champion_score) == (True, 1, 60.0)
    assert int(c.get_model_version_by_alias(NAME, "champion").version) == 2

    v3, run3 = _register(mlflow_uri, model_dirs[2], "p3", 59.9)
    worse = registry.promote_if_better(NAME, v3, 59.9)
    assert (worse.promoted, worse.champion_before, worse.champion_score) == (False, 2, 60.0)
    assert worse.reason == "RewardBench overall 59.9000 < champion v2's 60.0000; champion stays v2"
    assert int(c.get_model_version_by_alias(NAME, "champion").version) == 2
    assert int(c.get_model_version_by_alias(NAME, "candidate").version) == 3

    # the decision is recorded on the version and on its run
    tags = c.get_model_version(NAME, "3").tags
    assert (tags[registry.TAG_DECISION], tags[registry.TAG_CHAMPION_BEFORE]) == ("refused", "2")
    assert tags[registry.TAG_REASON] == worse.reason
    run = c.get_run(run3)
    assert run.data.tags["rmflow.gate.decision"] == "refused"
    assert run.data.metrics["gate/promoted"] == 0.0
    assert c.get_model_version(NAME, "2").tags[registry.TAG_DECISION] == "promoted"

    # re-running the gate on the champion is a no-op promotion
    assert (
        registry.promote_if_better(NAME, v2, 60.0).reason == "already champion (RewardBench overall 60.0000)"
    )


def test_gate_refuses_nan_and_names_a_champion_without_a_score(mlflow_uri, model_dirs):
    c = tracking.client()
    v1, _ = _register(mlflow_uri, model_dirs[0], "p1", 55.0)
    assert registry.promote_if_better(NAME, v1, 55.0).promoted
    v2, _ = _register(mlflow_uri, model_dirs[1], "p2", math.nan)
    nan = registry.promote_if_better(NAME, v2, math.nan)
    assert (nan.promoted, nan.champion_before) == (False, 1)
    c.delete_model_version_tag(NAME, "1", registry.TAG_SCORE)
    with pytest.raises(ValueError, match=f"model {NAME} version 1 has no rmflow.rewardbench_overall tag"):
        registry.promote_if_better(NAME, v2, 70.0)


def test_nothing_a_run_writes_contains_the_hf_token(mlflow_uri, model_dirs, tmp_path, monkeypatch):
    secret = "hf_TESTSECRETvalue0123456789abcdef"
    monkeypatch.setenv("HF_TOKEN", secret)
    run_id = _run(mlflow_uri, "pipe-secret")
    # params: a secret-named key, a value holding the token under an innocent key, real params
    logged = tracking.log_params(
        run_id,
        {"hf_token": secret, "download": {"token": "abc12345", "url": f"https://x/?t={secret}"}, "lr": 1e-5},
    )
    assert logged == {"lr": "1e-05"}
    assert tracking.set_tags(run_id, {"note": f"token={secret}", "stage": "train"}) == {"stage": "train"}
    tracking.log_metrics(run_id, {"rewardbench": {"overall": 61.0}})
    mixture = tmp_path / "mixture.parquet"
    _write_small_parquet(mixture)
    tracking.log_dataset_input(
        run_id, mixture, name="mixture:v1", digest="e" * 64, context="training", extra_tags={"auth": secret}
    )
    clean = tmp_path / "stats.md"
    clean.write_text("| source | pairs |\n| a | 3 |\n")
    tracking.log_artifacts(run_id, [clean], artifact_path="reports")
    leaky = tmp_path / "leaky.json"
    leaky.write_text(f'{{"token": "{secret}"}}')
    with pytest.raises(tracking.SecretLeakError, match="leaky.json: contains the value of a secret"):
        tracking.log_artifacts(run_id, [leaky])
    version = registry.register_reward_model(
        model_dirs[0], name=NAME, run_id=run_id, tags={**LINEAGE, "x": secret}, rewardbench_overall=61.0
    ).version
    registry.promote_if_better(NAME, version, 61.0)
    tracking.end_pipeline_run(run_id)

    store = Path(mlflow_uri[len("sqlite:///") :]).parent
    written = [p for p in store.rglob("*") if p.is_file() and p != leaky]
    assert any(p.name == "mlflow.db" for p in written) and any("artifacts" in p.parts for p in written)
    assert [p for p in written if secret.encode() in p.read_bytes()] == []


def test_lineage_leads_from_a_version_to_the_mixture_and_its_manifest(mlflow_uri, model_dirs, tmp_path):
    import json

    mixture = tmp_path / "mixture.parquet"
    _write_small_parquet(mixture)
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"digest": "f" * 64, "inputs": [{"key": "hh", "digest": "0" * 64}]}))
    run_id = _run(mlflow_uri, "pipe-lineage")
    tracking.log_dataset_input(
        run_id,
        mixture,
        name="mixture-demo",
        digest="f" * 64,
        context="training",
        manifest_path=manifest,
        rows=2,
    )
    version = registry.register_reward_model(
        model_dirs[0], name=NAME, run_id=run_id, tags=LINEAGE, rewardbench_overall=40.0
    ).version
    lineage = model_lineage(NAME, "candidate")
    assert (lineage["version"], lineage["aliases"], lineage["run_id"]) == (version, ["candidate"], run_id)
    assert lineage["tags"]["rmflow.mixture_digest"] == LINEAGE["rmflow.mixture_digest"]
    [mix] = lineage["inputs"]
    assert (mix["name"], mix["tags"]["rmflow.digest"], mix["source"]) == (
        "mixture-demo",
        "f" * 64,
        {"uri": str(mixture)},
    )
    assert mix["manifest"]["inputs"] == [{"key": "hh", "digest": "0" * 64}]
    assert model_lineage(NAME, version) == lineage


def _write_small_parquet(path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"pair_id": ["a", "b"], "chosen_score": [1.0, 2.0]}), path)


def test_a_withdrawn_duplicate_leaves_no_logged_model_in_its_run(mlflow_uri, model_dirs):
    """Two runs registering one folder at once: the later version is withdrawn (tasks.register),
    and the model its run logged goes with it."""
    from tasks.register import withdraw_version

    c = tracking.client()
    v1, run1 = _register(mlflow_uri, model_dirs[0], "race-1", 60.0)
    v2, run2 = _register(mlflow_uri, model_dirs[0], "race-2", 60.0)
    assert (v1, v2) == (1, 2)

    def logged(run_id: str) -> list:
        experiment = c.get_run(run_id).info.experiment_id
        return [m for m in c.search_logged_models(experiment_ids=[experiment]) if m.source_run_id == run_id]

    assert len(logged(run2)) == 1
    withdraw_version(NAME, v2)
    assert [int(v.version) for v in c.search_model_versions(f"name = '{NAME}'")] == [1]
    assert logged(run2) == [] and len(logged(run1)) == 1


def test_a_champion_whose_run_was_killed_is_no_bar_for_the_next_version(mlflow_uri, model_dirs):
    """A pipeline killed after promoting (its MLflow run later marked KILLED) left a champion that
    never finished: the next version replaces it, and the gate says why."""
    c = tracking.client()
    v1, run1 = _register(mlflow_uri, model_dirs[0], "killed-1", 70.0)
    assert registry.promote_if_better(NAME, v1, 70.0).promoted
    c.set_terminated(run1, "KILLED")
    v2, _ = _register(mlflow_uri, model_dirs[1], "killed-2", 50.0)  # lower, but v1 is no bar
    decision = registry.promote_if_better(NAME, v2, 50.0)
    assert decision.promoted and registry.current_champion(NAME) == v2
    assert f"champion v1's run {run1} ended KILLED: not a valid bar" in decision.reason
    # a finished champion stays the bar
    v3, _ = _register(mlflow_uri, model_dirs[2], "killed-3", 40.0)
    assert not registry.promote_if_better(NAME, v3, 40.0).promoted


@pytest.mark.usefixtures("prefect_harness")
def test_a_cached_rerun_changes_nothing_registered_before(mlflow_uri, model_dirs):
    """The second pipeline run reuses version 1: v1's tags and its original run's tags stay byte for
    byte as the first run left them; the task says which run it reused."""
    from prefect import flow

    from tasks.register import register_task

    @flow
    def register(run_id: str) -> dict:
        return register_task(
            str(model_dirs[0]), name=NAME, run_id=run_id, tags=LINEAGE, rewardbench_overall=60.0, promote=True
        )

    c = tracking.client()
    run1 = _run(mlflow_uri, "first")
    first = register(run1)
    assert (first["version"], first["created"], first["gate"]["promoted"]) == (1, True, True)
    version_tags = dict(c.get_model_version(NAME, "1").tags)
    run_tags = dict(c.get_run(run1).data.tags)
    assert version_tags[registry.TAG_REASON].startswith("first champion")

    run2 = _run(mlflow_uri, "rerun")
    again = register(run2)
    assert (again["version"], again["created"], again["reused_run"]) == (1, False, run1)
    assert dict(c.get_model_version(NAME, "1").tags) == version_tags
    assert dict(c.get_run(run1).data.tags) == run_tags
    assert again["gate"]["reused"] is True and again["gate"]["reason"] == version_tags[registry.TAG_REASON]
    assert registry.current_champion(NAME) == 1
