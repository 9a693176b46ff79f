"""The pipeline dispatches training to the GPU pool, on the real local stack.

`rmflow up` (Prefect server, MLflow server, process pools `cpu` and `gpu`, the deployments of
deployments/prefect.yaml) on free ports; the pipeline deployment runs a small real recipe whose
train section names ``work_pool: gpu``. Checked through the Prefect API: the train stage ran as
its own flow run on `gpu` whose parent is the pipeline run; a no-op rerun created no train flow
run; a train flow run that fails fails the pipeline with its name, state and link.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from outage_helpers import small_pipeline_recipe
from stack_helpers import REPO, free_port, get_json, rmflow, run_deployment
from train_helpers import update_train

pytestmark = pytest.mark.slow

TIMEOUT = 900.0


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("dispatch")
    home = tmp / "home"
    try:
        up = rmflow("up", "--home", str(home), "--project-dir", str(REPO),
                    "--prefect-port", str(free_port()), "--mlflow-port", str(free_port()))  # fmt: skip
        assert up["pools"] == {"cpu": "process", "gpu": "process"}
        yield {"api": up["prefect_url"] + "/api", "ui": up["prefect_url"], "home": home, "tmp": tmp}
    finally:
        subprocess.run([sys.executable, "-m", "rmflow.cli", "down", "--home", str(home)],
                       check=False, capture_output=True, timeout=120)  # fmt: skip


def _on_gpu(run: dict, tmp: Path, name: str, **train: object) -> dict[str, str]:
    """Deployment parameters: the small recipe with ``train.work_pool: gpu`` (and ``train`` keys)."""
    recipe_path = Path(run["recipe"])
    recipe = yaml.safe_load(recipe_path.read_text())
    update_train(recipe["train"], **train)
    recipe["train"]["work_pool"] = "gpu"
    recipe["name"] = name
    out = tmp / f"{name}.yaml"
    out.write_text(yaml.safe_dump(recipe))
    return {"recipe": str(out), "data_dir": run["data"], "work_dir": run["work"]}


def _train_runs(api: str) -> list[dict]:
    return get_json(f"{api}/flow_runs/filter", {"flows": {"name": {"any_": ["rmflow-train"]}}})


def _worker_log(home: Path) -> str:
    return "\n".join(
        (home / "logs" / f"worker-{pool}.log").read_text(errors="replace")[-3000:] for pool in ("cpu", "gpu")
    )


def test_training_runs_as_a_flow_run_on_the_gpu_pool_under_the_pipeline(stack) -> None:
    api, tmp = stack["api"], stack["tmp"]
    base = small_pipeline_recipe(tmp / "small", model_name="dispatch-reward")
    params = _on_gpu(base, tmp, "dispatch")

    first = run_deployment(api, "rmflow-pipeline", "pipeline", TIMEOUT, parameters=params)
    assert first["state"]["type"] == "COMPLETED", f"{first['state']}\n{_worker_log(stack['home'])}"
    trains = _train_runs(api)
    assert len(trains) == 1, trains
    (train,) = trains
    assert train["state"]["type"] == "COMPLETED"
    assert train["work_pool_name"] == "gpu"
    assert train["parameters"]["mixture_path"].startswith(params["work_dir"])
    # its parent is the pipeline run: the task run that stands for it belongs to the pipeline run
    parent_task = get_json(f"{api}/task_runs/{train['parent_task_run_id']}")
    assert parent_task["flow_run_id"] == first["id"]
    pipeline_run = get_json(f"{api}/flow_runs/{first['id']}")
    assert pipeline_run["work_pool_name"] == "cpu"

    # An unchanged rerun reads the trained model from the cache: no train flow run is created.
    again = run_deployment(api, "rmflow-pipeline", "pipeline", TIMEOUT, parameters=params)
    assert again["state"]["type"] == "COMPLETED", again["state"]
    assert [r["id"] for r in _train_runs(api)] == [train["id"]]

    # A train flow run that fails fails the pipeline, naming the child and linking it.
    broken = tmp / "broken-model"
    shutil.copytree(Path(yaml.safe_load(Path(base["recipe"]).read_text())["train"]["model"]), broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 64)  # the worker's load fails, not the recipe check
    bad = _on_gpu(base, tmp, "dispatch-broken", model=str(broken))
    failed = run_deployment(api, "rmflow-pipeline", "pipeline", TIMEOUT, parameters=bad)
    assert failed["state"]["type"] == "FAILED", failed["state"]
    children = [r for r in _train_runs(api) if r["id"] != train["id"]]
    assert len(children) == 1 and children[0]["state"]["type"] == "FAILED"
    message = failed["state"]["message"]
    assert f"the train flow run {children[0]['name']!r} on work pool 'gpu' ended Failed" in message, message
    assert f"/runs/flow-run/{children[0]['id']}" in message
