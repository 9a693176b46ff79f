"""Security: what rmflow loads and from where, what it exposes, what it never writes down.

- A model folder's own Python code (``auto_map``) never runs unless the recipe sets
  ``trust_remote_code``; when it is set, the run and the saved model record it.
- Weights load from safetensors only: pickle-only folders are refused; a folder with both
  loads the safetensors file and never unpickles the other.
- Resuming never unpickles code: a tampered ``training_state.pt`` is refused (weights_only).
- A static scan of the source tree for unsafe loads (in addition to the behaviour above).
- The servers ``rmflow up`` starts listen on 127.0.0.1 only (every listening socket of every
  process it started, read from /proc).
- Secret environment values (HF_TOKEN, MLFLOW_TRACKING_PASSWORD, WANDB_API_KEY) never reach
  anything a real pipeline run writes: work dir, MLflow DB bytes and artifacts, Prefect
  home, logs and output.

Every "must not run" check uses a marker file that the hostile code would create.
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from outage_helpers import small_pipeline_recipe
from tiny import build_tiny_model_dir

REPO = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("rmcore", "tasks", "flows", "rmflow", "data_contracts", "scripts", "bench")


class HostilePickle:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears iff pickle code ran."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


# --- trust_remote_code ---------------------------------------------------------------------

CUSTOM_CODE = """
from pathlib import Path
Path({marker!r}).write_text("custom code ran")
from transformers import BertConfig, BertForSequenceClassification


class CustomConfig(BertConfig):
    model_type = {model_type!r}


class CustomModel(BertForSequenceClassification):
    config_class = CustomConfig
"""


def custom_code_model(root: Path, *, model_type: str) -> tuple[Path, Path]:
    """A tiny model folder whose config maps the Auto classes to ``custom_code.py`` (which
    writes a marker file when imported); returns (folder, marker)."""
    folder = build_tiny_model_dir(root / f"custom-{model_type}")
    marker = root / f"MARKER-{model_type}"
    (folder / "custom_code.py").write_text(CUSTOM_CODE.format(marker=str(marker), model_type=model_type))
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = model_type
    config["auto_map"] = {
        "AutoConfig": "custom_code.CustomConfig",
        "AutoModelForSequenceClassification": "custom_code.CustomModel",
    }
    (folder / "config.json").write_text(json.dumps(config))
    return folder, marker


def test_custom_model_code_never_runs_without_trust(tmp_path: Path) -> None:
    from train_helpers import train_config

    from rmcore.model import load_reward_model
    from rmcore.train import train_reward_model

    # A model type transformers does not know: refused, naming the fix.
    unknown, marker = custom_code_model(tmp_path, model_type="rmflow_custom")
    with pytest.raises(ValueError, match="trust_remote_code=True"):
        load_reward_model(unknown)
    assert not marker.exists()
    # Same through the training entry point with a recipe that does not set it (default off).
    assert train_config(model=str(unknown)).backbone.trust_remote_code is False
    with pytest.raises(ValueError, match="contains custom code"):
        train_reward_model(
            train_config(model=str(unknown)),
            mixture_path=tmp_path / "unused.parquet",
            output_dir=tmp_path / "out",
        )
    assert not marker.exists()

    # A known type with an auto_map: the stock class loads, the folder's code does not run.
    known, known_marker = custom_code_model(tmp_path, model_type="bert")
    model = load_reward_model(known)
    assert type(model.hf).__name__ == "BertForSequenceClassification"
    assert not known_marker.exists()

    # Control: the fixture's code really runs once trust is given (so the absent marker means something).
    trusted = load_reward_model(unknown, trust_remote_code=True)
    assert marker.read_text() == "custom code ran"
    assert type(trusted.hf).__name__ == "CustomModel"


def test_trust_remote_code_is_recorded_in_the_saved_model(tmp_path: Path) -> None:
    from rmcore.model import REWARD_JSON, load_reward_model

    tiny = build_tiny_model_dir(tmp_path / "tiny")
    load_reward_model(tiny).save(tmp_path / "off")
    load_reward_model(tiny, trust_remote_code=True).save(tmp_path / "on")
    assert json.loads((tmp_path / "off" / REWARD_JSON).read_text())["trust_remote_code"] is False
    assert json.loads((tmp_path / "on" / REWARD_JSON).read_text())["trust_remote_code"] is True
    # Loading never turns trust on from the saved file: the caller decides every time.
    assert load_reward_model(tmp_path / "on").trust_remote_code is False


def test_trust_remote_code_is_recorded_on_the_mlflow_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow
    from train_helpers import changed

    from flows.context import RunContext
    from flows.model_stages import TRUST_TAG, start_tracking
    from rmcore.recipe import load_recipe

    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # undone after the test (MLflow exports both)
        monkeypatch.setenv(var, f"sqlite:///{tmp_path / 'mlflow.db'}")
    demo = load_recipe("demo")
    assert demo.train.backbone.trust_remote_code is False  # the shipped recipe leaves it off
    trusted = replace(demo, train=changed(demo.train, trust_remote_code=True))
    tags, params = {}, {}
    for label, recipe in (("off", demo), ("on", trusted)):
        ctx = RunContext(recipe, None, "test data", tmp_path / "work")
        run_id = start_tracking(ctx, f"flow-run-{label}", label, None)
        run = mlflow.MlflowClient().get_run(run_id)
        tags[label], params[label] = (
            run.data.tags.get(TRUST_TAG),
            run.data.params.get("train.backbone.trust_remote_code"),
        )
    mlflow.set_tracking_uri(None)
    assert tags == {"off": "false", "on": "true"}
    assert params == {"off": "False", "on": "True"}  # the typed config logs every field


# --- safetensors only ----------------------------------------------------------------------


def _as_bin(folder: Path, *, payload=None) -> None:
    """Write pytorch_model.bin beside/instead of the safetensors file (its state dict, or ``payload``)."""
    from safetensors.torch import load_file

    state = load_file(str(folder / "model.safetensors"))
    torch.save(state if payload is None else payload, folder / "pytorch_model.bin")


def test_pickle_only_weights_are_refused_with_the_reason(tmp_path: Path) -> None:
    from rmcore.model import load_reward_model

    folder = build_tiny_model_dir(tmp_path / "bin-only")
    _as_bin(folder)  # a benign, loadable state dict: refused for its format, not its content
    (folder / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError) as err:
        load_reward_model(folder)
    message = str(err.value)
    assert str(folder) in message and "pytorch_model.bin" in message
    assert "no *.safetensors weights" in message and "refused" in message


def test_with_both_formats_safetensors_load_and_the_pickle_is_never_opened(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    from rmcore.model import load_reward_model

    folder = build_tiny_model_dir(tmp_path / "both")
    marker = tmp_path / "MARKER-bin"
    _as_bin(folder, payload={"classifier.weight": HostilePickle(marker)})
    model = load_reward_model(folder)
    assert not marker.exists()
    expected = load_file(str(folder / "model.safetensors"))
    state = model.hf.state_dict()
    assert torch.equal(state["classifier.weight"], expected["classifier.weight"])
    assert torch.equal(
        state["bert.embeddings.word_embeddings.weight"], expected["bert.embeddings.word_embeddings.weight"]
    )


# --- checkpoints: resume never unpickles code ---------------------------------------------


def test_resume_refuses_a_tampered_training_state(tmp_path: Path) -> None:
    from train_helpers import toy_pairs, train_config, write_mixture

    from rmcore.io import file_sha256
    from rmcore.train import train_reward_model
    from rmcore.train.checkpoint import latest_checkpoint

    tiny = build_tiny_model_dir(tmp_path / "tiny")
    mixture = write_mixture(tmp_path / "mix.parquet", toy_pairs(24))
    config = train_config(
        model=str(tiny),
        max_length=32,
        micro_batch=4,
        global_batch=4,
        max_steps=2,
        checkpoint_every=1,
        eval_fraction=0.2,
        log_every=1,
    )
    out = tmp_path / "run"
    train_reward_model(config, mixture_path=mixture, output_dir=out)
    # Resume with a swapped training state, as a stranger's file would be.
    (out / "model").rename(tmp_path / "first-model")
    ckpt = latest_checkpoint(out / "checkpoints")
    assert ckpt is not None and ckpt.name == "step-0000002"
    marker = tmp_path / "MARKER-ckpt"
    good = torch.load(ckpt / "training_state.pt", weights_only=True)
    torch.save({**good, "optimizer": HostilePickle(marker)}, ckpt / "training_state.pt")
    # A stranger's whole checkpoint: its file list (else resume skips it as damaged) lists the new file.
    state = json.loads((ckpt / "trainer_state.json").read_text())
    state["files"]["training_state.pt"] = {
        "size": (ckpt / "training_state.pt").stat().st_size,
        "sha256": file_sha256(ckpt / "training_state.pt"),
    }
    (ckpt / "trainer_state.json").write_text(json.dumps(state))
    with pytest.raises(Exception) as err:  # the marker is checked first, then the type
        train_reward_model(config, mixture_path=mixture, output_dir=out)
    assert not marker.exists(), "resuming ran the pickle's code"
    assert err.type is RuntimeError, err.value
    message = str(err.value)
    assert str(ckpt / "training_state.pt") in message and "refused to resume" in message
    assert f"Delete {ckpt}" in message


# --- static scan of the source tree --------------------------------------------------------


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    return "?"


def _kw(call: ast.Call, name: str):
    for kw in call.keywords:
        if kw.arg == name:
            return kw.value.value if isinstance(kw.value, ast.Constant) else "<expr>"
    return None


def unsafe_loads(root: Path) -> list[str]:
    """Every call in the Python source under ``root`` that could unpickle or run foreign code."""
    problems = []
    for folder in SOURCE_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(), filename=str(path))
            where = path.relative_to(root)
            for call in _calls(tree):
                name = _dotted(call.func)
                line = f"{where}:{call.lineno} {name}"
                if name == "torch.load" and _kw(call, "weights_only") is not True:
                    problems.append(f"{line} without weights_only=True")
                if re.fullmatch(
                    r"(c?pickle|dill|joblib|cloudpickle)\.loads?|pd\.read_pickle|pandas\.read_pickle"
                    r"|yaml\.(unsafe_)?load|yaml\.full_load",
                    name,
                ):
                    problems.append(f"{line}")
                if _kw(call, "allow_pickle") is True:
                    problems.append(f"{line} with allow_pickle=True")
                if _kw(call, "trust_remote_code") is True:
                    problems.append(f"{line} with trust_remote_code=True")
                if _kw(call, "use_safetensors") is False or _kw(call, "safe_serialization") is False:
                    problems.append(f"{line} allows pickle weights")
                if (
                    name.endswith("from_pretrained")
                    and name.split(".")[0].startswith("AutoModel")
                    and _kw(call, "use_safetensors") is not True
                    and _kw(call, "gguf_file") is None  # a GGUF file is parsed by the gguf package: no pickle
                ):
                    problems.append(f"{line} without use_safetensors=True")
                if (
                    name in ("task", "prefect.task")
                    and _kw(call, "persist_result") is True
                    and _kw(call, "result_serializer") != "json"
                ):
                    problems.append(f"{line} persists results with the default (pickle) serializer")
    return problems


def test_source_tree_has_no_unsafe_loads() -> None:
    assert unsafe_loads(REPO) == []


def test_the_scan_finds_what_it_looks_for(tmp_path: Path) -> None:
    """The scanner itself: each hostile pattern in a file is reported (no silent pass)."""
    (tmp_path / "rmcore").mkdir()
    (tmp_path / "rmcore" / "bad.py").write_text(
        "import pickle, torch, numpy as np, yaml\n"
        "from prefect import task\n"
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
        "torch.load('a')\n"
        "torch.load('a', weights_only=False)\n"
        "torch.load('a', weights_only=True)\n"
        "pickle.loads(b'')\n"
        "np.load('a', allow_pickle=True)\n"
        "yaml.load('a')\n"
        "AutoModelForSequenceClassification.from_pretrained('m')\n"
        "AutoModelForSequenceClassification.from_pretrained('m', use_safetensors=True)\n"
        "AutoModelForCausalLM.from_pretrained('d', gguf_file='m.gguf')\n"
        "AutoTokenizer.from_pretrained('m', trust_remote_code=True)\n"
        "@task(persist_result=True)\ndef f(): pass\n"
        "@task(persist_result=True, result_serializer='json')\ndef g(): pass\n"
    )
    found = [p.split(" ", 1)[0].split(":")[1] for p in unsafe_loads(tmp_path)]
    assert found == ["4", "5", "7", "8", "9", "10", "13", "14"]


# --- servers listen on loopback only -------------------------------------------------------

LOOPBACK = {"0100007F", "00000000000000000000000001000000"}  # 127.0.0.1 and ::1, as /proc/net prints them


def listening_sockets(pids: list[int]) -> dict[str, set[str]]:
    """Local "address:port" (hex, /proc/net/tcp* layout) of every TCP socket in LISTEN state
    that one of ``pids`` holds open, read from the kernel (not from command lines)."""
    inodes: dict[str, int] = {}
    for pid in pids:
        fd_dir = Path(f"/proc/{pid}/fd")
        try:
            fds = list(fd_dir.iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            found = re.fullmatch(r"socket:\[(\d+)\]", target)
            if found:
                inodes[found.group(1)] = pid
    by_pid: dict[str, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN; field 9: inode
                by_pid.setdefault(str(inodes[fields[9]]), set()).add(fields[1])
    return by_pid


def _non_loopback_address() -> str | None:
    """This machine's address on its default route (no packet is sent), if it has one."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("10.255.255.255", 1))
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if address.startswith("127.") else address


@pytest.fixture(scope="module")
def security_stack(tmp_path_factory: pytest.TempPathFactory):
    """`rmflow up` (stand-in flows: the sockets do not depend on them) on free ports; `down` after."""
    import subprocess
    import sys

    from stack_helpers import free_port, rmflow, stub_project

    tmp = tmp_path_factory.mktemp("security-stack")
    home = tmp / "home"
    ports = {"prefect": free_port(), "mlflow": free_port()}
    args = [
        "--home",
        str(home),
        "--project-dir",
        str(stub_project(tmp / "project")),
        "--prefect-port",
        str(ports["prefect"]),
        "--mlflow-port",
        str(ports["mlflow"]),
    ]
    try:
        yield {"up": rmflow("up", *args), "ports": ports}
    finally:
        subprocess.run(
            [sys.executable, "-m", "rmflow.cli", "down", "--home", str(home)],
            check=False,
            capture_output=True,
            timeout=120,
        )


@pytest.mark.slow
def test_every_socket_the_stack_listens_on_is_loopback(security_stack: dict) -> None:
    from socket import create_connection

    from rmflow import stack_procs

    up, ports = security_stack["up"], security_stack["ports"]
    pids = [pid for p in up["processes"].values() for pid in [p["pid"], *stack_procs.descendants(p["pid"])]]
    assert len(pids) >= 4
    sockets = listening_sockets(pids)
    addresses = {a for found in sockets.values() for a in found}
    # Both servers are among them (the check is not vacuous) ...
    assert {int(a.split(":")[1], 16) for a in addresses} >= {ports["prefect"], ports["mlflow"]}
    # ... and no process the stack started listens anywhere but loopback.
    assert {a.split(":")[0] for a in addresses} <= LOOPBACK, sockets
    # Seen from outside: the machine's own address refuses the connection.
    outside = _non_loopback_address()
    if outside is not None:
        for port in ports.values():
            with pytest.raises(OSError):
                create_connection((outside, port), timeout=2).close()


# --- secrets never written down ------------------------------------------------------------


def files_containing(roots: list[Path], needles: list[str]) -> dict[str, list[str]]:
    """needle -> files under ``roots`` whose bytes contain it (every file, any size or type)."""
    hits: dict[str, list[str]] = {}
    seen: set[Path] = set()
    for root in roots:
        for path in [root] if root.is_file() else sorted(root.rglob("*")):
            if path in seen or not path.is_file() or path.is_symlink():
                continue
            seen.add(path)
            data = path.read_bytes()
            for needle in needles:
                if needle.encode() in data:
                    hits.setdefault(needle, []).append(str(path))
    return hits


def wait_for_api_log(needle: str, timeout: float = 90.0) -> bool:
    """Drain Prefect's log worker, then poll the API until a log message containing ``needle`` is stored."""
    import time

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.sorting import LogSort
    from prefect.logging.handlers import APILogWorker

    APILogWorker.drain_all(timeout=timeout)

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while time.monotonic() < deadline:
            newest = client.read_logs(limit=200, sort=LogSort.TIMESTAMP_DESC)
            if any(needle in log.message for log in newest):
                return True
            time.sleep(0.5)
    return False


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_secret_env_values_appear_nowhere_a_run_writes(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging
    import secrets

    import mlflow
    from prefect.settings import (
        PREFECT_LOGGING_TO_API_ENABLED,
        PREFECT_SERVER_DATABASE_CONNECTION_URL,
        temporary_settings,
    )

    from flows.pipeline import pipeline_flow

    canaries = {
        "HF_TOKEN": f"hf_{secrets.token_hex(16)}",
        "MLFLOW_TRACKING_PASSWORD": f"pw{secrets.token_hex(12)}",
        "WANDB_API_KEY": f"wb{secrets.token_hex(20)}",
    }
    for name, value in canaries.items():
        monkeypatch.setenv(name, value)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # undone after the test (MLflow exports both)
        monkeypatch.setenv(var, f"sqlite:///{tmp_path / 'mlflow.db'}")
    caplog.set_level(logging.DEBUG, logger="rmcore")
    caplog.set_level(logging.DEBUG, logger="tasks")
    caplog.set_level(logging.DEBUG, logger="flows")
    run = small_pipeline_recipe(tmp_path, model_name="secret-scan")
    try:
        with temporary_settings(
            updates={PREFECT_LOGGING_TO_API_ENABLED: True}
        ):  # logs into the Prefect DB too
            summary = pipeline_flow(recipe=run["recipe"], data_dir=run["data"], work_dir=run["work"])
    finally:
        mlflow.set_tracking_uri(None)
    assert summary["registered"]["version"] == 1  # the whole chain ran, through registration

    prefect_db = Path(PREFECT_SERVER_DATABASE_CONNECTION_URL.value().split("///", 1)[1])
    isolation_root = Path(os.environ["PREFECT_HOME"]).parent  # conftest: PREFECT_HOME, HF_HOME, RMFLOW_HOME
    out, err = capfd.readouterr()
    (tmp_path / "captured.txt").write_text(out + err + caplog.text)
    roots = [tmp_path, prefect_db.parent, isolation_root]
    assert (tmp_path / "mlflow.db").stat().st_size > 0 and prefect_db.stat().st_size > 0
    assert any(p.is_file() for p in (tmp_path / "artifacts").rglob("*"))
    captured = (tmp_path / "captured.txt").read_text()
    assert "reward model at" in captured, captured[-3000:]  # the run's logs were captured
    # The scan reads what the run wrote: its logs reached the Prefect DB, its params the MLflow DB.
    # Prefect ships logs from a background worker in batches: wait until the server has them.
    assert wait_for_api_log("reward model at"), "the run's log line never reached the Prefect API"
    assert files_containing([prefect_db.parent], ["reward model at"])
    assert files_containing([tmp_path / "mlflow.db"], ["train.backbone.max_length"])
    assert files_containing(roots, list(canaries.values())) == {}
