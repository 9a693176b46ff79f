"""The three model types through the end-to-end pipeline (real Prefect API, real SQLite MLflow store,
tiny model, generated HelpSteer-schema mirror): each trains from its own data (pairs, rankings,
rated responses), registers with its ``rmflow.model_type`` tag, and the champion gate compares like
with like (one alias per type)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tiny import build_tiny_model_dir
from train_helpers import update_train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    from rmcore.data.sample_data import write_sample_mirror
    from rmcore.data.sample_rewardbench import write_rewardbench_sample

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)  # an earlier test's registry is not this one's
    model = build_tiny_model_dir(tmp_path / "tiny")
    data = write_sample_mirror(tmp_path / "data", rows_per_source=40)
    write_rewardbench_sample(data, per_subset=2)
    recipes = {}
    for kind in ("regression", "listwise", "bt"):
        recipe = yaml.safe_load((Path(__file__).parents[1] / f"deployments/recipes/helpsteer-{kind}.yaml").read_text())
        recipe["data"]["heldout"] = [{"source": "hh-rlhf/helpful-base", "split": "test"}]
        update_train(recipe["train"], model=str(model), max_length=96, bf16=False, epochs=2)
        recipe["eval"].update(sample_per_subset=1, bf16=False, max_length=96)
        recipe["register"] = {"model_name": "types-reward"}
        path = tmp_path / f"{kind}.yaml"
        path.write_text(yaml.safe_dump(recipe))
        recipes[kind] = path
    return {"recipes": recipes, "data": data, "work": tmp_path / "work"}


def _run(setup: dict, kind: str) -> dict:
    from flows.pipeline import pipeline_flow

    return pipeline_flow(recipe=str(setup["recipes"][kind]), data_dir=str(setup["data"]), work_dir=str(setup["work"]))


def test_each_model_type_registers_tagged_and_is_gated_against_its_own_kind(setup: dict):
    import mlflow

    from rmcore import io

    summaries = {kind: _run(setup, kind) for kind in ("regression", "listwise", "bt")}
    client = mlflow.MlflowClient()  # made now: the URIs the pipeline configured (a client keeps those of its birth)
    for version, kind in enumerate(("regression", "listwise", "bt"), start=1):
        reg = summaries[kind]["registered"]
        assert reg["version"] == version and reg["champion"] == version  # each is its own kind's first
        mv = client.get_model_version("types-reward", str(version))
        assert mv.tags["rmflow.model_type"] == kind
        assert client.get_run(mv.run_id).data.tags["rmflow.model_type"] == kind
    aliases = {"champion": "3", "champion-listwise": "2", "champion-regression": "1"}
    for alias, version in aliases.items():
        assert str(client.get_model_version_by_alias("types-reward", alias).version) == version
    # the regression model: trained on the rated responses, its attributes logged, a plain folder
    regression = summaries["regression"]
    metrics = client.get_run(regression["mlflow_run_id"]).data.metrics
    assert {"eval/helpfulness_spearman", "eval/reward_length_spearman", "eval/accuracy"} <= set(metrics)
    artifacts = [a.path for a in client.list_artifacts(regression["mlflow_run_id"], "tables")]
    assert "tables/regression_attributes.json" in artifacts
    saved = io.read_json(Path(regression["model_dir"]) / "rmflow_reward.json")
    assert saved["reward_head"]["model_type"] == "regression"
    listwise = summaries["listwise"]["train_metrics"]
    assert "train/top1" in listwise and "eval/accuracy" in listwise
    # a rerun of the regression recipe reuses every stage, the rated mixture included
    again = _run(setup, "regression")
    assert again["registered"]["version"] == 1
    assert set(again["stages"]["recomputed"]) <= {"register"}, again["stages"]
    assert {"rated", "train"} <= set(again["stages"]["cached"]), again["stages"]
