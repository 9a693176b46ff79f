"""Headless Chromium against the local stack: the flow run in the Prefect UI, the registered
model (alias champion) in the MLflow UI.

Starts the stack with `rmflow up` on free ports, runs the pipeline deployment through the
Prefect API (the real demo pipeline once flows/ exists, else a stand-in that registers a
model), then loads both UIs in Debian's Chromium and reads the rendered DOM. Screenshots go
to the test's temp dir, or to $RMFLOW_SCREENSHOT_DIR when set (for looking at them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from stack_helpers import CHROMIUM, chromium, free_port, get_json, project_for_stack, rmflow, run_deployment
from train_helpers import update_train

pytestmark = [
    pytest.mark.slow,
    pytest.mark.browser,
    pytest.mark.skipif(
        not CHROMIUM.is_file(),
        reason=f"{CHROMIUM} not installed: run `bash scripts/setup_browser.sh` (Debian's chromium package)",
    ),
]

PIPELINE_TIMEOUT = float(os.environ.get("RMFLOW_BROWSER_PIPELINE_TIMEOUT", "1800"))


@pytest.fixture(scope="module")
def ran_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """The stack up on free ports and one completed run of the pipeline deployment."""
    tmp = tmp_path_factory.mktemp("browser")
    project, _real = project_for_stack(tmp)
    home = tmp / "home"
    shots = Path(os.environ.get("RMFLOW_SCREENSHOT_DIR") or tmp / "screenshots")
    shots.mkdir(parents=True, exist_ok=True)
    try:
        up = rmflow("up", "--home", str(home), "--project-dir", str(project),
                    "--prefect-port", str(free_port()), "--mlflow-port", str(free_port()))
        run = run_deployment(
            up["prefect_url"] + "/api", "rmflow-pipeline", "pipeline", PIPELINE_TIMEOUT,
            parameters=small_pipeline(tmp) if _real else None,
        )
        worker_log = (home / "logs" / "worker-cpu.log").read_text(errors="replace")[-4000:]
        assert run["state"]["type"] == "COMPLETED", f"pipeline run ended {run['state']}:\n{worker_log}"
        yield {"up": up, "run": run, "shots": shots, "home": home}
    finally:
        subprocess.run([sys.executable, "-m", "rmflow.cli", "down", "--home", str(home)],
                       check=False, capture_output=True, timeout=120)


def small_pipeline(tmp: Path) -> dict[str, str]:
    """Deployment parameters for a quick real run: the demo recipe with a tiny model, small data."""
    import yaml
    from tiny import build_tiny_model_dir

    from rmcore.data.sample_data import write_sample_mirror
    from rmcore.data.sample_rewardbench import write_rewardbench_sample

    data = write_sample_mirror(tmp / "data", rows_per_source=40)
    write_rewardbench_sample(data, per_subset=2)
    recipe = yaml.safe_load((Path(__file__).parents[1] / "deployments/recipes/demo.yaml").read_text())
    update_train(recipe["train"], model=str(build_tiny_model_dir(tmp / "tiny")), max_length=96, bf16=False)
    recipe["eval"].update(sample_per_subset=1, bf16=False, max_length=96)
    path = tmp / "browser-recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return {"recipe": str(path), "data_dir": str(data)}


def _champion(mlflow_url: str) -> tuple[str, dict]:
    """The registered model that carries the alias champion, and that version."""
    models = get_json(f"{mlflow_url}/api/2.0/mlflow/registered-models/search?max_results=100")
    for model in models.get("registered_models", []):
        for alias in model.get("aliases", []):
            if alias["alias"] == "champion":
                query = urllib.parse.urlencode({"name": model["name"], "version": alias["version"]})
                version = get_json(f"{mlflow_url}/api/2.0/mlflow/model-versions/get?{query}")
                return model["name"], version["model_version"]
    raise AssertionError(f"no registered model has alias champion: {models}")


def test_prefect_ui_shows_the_completed_flow_run(ran_pipeline: dict) -> None:
    run, url = ran_pipeline["run"], ran_pipeline["up"]["prefect_url"]
    dom = chromium(f"{url}/runs/flow-run/{run['id']}", ran_pipeline["shots"] / "prefect-flow-run.png")
    assert run["name"] in dom
    assert "rmflow-pipeline" in dom
    assert "Completed" in dom


def test_prefect_ui_lists_the_deployments(ran_pipeline: dict) -> None:
    url = ran_pipeline["up"]["prefect_url"]
    dom = chromium(f"{url}/deployments", ran_pipeline["shots"] / "prefect-deployments.png")
    for name in ("pipeline", "download", "clean", "mixture", "train", "evaluate", "register"):
        assert f"rmflow-{name}" in dom, name


def test_mlflow_ui_shows_the_champion_model_and_its_run(ran_pipeline: dict) -> None:
    url = ran_pipeline["up"]["mlflow_url"]
    name, version = _champion(url)
    models_dom = chromium(f"{url}/#/models", ran_pipeline["shots"] / "mlflow-models.png")
    assert name in models_dom
    model_dom = chromium(f"{url}/#/models/{urllib.parse.quote(name)}",
                         ran_pipeline["shots"] / "mlflow-champion.png")
    assert "champion" in model_dom
    run = get_json(f"{url}/api/2.0/mlflow/runs/get?run_id={version['run_id']}")["run"]
    run_dom = chromium(f"{url}/#/experiments/{run['info']['experiment_id']}/runs/{run['info']['run_id']}",
                       ran_pipeline["shots"] / "mlflow-run.png")
    assert run["info"]["run_name"] in run_dom


def test_status_lists_the_run_with_its_link(ran_pipeline: dict) -> None:
    run, url = ran_pipeline["run"], ran_pipeline["up"]["prefect_url"]
    recent = {r["name"]: r for r in rmflow("status", "--home", str(ran_pipeline["home"]))["recent_runs"]}
    assert recent[run["name"]] == {"name": run["name"], "flow": "rmflow-pipeline", "state": "Completed",
                         "url": f"{url}/runs/flow-run/{run['id']}"}
