"""Headless Chromium against the local stack: what a user sees in the Prefect and MLflow UIs.

Starts the stack with `rmflow up` on free ports, runs the pipeline deployment through the
Prefect API (as the UI's run form does), then runs it again unchanged (a no-op rerun), and
loads both UIs in Debian's Chromium, reading the rendered DOM: the flow run, the run form,
the stats artifact, the registered champion, its run and its metrics tab. Registry history is
read through the MLflow API before and after the rerun. Screenshots go to the test's temp dir,
or to $RMFLOW_SCREENSHOT_DIR when set (for looking at them).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.parse
from pathlib import Path

import pytest
from stack_helpers import CHROMIUM, chromium, free_port, get_json, project_for_stack, rmflow, run_deployment
from train_helpers import update_train

from tracking.lineage import UI_VIEW

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
        before = _history(up["mlflow_url"]) if _real else None
        rerun = run_deployment(
            up["prefect_url"] + "/api", "rmflow-pipeline", "pipeline", PIPELINE_TIMEOUT,
            parameters=small_pipeline(tmp, again=True) if _real else None,
        )
        assert rerun["state"]["type"] == "COMPLETED", f"rerun ended {rerun['state']}"
        yield {"up": up, "run": run, "rerun": rerun, "shots": shots, "home": home, "real": _real,
               "history_before": before, "history_after": _history(up["mlflow_url"]) if _real else None}
    finally:
        subprocess.run([sys.executable, "-m", "rmflow.cli", "down", "--home", str(home)],
                       check=False, capture_output=True, timeout=120)


def small_pipeline(tmp: Path, *, again: bool = False) -> dict[str, str]:
    """Deployment parameters for a quick real run: the demo recipe with a tiny model, small data
    (``again``: the same parameters as the first call, for a no-op rerun)."""
    import yaml
    from tiny import build_tiny_model_dir

    from rmcore.data.sample_data import write_sample_mirror
    from rmcore.data.sample_rewardbench import write_rewardbench_sample

    path = tmp / "browser-recipe.yaml"
    if again:
        return {"recipe": str(path), "data_dir": str(tmp / "data")}
    data = write_sample_mirror(tmp / "data", rows_per_source=40)
    write_rewardbench_sample(data, per_subset=2)
    recipe = yaml.safe_load((Path(__file__).parents[1] / "deployments/recipes/demo.yaml").read_text())
    update_train(recipe["train"], model=str(build_tiny_model_dir(tmp / "tiny")), max_length=96, bf16=False)
    update_train(recipe["train"], log_every=2)  # a progress line every 2 steps: several while it trains
    recipe["eval"].update(sample_per_subset=1, bf16=False, max_length=96)
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


def _history(mlflow_url: str) -> dict:
    """The registry's past as the API returns it: the champion version's tags and its run's tags."""
    name, version = _champion(mlflow_url)
    run = get_json(f"{mlflow_url}/api/2.0/mlflow/runs/get?run_id={version['run_id']}")["run"]
    return {"name": name, "version": version["version"], "run_id": version["run_id"],
            "version_tags": json.dumps(version.get("tags", []), sort_keys=True),
            "run_tags": json.dumps(run["data"].get("tags", []), sort_keys=True)}


def _prefect(ran: dict, path: str, body: object = None) -> object:
    return get_json(ran["up"]["prefect_url"] + "/api" + path, body)


def _real_only(ran: dict) -> None:
    if not ran["real"]:
        pytest.skip("the stand-in project has no pipeline flows to check")


def test_training_progress_reaches_the_prefect_logs_while_it_trains(ran_pipeline: dict) -> None:
    _real_only(ran_pipeline)
    logs = _prefect(ran_pipeline, "/logs/filter",
                    {"logs": {"flow_run_id": {"any_": [ran_pipeline["run"]["id"]]}}, "sort": "TIMESTAMP_ASC",
                     "limit": 200})
    (ran_pipeline["shots"] / "prefect-logs.json").write_text(json.dumps(logs, indent=1))
    finished = [entry["timestamp"] for entry in logs if entry["message"].startswith("reward model at ")]
    assert finished, [entry["message"] for entry in logs]
    progress = [entry for entry in logs if re.match(r"train step \d+/\d+ ", entry["message"])]
    during = [entry["message"] for entry in progress if "ETA" in entry["message"] and entry["timestamp"] < finished[0]]
    assert len(during) >= 2, [entry["message"][:100] for entry in logs]


def test_the_stats_artifact_reads_from_the_source_column(ran_pipeline: dict) -> None:
    _real_only(ran_pipeline)
    (artifact,) = _prefect(ran_pipeline, "/artifacts/latest/filter",
                           {"artifacts": {"key": {"any_": ["stats-demo"]}}, "limit": 1})
    dom = chromium(f"{ran_pipeline['up']['prefect_url']}/artifacts/artifact/{artifact['latest_id']}",
                   ran_pipeline["shots"] / "prefect-stats-artifact.png")
    headers = [re.sub(r"<[^>]+>|\s+", " ", h).strip() for h in re.findall(r"<th[^>]*>(.*?)</th>", dom, re.DOTALL)]
    assert headers[:3] == ["source", "pairs", "rows in"], headers


def test_the_run_form_describes_every_parameter(ran_pipeline: dict) -> None:
    _real_only(ran_pipeline)
    deployment = _prefect(ran_pipeline, "/deployments/name/rmflow-pipeline/pipeline")
    properties = deployment["parameter_openapi_schema"]["properties"]
    assert set(properties) == {"recipe", "data_dir", "work_dir"}
    dom = chromium(f"{ran_pipeline['up']['prefect_url']}/deployments/deployment/{deployment['id']}/run",
                   ran_pipeline["shots"] / "prefect-run-form.png")
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom))
    for name, schema in properties.items():
        words = " ".join(schema["description"].split()[:6])
        assert words in text, f"{name}: {words!r} not on the form"
    assert "Property is type None" not in text


def test_a_no_op_rerun_leaves_the_registry_history_as_it_was(ran_pipeline: dict) -> None:
    _real_only(ran_pipeline)
    before, after = ran_pipeline["history_before"], ran_pipeline["history_after"]
    assert after == before  # same champion version; its tags and its run's tags byte for byte
    url = ran_pipeline["up"]["mlflow_url"]
    runs = get_json(f"{url}/api/2.0/mlflow/runs/search", {"experiment_ids": [_experiment(url)], "max_results": 50})
    rerun = next(r for r in runs["runs"] if any(
        t["key"] == "rmflow.prefect_flow_run" and t["value"] == ran_pipeline["rerun"]["id"] for t in r["data"]["tags"]))
    tags = {t["key"]: t["value"] for t in rerun["data"]["tags"]}
    assert tags["rmflow.cache_hit"] == "true"
    assert tags["rmflow.reused_run"] == before["run_id"]
    assert tags["rmflow.reused_version"] == f"{before['name']} v{before['version']}"
    dom = chromium(f"{url}/#/experiments/{rerun['info']['experiment_id']}/runs/{rerun['info']['run_id']}",
                   ran_pipeline["shots"] / "mlflow-rerun.png")
    assert "rmflow.cache_hit" in dom


def _text(dom: str) -> str:
    """The visible text of a DOM dump, elements separated by " | "."""
    dom = re.sub(r"<(script|style|svg)\b.*?</\1>", "", dom, flags=re.DOTALL)
    return re.sub(r"(\s*\|\s*)+", " | ", re.sub(r"<[^>]+>", " | ", dom))


def _experiment(mlflow_url: str) -> str:
    _name, version = _champion(mlflow_url)
    return get_json(f"{mlflow_url}/api/2.0/mlflow/runs/get?run_id={version['run_id']}")["run"]["info"]["experiment_id"]


def test_no_run_has_a_wall_of_metrics(ran_pipeline: dict) -> None:
    _real_only(ran_pipeline)
    url = ran_pipeline["up"]["mlflow_url"]
    experiment = _experiment(url)
    runs = get_json(f"{url}/api/2.0/mlflow/runs/search", {"experiment_ids": [experiment], "max_results": 50})["runs"]
    # keyed by id: a run and its rerun started within the same minute share a name
    counts = {r["info"]["run_id"]: len(r["data"].get("metrics", [])) for r in runs}
    assert len(counts) == 2 and max(counts.values()) <= 40, counts
    kind = get_json(f"{url}/api/2.0/mlflow/experiments/get?experiment_id={experiment}")["experiment"]["tags"]
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in kind
    _, version = _champion(url)
    # the link rmflow publishes opens the model-training view (MLflow 3.x defaults to GenAI)
    dom = chromium(f"{url}/#/experiments/{experiment}/runs/{version['run_id']}/model-metrics{UI_VIEW}",
                   ran_pipeline["shots"] / "mlflow-metrics-tab.png")
    text = _text(dom)
    sections = dict(re.findall(r"\| ([\w/.:-]+) \| \((\d+)\) \| Add chart", text))
    # one section per metric family, not ~25 of calibration bins: the training curves are there
    assert sections["train"] == "9" and sections["rewardbench"] == "5" and len(sections) <= 8, sections
    assert "Model registry" in text and "Evaluation runs" not in text  # the model-training view
