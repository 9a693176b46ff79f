"""Trust nothing on disk (issue 18): damaged stage outputs, inputs and records, then a rerun.

What must hold: a stage folder is served only while it holds what it published (else it is
rebuilt, logged, never registered); evaluation is keyed by the model folder's content; an input
that no longer has its recorded digest is rebuilt upstream or refused naming the file and the
command that rebuilds it; resume skips a damaged checkpoint for the previous complete one; a
Prefect result record that names another serializer than rmflow's JSON is never deserialized.

Real flows on a real Prefect API and a real SQLite MLflow store, a tiny model; the damage is
done to the files on disk as a crash, a bad disk or a stranger would do it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fault_helpers import same_weights, stage_digests, stage_dirs, table_digests, weight_distance
from tiny import build_tiny_model_dir
from train_helpers import grouped

pytestmark = pytest.mark.usefixtures("prefect_harness")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny model, a small generated mirror, a one-source recipe with one held-out split."""
    from rmcore.data.sample_data import write_sample_mirror
    from rmcore.data.sample_rewardbench import write_rewardbench_sample

    tmp = tmp_path_factory.mktemp("faults-integrity")
    model = build_tiny_model_dir(tmp / "tiny")
    data = write_sample_mirror(tmp / "data", rows_per_source=24)
    write_rewardbench_sample(data, per_subset=1)
    recipe = {
        "name": "integrity",
        "data": {
            "seed": 7,
            "validation_fraction": 0.1,
            "sources": [{"source": "pku-saferlhf", "max_pairs": 24}],
            "heldout": [{"source": "hh-rlhf/helpful-base", "split": "test"}],
        },
        "train": grouped({
            "model": str(model),
            "max_length": 48,
            "bf16": False,
            "micro_batch": 4,
            "global_batch": 8,
            "max_steps": 2,
            "log_every": 1,
            "checkpoint_every": 1,
        }),
        "eval": {"batch_size": 8, "max_length": 48, "bf16": False, "sample_per_subset": 1},
        "register": {"model_name": "integrity-reward"},
    }
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return {"recipe": str(path), "data": str(data), "tmp": tmp}


def _args(setup: dict, work: Path) -> dict:
    return {"recipe": setup["recipe"], "data_dir": setup["data"], "work_dir": str(work)}


def _model_root(work: Path) -> Path:
    (root,) = stage_dirs(work, "models")
    return root


@contextlib.contextmanager
def warnings_seen(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Warnings of rmflow's own loggers and of Prefect's run loggers (which do not propagate)."""
    prefect_logger = logging.getLogger("prefect")
    prefect_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.WARNING):
            yield
    finally:
        prefect_logger.removeHandler(caplog.handler)


# --- 1. a stage folder is served only while it holds what it published ----------------------------


def test_a_deleted_model_file_is_retrained_and_never_registered_or_promoted(
    setup: dict, tmp_path: Path, mlflow_uri: str, caplog: pytest.LogCaptureFixture
):
    """Deleting the published weights used to leave a cache hit that registered (and promoted)
    a version without weights; now the train stage sees it and retrains the same model."""
    import mlflow

    from flows.pipeline import pipeline_flow

    work = tmp_path / "work"
    first = pipeline_flow(**_args(setup, work))
    weights = Path(first["model_dir"]) / "model.safetensors"
    kept = setup["tmp"] / "first-weights.safetensors"
    kept.write_bytes(weights.read_bytes())
    weights.unlink()

    with warnings_seen(caplog):
        second = pipeline_flow(**_args(setup, work))
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri, registry_uri=mlflow_uri)
    versions = client.search_model_versions("name = 'integrity-reward'")
    assert [int(v.version) for v in versions] == [1], "the damaged folder was registered as a new version"
    assert second["registered"]["version"] == 1 and second["registered"]["champion"] == 1
    assert weights.is_file() and same_weights(weights.parent, _as_dir(kept, setup["tmp"] / "kept"))
    assert "model/model.safetensors: missing" in caplog.text and "rebuilding it" in caplog.text


def _as_dir(weights: Path, folder: Path) -> Path:
    folder.mkdir(exist_ok=True)
    (folder / "model.safetensors").write_bytes(weights.read_bytes())
    return folder


def test_every_stage_folder_records_its_contents_and_a_changed_file_rebuilds_it(setup: dict, tmp_path: Path):
    """Each published stage folder lists its files (size, sha256); one flipped byte in an eval
    report is rebuilt on the next run, not served."""
    from flows.evaluate import evaluate_flow
    from tasks.integrity import CONTENTS, contents_problems

    work = tmp_path / "work"
    evaluate_flow(**_args(setup, work))
    reference = stage_digests(work)
    for stage in ("raw", "clean", "mixtures", "models", "eval"):
        for folder in stage_dirs(work, stage):
            assert (folder / CONTENTS).is_file() and contents_problems(folder) == [], folder
    (eval_dir,) = stage_dirs(work, "eval")
    (scores,) = sorted(eval_dir.rglob("*.parquet"))[:1]
    _flip_byte(scores, scores.stat().st_size // 2)
    assert contents_problems(eval_dir) != []

    evaluate_flow(**_args(setup, work))
    assert contents_problems(eval_dir) == []
    assert stage_digests(work) == reference


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


# --- 2. evaluation is keyed by the model's content ---------------------------------------------------


def test_a_model_retrained_into_other_weights_under_the_same_key_is_evaluated_again(
    setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A non-deterministic retrain (simulated: the weights nudged as training ends) gives other
    weights under the same train key; its scores must be its own, not the first model's."""
    import torch
    from safetensors.torch import load_file, save_file

    import tasks.train
    from flows.evaluate import evaluate_flow
    from tracking.registry import model_dir_digest

    work = tmp_path / "work"
    first = evaluate_flow(**_args(setup, work))
    root = _model_root(work)
    first_digest = model_dir_digest(root / "model")

    real_train = tasks.train._train

    def nudged(*args, **kwargs):  # the retrain lands on different weights (GPU non-determinism)
        result = real_train(*args, **kwargs)
        path = Path(result["model_dir"]) / "model.safetensors"
        weights = {k: v + 0.01 if v.is_floating_point() else v for k, v in load_file(str(path)).items()}
        save_file(weights, str(path))
        return result

    monkeypatch.setattr(tasks.train, "_train", nudged)
    import shutil

    shutil.rmtree(root)
    second = evaluate_flow(**_args(setup, work))
    assert _model_root(work) == root  # the same train key
    second_digest = model_dir_digest(root / "model")
    assert second_digest != first_digest
    assert second["dir"] != first["dir"], "the first model's scores were reused for other weights"
    assert (first["model_digest"], second["model_digest"]) == (first_digest, second_digest)
    assert torch.isfinite(torch.tensor(second["rewardbench"]["overall"]))


def test_registering_a_model_folder_that_changed_after_evaluation_is_refused(tmp_path: Path, mlflow_uri: str):
    """The register task refuses a folder whose content is not the evaluated model's."""
    from prefect import flow

    from tasks.integrity import InputChanged
    from tasks.register import register_task
    from tracking.registry import model_dir_digest

    model = build_tiny_model_dir(tmp_path / "model")
    evaluated = model_dir_digest(model)
    (model / "config.json").write_text((model / "config.json").read_text().replace("{", "{ ", 1))

    @flow
    def register() -> dict:
        return register_task(
            str(model), name="m", run_id="r", tags={}, rewardbench_overall=1.0, promote=True, model_digest=evaluated
        )

    with pytest.raises(InputChanged, match="changed after evaluation"):
        register()


# --- 3. inputs are checked against their recorded digests --------------------------------------------


def _readable_flip(path: Path) -> int | None:
    """An offset where one flipped bit still reads as Parquet but changes the table (a silent flip)."""
    from rmcore import io

    original = path.read_bytes()
    before = io.table_digest(io.read_table(path))
    for offset in range(len(original) // 8, len(original) - 64, 7):
        _flip_byte(path, offset)
        try:
            if io.table_digest(io.read_table(path)) != before:
                return offset  # left flipped
        except Exception:  # noqa: BLE001, S110 - this flip broke the file: try another
            pass
        path.write_bytes(original)
    return None


def test_a_silent_bit_flip_in_the_mixture_is_rebuilt_before_training(setup: dict, tmp_path: Path):
    from flows.train import train_flow
    from rmcore import io

    work = tmp_path / "work"
    reference = train_flow(**_args(setup, work))
    (mixture_dir,) = stage_dirs(work, "mixtures")
    mixture = mixture_dir / "mixture.parquet"
    recorded = io.read_json(mixture_dir / "manifest.json")["digest"]
    assert _readable_flip(mixture) is not None, "no readable one-bit flip found"
    assert io.table_digest(io.read_table(mixture, "mixture")) != recorded  # it changed rows, and still reads

    again = train_flow(**_args(setup, work))
    assert io.table_digest(io.read_table(mixture, "mixture")) == recorded
    assert again["model_digest"] == reference["model_digest"]


def test_a_truncated_cleaned_table_is_rebuilt_when_the_mixture_needs_it(setup: dict, tmp_path: Path):
    """``Parquet magic bytes not found`` on every later run, until the folder was deleted by hand."""
    import shutil

    from flows.mixture import mixture_flow

    work = tmp_path / "work"
    mixture_flow(**_args(setup, work))
    reference = stage_digests(work)
    pairs = next(d for d in stage_dirs(work, "clean") if "pku" in str(d)) / "pairs.parquet"
    with open(pairs, "r+b") as f:
        f.truncate(pairs.stat().st_size // 2)
    for folder in stage_dirs(work, "mixtures"):  # a new mixture reads the cleaned table
        shutil.rmtree(folder)

    mixture_flow(**_args(setup, work))
    assert stage_digests(work) == reference
    assert table_digests(pairs.parent)  # reads as Parquet again


def test_training_refuses_a_mixture_that_is_not_the_recorded_one_naming_the_file_and_the_fix(
    setup: dict, tmp_path: Path
):
    from flows.mixture import mixture_flow
    from rmcore.recipe import load_recipe
    from tasks.integrity import InputChanged
    from tasks.train import train_task

    work = tmp_path / "work"
    data = mixture_flow(**_args(setup, work))
    mixture = Path(data["mixture"]["path"])
    with open(mixture, "r+b") as f:
        f.truncate(mixture.stat().st_size // 2)
    config = load_recipe(setup["recipe"]).train
    with pytest.raises(InputChanged) as err:
        train_task(config, str(mixture), data["mixture"]["digest"], str(work))
    message = str(err.value)
    assert str(mixture) in message and "rmflow mix" in message
    assert not list((work / "models").glob("*/model")), "trained on it anyway"


# --- 4. resume skips a damaged checkpoint ----------------------------------------------------------


def test_a_truncated_checkpoint_falls_back_to_the_previous_complete_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    from train_helpers import toy_pairs, train_config, write_mixture

    from rmcore.train import train_reward_model
    from rmcore.train.checkpoint import latest_checkpoint

    tiny = build_tiny_model_dir(tmp_path / "tiny")
    mixture = write_mixture(tmp_path / "mix.parquet", toy_pairs(24))
    config = train_config(
        model=str(tiny), max_length=32, micro_batch=4, global_batch=4, max_steps=3,
        checkpoint_every=1, keep_checkpoints=3, eval_fraction=0.2, log_every=1,
    )  # fmt: skip
    out = tmp_path / "run"
    train_reward_model(config, mixture_path=mixture, output_dir=out)
    (out / "model").rename(tmp_path / "uninterrupted")
    newest = latest_checkpoint(out / "checkpoints")
    assert newest is not None and newest.name == "step-0000003"
    weights = newest / "model.safetensors"
    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size // 2)

    with caplog.at_level(logging.WARNING):
        result = train_reward_model(config, mixture_path=mixture, output_dir=out, resume=True)
    assert "step-0000003 is damaged" in caplog.text and "step-0000002 instead" in caplog.text
    assert result.steps == 3
    assert weight_distance(out / "model", tmp_path / "uninterrupted") == 0.0


# --- 5. Prefect result records never run code -------------------------------------------------------


class HostilePickle:
    """Unpickling it creates a marker file (what a stranger's payload would do instead)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def _record_path(key: str) -> Path:
    from prefect.results import get_default_result_storage

    return Path(get_default_result_storage(_sync=True).basepath).expanduser() / key


def test_a_cached_result_rewritten_as_pickle_is_refused_not_run(setup: dict, tmp_path: Path):
    """SECURITY.md: task results are never unpickled. Prefect takes the serializer from the stored
    record, so a record rewritten to say pickle would run its payload on the next cached rerun."""
    from prefect._internal.result_records import ResultRecord, ResultRecordMetadata
    from prefect.serializers import PickleSerializer

    from flows.mixture import mixture_flow

    work = tmp_path / "work"
    data = mixture_flow(**_args(setup, work))
    (mixture_dir,) = stage_dirs(work, "mixtures")
    key = mixture_dir.name
    record = _record_path(key)
    assert record.is_file(), "the mixture task left no result record to tamper with"
    marker = tmp_path / "MARKER-result"
    hostile = ResultRecord(
        metadata=ResultRecordMetadata(serializer=PickleSerializer(picklelib="cloudpickle"), storage_key=str(record)),
        result=HostilePickle(marker),
    )
    record.write_bytes(hostile.serialize())

    try:
        again = mixture_flow(**_args(setup, work))
    finally:  # checked first: the pickle's result (None) also breaks the flow
        assert not marker.exists(), "a result record's pickle ran"
    assert again["mixture"]["digest"] == data["mixture"]["digest"]


def test_a_failed_flow_run_writes_its_error_as_json_never_pickle(tmp_path: Path):
    """Prefect writes a failed flow run's exception to result storage even without persisted
    results, pickled unless the flow names a serializer: every rmflow flow names JSON."""
    from flows.mixture import mixture_flow

    state = mixture_flow(recipe=str(tmp_path / "no-such-recipe.yaml"), return_state=True)
    assert state.is_failed()
    assert state.data.metadata.serializer.type == "json"


def test_a_changed_input_is_not_retried_other_failures_are():
    """train and register retry a failure once or twice, but never a changed input: it stays
    changed, and the error already names the command that rebuilds it."""
    from prefect.states import Failed

    from tasks.integrity import InputChanged, retry_unless_input_changed
    from tasks.register import register_task
    from tasks.train import train_task

    class Record:  # a persisted failure keeps its exception in a result record
        def __init__(self, result):
            self.result = result

    changed = InputChanged("mixture.parquet changed")
    for state in (Failed(data=changed), Failed(data=Record(changed))):
        assert retry_unless_input_changed(None, None, state) is False
    assert retry_unless_input_changed(None, None, Failed(data=OSError("server away"))) is True
    assert train_task.retry_condition_fn is register_task.retry_condition_fn is retry_unless_input_changed
