"""Pipeline runs at once over one work dir: no clobbered outputs, no cache poisoning.

Real child processes on the real Prefect API and one SQLite MLflow store. Pause hooks
(``fault_helpers``) hold each process at an exact point so the dangerous interleavings
happen every time, not by luck: two runs of one recipe both build the mixture in their
temp folders and then publish; both check the registry for the model before either
registers it; a writer of the built-in generated sample is caught mid-file while another
run reads the sample.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from fault_helpers import (
    child_env,
    merged_digests,
    release,
    stage_digests,
    stage_dirs,
    start_child,
    visible_unmarked_files,
    wait_reached,
    weight_distance,
)
from tiny import build_tiny_model_dir
from train_helpers import grouped

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _recipe(tmp: Path, name: str, model: Path, sources: list[dict], model_name: str) -> str:
    recipe = {
        "name": name,
        "data": {
            "seed": 7,
            "validation_fraction": 0.1,
            "sources": sources,
            "heldout": [{"source": "hh-rlhf/helpful-base", "split": "test"}],
        },
        "train": grouped({
            "model": str(model),
            "max_length": 64,
            "bf16": False,
            "micro_batch": 4,
            "global_batch": 8,
            "max_steps": 4,
            "checkpoint_every": 2,
        }),
        "eval": {"batch_size": 8, "max_length": 64, "bf16": False, "sample_per_subset": 1},
        "register": {"model_name": model_name},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return str(path)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Two recipes sharing the PKU source (same cleaning) and the held-out split."""
    from rmcore.data.sample_data import write_sample_mirror
    from rmcore.data.sample_rewardbench import write_rewardbench_sample

    tmp = tmp_path_factory.mktemp("faults-concurrency")
    model = build_tiny_model_dir(tmp / "tiny")
    data = write_sample_mirror(tmp / "data", rows_per_source=24)
    write_rewardbench_sample(data, per_subset=1)
    pku = {"source": "pku-saferlhf", "max_pairs": 24}
    a = _recipe(tmp, "conc-a", model, [{"source": "helpsteer", "pairing": "all-pairs"}, pku], "conc-a-reward")
    b = _recipe(tmp, "conc-b", model, [{"source": "capybara"}, pku], "conc-b-reward")
    return {"a": a, "b": b, "data": str(data), "tmp": tmp}


def _single_run(setup: dict, recipe: str, name: str, monkeypatch: pytest.MonkeyPatch) -> dict:
    from flows.pipeline import pipeline_flow

    work = setup["tmp"] / f"single-{name}"
    with monkeypatch.context() as m:
        m.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{setup['tmp'] / f'single-{name}.db'}")
        summary = pipeline_flow(recipe=recipe, data_dir=setup["data"], work_dir=str(work))
    return {"digests": stage_digests(work), "model": Path(summary["model_dir"])}


@pytest.mark.slow
def test_two_runs_of_one_recipe_and_one_of_another_at_once(
    setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import mlflow

    work, uri = tmp_path / "work", f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = child_env(MLFLOW_TRACKING_URI=uri)
    signals = tmp_path / "signals"
    signals.mkdir()

    def config(recipe: str, who: str, hooks: bool) -> dict:
        kwargs = {"recipe": recipe, "data_dir": setup["data"], "work_dir": str(work)}
        held = [
            # Both runs of recipe a build the mixture in a temp folder, then wait to publish it.
            {
                "target": "tasks.data:materialise_mixture",
                "mode": "pause-after",
                "signal_path": f"{signals}/mix-{who}",
            },
            # Both find no registered version for the model, then wait to register it.
            {
                "target": "tasks.register:existing_version",
                "mode": "pause-after",
                "signal_path": f"{signals}/reg-{who}",
            },
        ]
        return {"call": "flows.pipeline:pipeline_flow", "kwargs": kwargs, "hooks": held if hooks else []}

    procs = {
        who: start_child(config(setup[recipe], who, hooks), env, tmp_path / f"{who}.log")
        for who, recipe, hooks in (("a1", "a", True), ("a2", "a", True), ("b", "b", False))
    }
    try:
        for point in ("mix", "reg"):
            for who in ("a1", "a2"):
                wait_reached(signals / f"{point}-{who}", procs[who], tmp_path / f"{who}.log")
            for who in ("a1", "a2"):
                release(signals / f"{point}-{who}")
        for who, proc in procs.items():
            status = proc.wait(timeout=600)
            assert status == 0, f"run {who} failed:\n{(tmp_path / f'{who}.log').read_text()[-4000:]}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()

    single_a = _single_run(setup, setup["a"], "a", monkeypatch)
    single_b = _single_run(setup, setup["b"], "b", monkeypatch)
    # Every key folder once, each equal to the single runs' (shared PKU and held-out folders too).
    assert stage_digests(work) == merged_digests(single_a["digests"], single_b["digests"])
    assert visible_unmarked_files(work) == []
    models = stage_dirs(work, "models")
    assert len(models) == 2
    # Each model equals its recipe's single run. Training in different processes at once may
    # round differently in the last bits (CPU BLAS results can depend on memory alignment), so
    # "equal" is: closer than 1e-5 everywhere, while the other recipe's model is far beyond that.
    for single in (single_a, single_b):
        distances = sorted(weight_distance(m / "model", single["model"]) for m in models)
        assert distances[0] < 1e-5 < 10 * 1e-5 < distances[1], distances
    # One registered version per model, although both runs of recipe a registered it at once.
    client = mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)
    for name in ("conc-a-reward", "conc-b-reward"):
        versions = client.search_model_versions(f"name = '{name}'")
        assert len(versions) == 1, f"{name}: versions {[v.version for v in versions]}"
        aliases = client.get_model_version(name, versions[0].version).aliases
        assert sorted(aliases) == ["candidate", "champion"]


@pytest.mark.slow
def test_generated_sample_written_by_one_run_is_never_read_half_written_by_another(
    setup: dict, tmp_path: Path
):
    """No data dir: each run resolves the built-in GENERATED sample in the work dir. Run x
    is caught halfway through writing the HelpSteer file while run y reads the sample."""
    from flows.mixture import mixture_flow

    work, signals = tmp_path / "work", tmp_path / "signals"
    signals.mkdir()
    kwargs = {"recipe": setup["a"], "data_dir": "", "work_dir": str(work)}
    helpsteer = {"target": "rmcore.data.sample_data:_write", "match": "HelpSteer", "path_arg": 0}
    x = {
        "call": "flows.mixture:mixture_flow",
        "kwargs": kwargs,
        "hooks": [
            {**helpsteer, "mode": "torn-pause", "signal_path": f"{signals}/x-torn"},
            {**helpsteer, "mode": "pause-before", "signal_path": f"{signals}/x-start"},
        ],
    }
    y = {
        "call": "flows.mixture:mixture_flow",
        "kwargs": kwargs,
        "result_path": str(tmp_path / "y.json"),
        "hooks": [
            {
                "target": "flows.data_stages:run_downloads",
                "mode": "pause-before",
                "signal_path": f"{signals}/y",
            }
        ],
    }
    env = child_env()
    px, py = start_child(x, env, tmp_path / "x.log"), None
    try:
        wait_reached(signals / "x-start", px, tmp_path / "x.log")  # x: about to write HelpSteer
        py = start_child(y, env, tmp_path / "y.log")
        wait_reached(signals / "y", py, tmp_path / "y.log")  # y: wrote the sample, about to read it
        release(signals / "x-start")
        wait_reached(signals / "x-torn", px, tmp_path / "x.log")  # x: HelpSteer half written
        release(signals / "y")
        assert py.wait(timeout=600) == 0, (tmp_path / "y.log").read_text()[-4000:]
        release(signals / "x-torn")
        assert px.wait(timeout=600) == 0, (tmp_path / "x.log").read_text()[-4000:]
    finally:
        for proc in (px, py):
            if proc is not None and proc.poll() is None:
                proc.kill()

    single = mixture_flow(**{**kwargs, "work_dir": str(tmp_path / "single")})
    assert stage_digests(work) == stage_digests(tmp_path / "single")
    assert json.loads((tmp_path / "y.json").read_text())["mixture"]["digest"] == single["mixture"]["digest"]


def test_runs_on_two_stores_in_one_process_register_each_in_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A worker process running pipelines against two MLflow stores one after the other:
    MLflow exports the first registry URI as $MLFLOW_REGISTRY_URI, which must not send the
    second run's model versions to the first store (its runs are not there)."""
    import mlflow

    import tracking

    monkeypatch.delenv("MLFLOW_REGISTRY_URI", raising=False)
    for name in ("first", "second"):
        uri = f"sqlite:///{tmp_path / name}.db"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        tracking.configure()
        assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri()) == (uri, uri)
    # A registry the user chose in the environment is kept on every call.
    chosen = f"sqlite:///{tmp_path / 'registry'}.db"
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", chosen)
    for _ in range(2):
        tracking.configure()
        assert mlflow.get_registry_uri() == chosen
