"""Where the MLflow store is: ``TrackingConfig``, the tracking URI, the local SQLite store, experiments.

Store: ``TrackingConfig.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite at
``<RMFLOW_HOME or ./.rmflow>/mlflow/mlflow.db`` with artifacts in ``<same dir>/artifacts``:
the same files ``rmflow up`` serves, so runs logged without the server show in its UI.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DEFAULT_EXPERIMENT = "rmflow"


@dataclass(frozen=True)
class TrackingConfig:
    """Where runs and models are tracked."""

    tracking_uri: str | None = None
    """Any MLflow tracking URI; None: $MLFLOW_TRACKING_URI, else the local SQLite store."""
    registry_uri: str | None = None
    """Model registry URI; None: $MLFLOW_REGISTRY_URI, else the tracking URI."""
    experiment: str = DEFAULT_EXPERIMENT
    """Experiment that holds the pipeline runs."""
    artifact_location: str | None = None
    """Artifact root for a new experiment; None: beside a SQLite DB, the server's default otherwise."""


# ---------------------------------------------------------------- where the store is


def rmflow_home(env: Mapping[str, str] | None = None) -> Path:
    """``$RMFLOW_HOME`` or ``./.rmflow``: the local state directory."""
    env = os.environ if env is None else env
    return Path(env.get("RMFLOW_HOME") or ".rmflow").resolve()


def local_store_paths(home: Path | None = None) -> tuple[Path, Path]:
    """(SQLite DB file, artifact directory) of the local default store (also what `rmflow up` serves)."""
    home = rmflow_home() if home is None else home
    return home / "mlflow" / "mlflow.db", home / "mlflow" / "artifacts"


def resolve_tracking_uri(config: TrackingConfig | None = None, env: Mapping[str, str] | None = None) -> str:
    """Configured URI > $MLFLOW_TRACKING_URI > ``sqlite:///<RMFLOW_HOME>/mlflow/mlflow.db``."""
    env = os.environ if env is None else env
    if config is not None and config.tracking_uri:
        return config.tracking_uri
    if env.get("MLFLOW_TRACKING_URI"):
        return env["MLFLOW_TRACKING_URI"]
    db, _ = local_store_paths(rmflow_home(env))
    return f"sqlite:///{db}"


def sqlite_path(uri: str) -> Path | None:
    """The DB file of a ``sqlite:///`` URI, else None."""
    return Path(uri[len("sqlite:///") :]) if uri.startswith("sqlite:///") else None


def configure(config: TrackingConfig | None = None) -> str:
    """Point MLflow (tracking + registry) at the configured store; return the tracking URI."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Against a server MLflow writes "View run ..." to stdout when a run ends, which would
    # break `rmflow ... --json` (one JSON object on stdout); ui_links() gives the links.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    global _EXPORTED_REGISTRY
    uri = resolve_tracking_uri(config)
    from_env = os.environ.get("MLFLOW_REGISTRY_URI")
    if from_env == _EXPORTED_REGISTRY:
        from_env = None  # mlflow.set_registry_uri exported it on our last call: not the user's choice
    chosen = config.registry_uri if config else None
    registry = chosen or from_env or uri
    db = sqlite_path(uri)
    if db is not None:
        db.parent.mkdir(parents=True, exist_ok=True)
        _create_sqlite_store_once(db, uri, registry)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(registry)
    _EXPORTED_REGISTRY = None if registry == from_env and not chosen else registry
    return uri


_EXPORTED_REGISTRY: str | None = None
"""The registry URI the last ``configure`` chose itself (not from $MLFLOW_REGISTRY_URI). MLflow
exports it as $MLFLOW_REGISTRY_URI, which must not pin every later store of this process to it."""


_CREATED_STORES: set[str] = set()


def _create_sqlite_store_once(db: Path, uri: str, registry: str) -> None:
    """Open (create / migrate) a SQLite store under a file lock, once per process.

    MLflow migrates a new SQLite database when it first opens it, and two processes doing
    that at once fail (alembic "expected to match one row"): two pipeline runs started
    together on a fresh store. Under the lock the first creates it, the others find it ready.
    """
    import fcntl

    from mlflow import MlflowClient

    if uri in _CREATED_STORES:
        return
    with open(db.parent / f"{db.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        c = MlflowClient(tracking_uri=uri, registry_uri=registry)
        c.search_experiments(max_results=1)
        if registry == uri:
            c.search_registered_models(max_results=1)
    _CREATED_STORES.add(uri)


def client():
    """An ``MlflowClient`` on the currently configured URIs."""
    from mlflow import MlflowClient

    return MlflowClient()


EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
"""The experiment tag MLflow's UI reads to pick its view (3.x opens untagged ones as GenAI)."""
EXPERIMENT_KIND = "custom_model_development"
"""Model training: runs, metrics charts and the model registry, not GenAI traces."""


def ensure_experiment(name: str = DEFAULT_EXPERIMENT, *, artifact_location: str | None = None) -> str:
    """Id of experiment ``name``, created if absent, tagged as model training.

    A new experiment on a SQLite store keeps its artifacts in ``artifacts/<name>`` beside the DB
    (MLflow's own default would be ``./mlruns`` under whatever the working directory is). An
    existing experiment gets the kind tag only when it has none (a user's choice stays).
    """
    import mlflow

    c = client()
    found = c.get_experiment_by_name(name)
    if found is not None:
        if EXPERIMENT_KIND_TAG not in found.tags:
            c.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return found.experiment_id
    if artifact_location is None:
        db = sqlite_path(mlflow.get_tracking_uri())
        if db is not None:
            artifact_location = str(db.parent / "artifacts" / name)
    return c.create_experiment(
        name, artifact_location=artifact_location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
    )


