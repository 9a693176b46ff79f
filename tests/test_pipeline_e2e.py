"""The end-to-end pipeline on a real Prefect API and a real SQLite MLflow store.

Tiny model, small generated mirror; proves the cache behaviour by counting the tasks that
really ran: nothing changed -> only the (idempotent) registration; one source changed ->
that source's lineage; only an evaluation setting changed -> evaluation + registration.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from flow_helpers import ran
from tiny import build_tiny_model_dir
from train_helpers import update_train

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]


@pytest.fixture
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    from rmcore.data.sample_data import write_sample_mirror
    from rmcore.data.sample_rewardbench import write_rewardbench_sample

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    model = build_tiny_model_dir(tmp_path / "tiny")
    data = write_sample_mirror(tmp_path / "data", rows_per_source=40)
    write_rewardbench_sample(data, per_subset=2)
    recipe = yaml.safe_load((Path(__file__).parents[1] / "deployments/recipes/demo.yaml").read_text())
    recipe["data"]["sources"] = [
        {"source": "helpsteer", "pairing": "all-pairs"},
        {"source": "pku-saferlhf"},
        {"source": "hh-rlhf/helpful-base"},
        {"source": "ultrafeedback", "pairing": "best-vs-random"},
    ]
    recipe["data"]["heldout"] = [{"source": "hh-rlhf/helpful-base", "split": "test"}]
    update_train(recipe["train"], model=str(model), max_length=96, bf16=False, micro_batch=8, global_batch=8)
    recipe["eval"].update(sample_per_subset=1, bf16=False, max_length=96)
    recipe["register"] = {"model_name": "e2e-reward"}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return {"recipe": path, "raw": recipe, "data": data, "work": tmp_path / "work"}


def _stats_columns() -> list[str]:
    """The columns of the newest stats table artifact, in the order the Prefect UI shows them."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["stats-demo"])), limit=1,
            sort="CREATED_DESC")
    data = json.loads(artifact.data) if isinstance(artifact.data, str) else artifact.data
    return list(data[0])


def _run(setup: dict):
    from flows.pipeline import pipeline_flow

    return pipeline_flow(
        recipe=str(setup["recipe"]),
        data_dir=str(setup["data"]),
        work_dir=str(setup["work"]),
        return_state=True,
    )


def test_pipeline_registers_champion_and_reruns_exactly_the_lineage(setup: dict):
    import mlflow

    first = _run(setup)
    summary = first.result()
    assert summary["data"].startswith("GENERATED sample data")
    assert summary["registered"]["version"] == 1 and summary["registered"]["champion"] == 1
    assert summary["mixture"]["counts"].keys() == {
        "helpsteer/train/all-pairs",
        "pku-saferlhf/train",
        "hh-rlhf/helpful-base/train",
        "ultrafeedback/train/best-vs-random",
    }
    boards = [Path(p).read_text() for p in summary["leaderboards"]]
    assert len(boards) == 2 and "UltraFeedback" in boards[0] and "generated-good" in boards[1]
    assert "leaderboards" in {
        a.path.split("/")[0] for a in mlflow.MlflowClient().list_artifacts(summary["mlflow_run_id"])
    }
    client = mlflow.MlflowClient()
    assert str(client.get_model_version_by_alias("e2e-reward", "champion").version) == "1"
    run = client.get_run(summary["mlflow_run_id"])
    assert "rewardbench/overall" in run.data.metrics and "train/loss" in run.data.metrics
    # headlines only: curves, RewardBench overall + categories, per held-out source 5 numbers;
    # calibration bins and per-subset scores are tables (9 train + 9 eval + 5 + 5 + gate = 29)
    assert len(run.data.metrics) == 29, sorted(run.data.metrics)
    assert not [k for k in run.data.metrics if "/bins/" in k or "/subset" in k or k.startswith("final/")]
    assert {a.path for a in client.list_artifacts(summary["mlflow_run_id"], "tables")} == {
        "tables/rewardbench_subsets.json", "tables/heldout.json", "tables/heldout_calibration.json"}
    assert client.get_experiment(run.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert summary["stages"]["line"].startswith("16 recomputed, 0 cached; mixture digest ")
    assert summary["stages"]["line"].endswith(", model trained")
    assert _stats_columns()[:3] == ["source", "pairs", "rows in"]
    assert {i.dataset.name for i in run.inputs.dataset_inputs} >= {
        "mixture-demo",
        "hh-rlhf/helpful-base/test",
    }
    # The champion loads back from the registry and scores.
    model = mlflow.pyfunc.load_model("models:/e2e-reward@champion")
    import pandas as pd

    rewards = model.predict(pd.DataFrame([{"prompt": "How do I bake bread?", "response": "Knead and bake."}]))
    assert len(rewards) == 1

    # 1. Nothing changed: every stage from cache; registration finds its version.
    second = _run(setup)
    assert ran(second) == {"register e2e-reward"}
    digest = summary["mixture"]["digest"][:12]
    assert second.result()["stages"]["line"] == (
        f"1 recomputed, 15 cached; mixture digest {digest} unchanged, training reused")
    assert second.result()["registered"]["created"] is False
    assert len(client.search_model_versions("name = 'e2e-reward'")) == 1

    # 2. One source's input changed: that source, the mixture and everything downstream.
    pku = next((setup["data"] / "PKU-Alignment").rglob("train*"))
    pku.write_text(pku.read_text().replace('"response_0": "', '"response_0": "Edited. '))
    third = _run(setup)
    assert ran(third) == {
        "download pku-saferlhf [train]",
        "clean pku-saferlhf/train",
        "mixture demo",
        "train reward model",
        "evaluate",
        "register e2e-reward",
    }
    assert third.result()["registered"]["version"] == 2

    # 3. Only an evaluation setting changed: evaluation and registration.
    raw = dict(setup["raw"], eval={**setup["raw"]["eval"], "sample_per_subset": 2})
    setup["recipe"].write_text(yaml.safe_dump(raw))
    fourth = _run(setup)
    assert ran(fourth) == {"evaluate", "register e2e-reward"}
