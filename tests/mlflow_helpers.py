"""Helpers for the MLflow tests: tiny reward-model folders and their directly computed rewards,
and a faster ``mlflow_uri`` (import both fixtures into a test module to use it).

Creating a fresh MLflow SQLite DB runs every schema migration: 10-15 s per test on 2 busy
cores. ``mlflow_uri`` here is the same per-test real store as conftest's, but starts from a
copy of one migrated empty DB made once per session (0.2 s).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from tiny import build_tiny_model_dir


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory) -> Path:
    """One migrated, empty MLflow SQLite DB for the session."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    MlflowClient(tracking_uri=f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def mlflow_uri(tmp_path: Path, mlflow_template_db: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A real SQLite-backed MLflow store with local artifacts in ``tmp_path``, per test
    (the exported MLFLOW_*_URI variables are undone afterwards, see tests/conftest.py)."""
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

# Rows in both input forms the pyfunc and `rmflow score` accept.
ROWS = [
    {"prompt": "how do i say thanks", "response": "you can say thank you"},
    {"prompt": "what is the best way to help", "response": "ask what they need first and then help"},
    {
        "messages": [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi there how can i help"},
            {"role": "user", "content": "tell me something good"},
            {"role": "assistant", "content": "people are very kind"},
        ]
    },
]


def tiny_reward_dir(path: Path, *, arch: str = "bert", seed: int = 0) -> Path:
    """A tiny saved reward model (mean pooling for bert, last token for llama)."""
    pooling = "mean" if arch == "bert" else "last"
    return build_tiny_model_dir(path, arch, pooling=pooling, seed=seed)


def direct_rewards(folder: Path, rows: list[dict]) -> list[float]:
    """Rewards of ``rows`` from the folder loaded with rmcore directly (no MLflow)."""
    from rmcore.model import load_reward_model
    from rmcore.scoring import score_conversations
    from tasks.reward_pyfunc import rows_to_conversations

    model = load_reward_model(folder)
    return [float(r) for r in score_conversations(model, rows_to_conversations(rows))]
