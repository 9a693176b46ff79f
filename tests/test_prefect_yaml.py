"""deployments/prefect.yaml: seven deployments, pools, parameters, a paused weekly schedule,
GPU job variables that fit their pool templates, and entrypoints that resolve to flows."""

from __future__ import annotations

import re
from pathlib import Path

import jsonschema
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SPEC = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}
EXPECTED = {
    "pipeline": "flows/pipeline.py:pipeline_flow",
    "download": "flows/download.py:download_flow",
    "clean": "flows/clean.py:clean_flow",
    "mixture": "flows/mixture.py:mixture_flow",
    "train": "flows/train.py:train_flow",
    "evaluate": "flows/evaluate.py:evaluate_flow",
    "register": "flows/register.py:register_flow",
}


def test_prefect_accepts_the_file() -> None:
    """Prefect's own model of prefect.yaml (what `prefect deploy` parses) takes it."""
    from prefect.cli.deploy._models import PrefectYamlModel

    model = PrefectYamlModel.model_validate(SPEC)
    assert [d.name for d in model.deployments] == list(EXPECTED)


def test_one_deployment_per_flow_with_its_entrypoint() -> None:
    assert {name: d["entrypoint"] for name, d in DEPLOYMENTS.items()} == EXPECTED


def test_training_on_gpu_pool_everything_else_on_cpu() -> None:
    pools = {name: d["work_pool"]["name"] for name, d in DEPLOYMENTS.items()}
    assert pools == {name: "gpu" if name == "train" else "cpu" for name in EXPECTED}


def test_every_deployment_defaults_to_the_demo_recipe_which_exists() -> None:
    for name, d in DEPLOYMENTS.items():
        assert d["parameters"]["recipe"] == "demo", name
    assert (REPO / "deployments" / "recipes" / "demo.yaml").is_file()


def test_weekly_schedule_on_the_pipeline_only_and_paused() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    scheduled = {name: d["schedules"] for name, d in DEPLOYMENTS.items() if d.get("schedules")}
    assert list(scheduled) == ["pipeline"]
    (schedule,) = scheduled["pipeline"]
    assert schedule["active"] is False
    cron = CronSchedule(cron=schedule["cron"], timezone=schedule["timezone"])
    minute, hour, day, month, weekday = cron.cron.split()
    assert minute.isdigit() and hour.isdigit()
    assert (day, month) == ("*", "*") and weekday.isdigit()  # once a week


def _placeholders(value: object) -> set[str]:
    """Names used as {{ name }} in a job configuration (Prefect fills them from variables)."""
    found: set[str] = set()
    if isinstance(value, dict):
        for v in value.values():
            found |= _placeholders(v)
    elif isinstance(value, list):
        for v in value:
            found |= _placeholders(v)
    elif isinstance(value, str):
        found |= set(re.findall(r"\{\{\s*([a-z_]+)\s*\}\}", value))
    return found


def test_kubernetes_gpu_template_requests_gpus_and_fits_its_variables() -> None:
    template = SPEC["definitions"]["kubernetes_base_job_template"]
    variables = template["variables"]
    jsonschema.Draft202012Validator.check_schema(variables)
    assert _placeholders(template["job_configuration"]) <= set(variables["properties"])
    (container,) = template["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "{{ gpus }}"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpus }}"
    job_vars = SPEC["definitions"]["gpu_job_variables"]["kubernetes"]
    jsonschema.validate(job_vars, variables)
    assert job_vars["gpus"] == 1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**job_vars, "gpus": 0}, variables)


def test_docker_gpu_job_variables_request_one_nvidia_gpu() -> None:
    docker = SPEC["definitions"]["gpu_job_variables"]["docker"]
    assert docker["image"] == "{{ $RMFLOW_GPU_IMAGE }}"
    assert docker["container_create_kwargs"]["device_requests"] == [
        {"Driver": "nvidia", "Count": 1, "Capabilities": [["gpu"]]}
    ]


def test_local_pools_take_no_container_job_variables() -> None:
    """Locally both pools are process pools: deployments must not carry image/GPU variables."""
    from prefect.workers.process import ProcessWorker

    schema = ProcessWorker.get_default_base_job_template()["variables"]
    for name, d in DEPLOYMENTS.items():
        job_vars = d["work_pool"].get("job_variables") or {}
        assert set(job_vars) <= set(schema["properties"]), name


@pytest.mark.parametrize("name", list(EXPECTED))
def test_entrypoint_resolves_to_a_flow_taking_the_parameters(name: str) -> None:
    entry = DEPLOYMENTS[name]["entrypoint"]
    path = REPO / entry.split(":")[0]
    assert path.is_file(), f"deployment {name!r}: entrypoint file {path.relative_to(REPO)} does not exist"
    from prefect import Flow
    from prefect.flows import load_flow_from_entrypoint

    flow = load_flow_from_entrypoint(str(path) + ":" + entry.split(":")[1])
    assert isinstance(flow, Flow)
    assert set(DEPLOYMENTS[name]["parameters"]) <= set(flow.parameters.properties)
    assert "recipe" in flow.parameters.required or flow.parameters.properties["recipe"].get("default")
