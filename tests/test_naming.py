"""Run names say what each run was: recipe, data and start time, in Prefect and MLflow."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

import flows.clean
import flows.download
import flows.evaluate
import flows.mixture
import flows.pipeline
import flows.register
import flows.train
from flows.naming import name_for, run_name

WHEN = datetime(2026, 12, 7, 15, 50, tzinfo=UTC)


def test_names_from_parameters():
    assert name_for({"recipe": "deployments/recipes/v1.yaml", "data_dir": "../shared/data"}, WHEN) == (
        "v1 · data mirror · 2026-12-07 15:50 UTC"
    )
    assert name_for({"recipe": "smollm2-cpu", "data_dir": "hub"}, WHEN) == "smollm2-cpu · hub · 2026-12-07 15:50 UTC"
    assert name_for({}, WHEN) == "demo · generated sample · 2026-12-07 15:50 UTC"


@pytest.mark.parametrize(
    "flow",
    [
        flows.clean.clean_flow, flows.download.download_flow, flows.evaluate.evaluate_flow,
        flows.mixture.mixture_flow, flows.pipeline.pipeline_flow, flows.register.register_flow,
        flows.train.train_flow,
    ],
)  # fmt: skip
def test_every_flow_is_named_by_its_run(flow):
    assert flow.flow_run_name is run_name


@pytest.mark.usefixtures("prefect_harness")
def test_prefect_names_a_run_from_its_parameters():
    from prefect import flow
    from prefect.runtime import flow_run

    @flow(flow_run_name=run_name)
    def named(recipe: str = "deployments/recipes/v2.yaml", data_dir: str | None = None) -> str:
        return str(flow_run.get_name())

    assert named(data_dir="/data/mirror").startswith("v2 · mirror · ")
    assert named().startswith("v2 · generated sample · 20")


@pytest.mark.parametrize(
    "flow",
    [
        flows.clean.clean_flow, flows.download.download_flow, flows.mixture.mixture_flow,
        flows.pipeline.pipeline_flow, flows.register.register_flow, flows.train.train_flow,
    ],
)  # fmt: skip
def test_the_run_form_describes_every_parameter_as_a_plain_string(flow):
    """Prefect builds the UI's run form from the parameter schema: every field has a description
    (from the docstring's Args section) and a plain string type (not a "None" toggle)."""
    schema = flow.parameters.model_dump()["properties"]
    assert {"recipe", "data_dir", "work_dir"} <= set(schema)
    for name, prop in schema.items():
        assert len(prop.get("description") or "") > 20, (flow.name, name)
        assert prop.get("type") == "string" and "anyOf" not in prop, (flow.name, name, prop)
    assert "demo, v1" in schema["recipe"]["description"]


def test_the_pipeline_summary_rounds_numbers_and_links_the_mlflow_run():
    from flows.pipeline import summary_markdown

    summary = {
        "recipe": "demo", "data": "GENERATED sample", "missing": [],
        "mixture": {"rows": 710, "digest": "a" * 64},
        "rewardbench": None,
        "heldout": {"hh-rlhf/helpful-base/test": {
            "accuracy": 0.5699999999999999, "ci95": [0.5131, 0.62549], "length_rule_accuracy": 0.55, "n": 300}},
        "registered": {"model_uri": "models:/m/1", "champion": 1, "links": {"run": "http://127.0.0.1:5000/#/r/1"}},
        "mlflow_run_id": "abc",
    }  # fmt: skip
    md = summary_markdown(summary)
    assert "accuracy 0.570 [0.513, 0.625], length-only rule 0.550" in md
    assert "- MLflow run [abc](http://127.0.0.1:5000/#/r/1)" in md
