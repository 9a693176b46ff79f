"""MLflow tracking for rmflow: where the store is, one run per pipeline run, what gets logged.

Only the task layer imports MLflow (rmcore never does). Every helper takes an explicit
``run_id`` and talks through ``MlflowClient``, so stages running in Prefect worker threads
never depend on MLflow's thread-local "active run".

Store: ``TrackingConfig.tracking_uri``, else ``$MLFLOW_TRACKING_URI``, else SQLite at
``<RMFLOW_HOME or ./.rmflow>/mlflow/mlflow.db`` with artifacts in ``<same dir>/artifacts``:
the same files ``rmflow up`` serves, so runs logged without the server show in its UI.

Secrets: no param or tag whose key names a secret (a key segment "token", "secret",
"password" or "key": ``hf_token``, ``api_key``) is logged, and no param, tag, dataset field
or text artifact may contain the value of an environment variable whose name contains
TOKEN/SECRET/PASSWORD/KEY (e.g. ``HF_TOKEN``): such params/tags are dropped with a warning and
such files are refused.
"""

from __future__ import annotations

import logging
import math
import os
import re
import subprocess
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tasks.orphan_runs import close_orphaned_runs, owner_tags

log = logging.getLogger(__name__)

PIPELINE_RUN_TAG = "rmflow.pipeline_run_id"
DEFAULT_EXPERIMENT = "rmflow"
# Environment variable names that hold secrets (substring match: HF_TOKEN, PREFECT_API_KEY...).
SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|KEY", re.IGNORECASE)
# Param/tag keys that name a secret: one of those words as a whole key segment
# ("hf_token", "api_key", "db.password"), so "tokenizer" or "tokens_per_s" still pass.
SECRET_KEY = re.compile(r"(^|[._\-/])(token|secret|password|passwd|key)($|[._\-/])", re.IGNORECASE)
_MIN_SECRET_LEN = 6
_MAX_PARAM_LEN = 6000
_SCAN_LIMIT = 64 << 20  # bytes; larger files (model weights) are not scanned for secrets


class SecretLeakError(RuntimeError):
    """A file about to be logged contains the value of a secret environment variable."""


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


def ensure_experiment(name: str = DEFAULT_EXPERIMENT, *, artifact_location: str | None = None) -> str:
    """Id of experiment ``name``, created if absent.

    A new experiment on a SQLite store keeps its artifacts in ``artifacts/<name>`` beside the DB
    (MLflow's own default would be ``./mlruns`` under whatever the working directory is).
    """
    import mlflow

    c = client()
    found = c.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if artifact_location is None:
        db = sqlite_path(mlflow.get_tracking_uri())
        if db is not None:
            artifact_location = str(db.parent / "artifacts" / name)
    return c.create_experiment(name, artifact_location=artifact_location)


# ---------------------------------------------------------------- one run per pipeline run


def find_pipeline_run(pipeline_run_id: str, experiment_id: str) -> str | None:
    """Run id tagged with ``pipeline_run_id`` in the experiment, or None (oldest if several)."""
    runs = client().search_runs(
        [experiment_id],
        filter_string=f"tags.`{PIPELINE_RUN_TAG}` = '{quote_filter_value(pipeline_run_id)}'",
        order_by=["attributes.start_time ASC"],
        max_results=10,
    )
    return runs[0].info.run_id if runs else None


def start_pipeline_run(
    pipeline_run_id: str,
    *,
    config: TrackingConfig | None = None,
    run_name: str | None = None,
    tags: Mapping[str, str] | None = None,
) -> str:
    """The MLflow run of a pipeline run: found by its tag (retries and reruns log into it) or created.

    Returns the run id; the run is (re)marked RUNNING and tagged with this process
    (``tasks.orphan_runs``: runs of pipelines killed on this host are closed as KILLED here).
    Call ``end_pipeline_run`` at the end.
    """
    configure(config)
    experiment_id = ensure_experiment(
        (config or TrackingConfig()).experiment,
        artifact_location=config.artifact_location if config else None,
    )
    c = client()
    close_orphaned_runs(c, experiment_id)
    run_id = find_pipeline_run(pipeline_run_id, experiment_id)
    extra = redact_mapping({k: str(v) for k, v in (tags or {}).items()}, what="tag") | owner_tags()
    if run_id is None:
        run = c.create_run(
            experiment_id, run_name=run_name, tags={PIPELINE_RUN_TAG: pipeline_run_id, **extra}
        )
        log.info("MLflow run %s created for pipeline run %s", run.info.run_id, pipeline_run_id)
        return run.info.run_id
    c.update_run(run_id, status="RUNNING")
    for key, value in extra.items():
        c.set_tag(run_id, key, value)
    log.info("MLflow run %s resumed for pipeline run %s", run_id, pipeline_run_id)
    return run_id


def end_pipeline_run(run_id: str, *, failed: bool = False) -> None:
    """Mark the pipeline's run FINISHED (or FAILED); logs its UI link when tracking to a server."""
    client().set_terminated(run_id, status="FAILED" if failed else "FINISHED")
    link = ui_links(run_id).get("run")
    if link:
        log.info("MLflow run %s: %s", run_id, link)


# ---------------------------------------------------------------- secrets


def secret_values(env: Mapping[str, str] | None = None) -> set[str]:
    """Values of environment variables whose name looks secret (long enough to be one)."""
    env = os.environ if env is None else env
    return {v for k, v in env.items() if SECRET_NAME.search(k) and len(v) >= _MIN_SECRET_LEN}


def is_secret(key: str, value: str, secrets: set[str]) -> bool:
    """True if ``key`` names a secret or ``key``/``value`` holds a secret env value."""
    return bool(SECRET_KEY.search(key)) or any(s in value or s in key for s in secrets)


def redact_mapping(items: Mapping[str, str], *, what: str = "param") -> dict[str, str]:
    """``items`` without secret-looking keys or values holding a secret env value (warns per drop)."""
    secrets = secret_values()
    kept = {}
    for key, value in items.items():
        if is_secret(key, value, secrets):
            log.warning("not logging %s %r: its name or value looks like a secret", what, key)
            continue
        kept[key] = value
    return kept


def check_file_has_no_secret(path: Path) -> None:
    """Raise SecretLeakError if ``path`` (when small enough to scan) contains a secret env value."""
    secrets = secret_values()
    if not secrets or path.stat().st_size > _SCAN_LIMIT:
        return
    data = path.read_bytes()
    for s in secrets:
        if s.encode() in data:
            raise SecretLeakError(
                f"{path}: contains the value of a secret environment variable; remove it before logging"
            )


# ---------------------------------------------------------------- params and metrics


def flatten(obj: Any, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested mappings/lists -> {"a.b.0.c": leaf}; dataclasses are converted first.

    A trailing separator on ``prefix`` is allowed ("final/" and "final" give "final/loss").
    """
    from rmcore.config import to_dict

    prefix = prefix.rstrip(sep)
    obj = to_dict(obj)
    out: dict[str, Any] = {}
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            out.update(flatten(value, f"{prefix}{sep}{key}" if prefix else str(key), sep))
    elif isinstance(obj, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in obj):
        for i, value in enumerate(obj):
            out.update(flatten(value, f"{prefix}{sep}{i}" if prefix else str(i), sep))
    else:
        out[prefix] = obj
    return out


_BAD_KEY_CHARS = re.compile(r"[^/\w.\- :]")


def safe_key(key: str) -> str:
    """An MLflow-valid param/metric key: characters outside ``[/\\w.\\- :]`` become "_",
    repeated/leading/trailing slashes go (MLflow refuses keys that normalise to another path)."""
    key = _BAD_KEY_CHARS.sub("_", key)
    key = re.sub(r"/{2,}", "/", key).strip("/")
    return "/".join(part if part not in (".", "..") else "_" for part in key.split("/"))


def _param_str(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(map(str, value)) + "]"
    return str(value)


def log_params(run_id: str, params: Mapping[str, Any] | Any, *, prefix: str = "") -> dict[str, str]:
    """Log nested params flattened to dotted keys; returns what was logged.

    Keys already logged with the same value are skipped (a retried stage logs again); a
    different value for a logged key raises, naming both values.
    """
    from mlflow.entities import Param

    flat = {safe_key(k): _param_str(v)[:_MAX_PARAM_LEN] for k, v in flatten(params, prefix).items()}
    flat = redact_mapping(flat)
    c = client()
    existing = c.get_run(run_id).data.params
    new = {}
    for key, value in flat.items():
        if key in existing:
            if existing[key] != value:
                raise ValueError(
                    f"MLflow run {run_id}: param {key!r} is already {existing[key]!r}, cannot log {value!r}; "
                    "a changed config is a new pipeline run (new pipeline_run_id)"
                )
            continue
        new[key] = value
    items = sorted(new.items())
    for i in range(0, len(items), 100):
        c.log_batch(run_id, params=[Param(k, v) for k, v in items[i : i + 100]])
    return new


def numeric_leaves(metrics: Mapping[str, Any], *, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of a nested mapping keyed "a/b/c" (bools and strings are not metrics)."""
    out = {}
    for key, value in flatten(metrics, prefix, sep="/").items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        out[safe_key(key)] = float(value)
    return out


def log_metrics(
    run_id: str, metrics: Mapping[str, Any], *, step: int = 0, prefix: str = ""
) -> dict[str, float]:
    """Log every numeric leaf of ``metrics`` (nested dicts -> "a/b" keys) at ``step``."""
    from mlflow.entities import Metric

    flat = numeric_leaves(metrics, prefix=prefix)
    now = int(time.time() * 1000)
    items = sorted(flat.items())
    c = client()
    for i in range(0, len(items), 1000):
        c.log_batch(run_id, metrics=[Metric(k, v, now, step) for k, v in items[i : i + 1000]])
    nonfinite = [k for k, v in flat.items() if not math.isfinite(v)]
    if nonfinite:
        log.warning("run %s: non-finite metrics %s", run_id, ", ".join(nonfinite))
    return flat


def set_tags(run_id: str, tags: Mapping[str, Any]) -> dict[str, str]:
    """Set run tags (secret-filtered); returns what was set."""
    kept = redact_mapping({k: str(v) for k, v in tags.items()}, what="tag")
    c = client()
    for key, value in kept.items():
        c.set_tag(run_id, key, value)
    return kept


# ---------------------------------------------------------------- datasets (lineage)


def _mlflow_schema(parquet_path: Path):
    """The Parquet file's columns as an MLflow schema (None if a column type has no mapping)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from mlflow.types.schema import Array, ColSpec, Object, Property, Schema

    simple = {
        pa.string(): "string",
        pa.large_string(): "string",
        pa.float64(): "double",
        pa.float32(): "float",
        pa.int64(): "long",
        pa.int32(): "integer",
        pa.bool_(): "boolean",
    }
    cols = []
    for field in pq.read_schema(parquet_path):
        if field.type in simple:
            cols.append(ColSpec(simple[field.type], field.name, required=not field.nullable))
        elif pa.types.is_list(field.type) and pa.types.is_struct(field.type.value_type):
            props = []
            for sub in field.type.value_type:
                if sub.type not in simple:
                    return None
                props.append(Property(sub.name, simple[sub.type]))
            cols.append(ColSpec(Array(Object(props)), field.name, required=not field.nullable))
        else:
            return None
    return Schema(cols)


def log_dataset_input(
    run_id: str,
    parquet_path: str | Path,
    *,
    name: str,
    digest: str,
    context: str,
    manifest_path: str | Path | None = None,
    rows: int | None = None,
    extra_tags: Mapping[str, str] | None = None,
) -> None:
    """Record a Parquet dataset as a run input: its path (source), digest, schema, and the
    manifest it came from (lineage back to the mixture's inputs and recipe).

    ``digest`` is the content digest rmflow computed (e.g. the mixture digest); MLflow's
    dataset digest holds its first 32 hex characters and the full value goes in the tag
    ``rmflow.digest``. ``context`` is "training", "validation" or "evaluation".
    """
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    path = Path(parquet_path).resolve()
    if not path.exists():
        raise FileNotFoundError(f"{path}: dataset to log as an MLflow input does not exist")
    source = resolve_dataset_source(str(path))
    dataset = MetaDataset(source, name=name, digest=digest[:32], schema=_mlflow_schema(path))
    tags = {MLFLOW_DATASET_CONTEXT: context, "rmflow.digest": digest, "rmflow.path": str(path)}
    if manifest_path is not None:
        tags["rmflow.manifest"] = str(Path(manifest_path).resolve())
    if rows is not None:
        tags["rmflow.rows"] = str(rows)
    tags.update({k: str(v) for k, v in (extra_tags or {}).items()})
    tags = redact_mapping(tags, what="dataset tag")
    entity = DatasetInput(dataset._to_mlflow_entity(), tags=[InputTag(k, v) for k, v in tags.items()])
    client().log_inputs(run_id, datasets=[entity])


def run_inputs(run_id: str) -> list[dict[str, Any]]:
    """The run's dataset inputs as plain dicts: name, digest, source, tags."""
    import json

    out = []
    for ds_input in client().get_run(run_id).inputs.dataset_inputs:
        ds = ds_input.dataset
        out.append(
            {
                "name": ds.name,
                "digest": ds.digest,
                "source": json.loads(ds.source),
                "tags": {t.key: t.value for t in ds_input.tags},
            }
        )
    return out


# ---------------------------------------------------------------- artifacts


def log_artifacts(run_id: str, paths: Iterable[str | Path], *, artifact_path: str | None = None) -> list[str]:
    """Upload files (or whole folders) after checking none holds a secret; returns their names."""
    c = client()
    logged = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"{p}: artifact to log does not exist")
        files = [p] if p.is_file() else [f for f in p.rglob("*") if f.is_file()]
        for f in files:
            check_file_has_no_secret(f)
        if p.is_file():
            c.log_artifact(run_id, str(p), artifact_path=artifact_path)
        else:
            sub = f"{artifact_path}/{p.name}" if artifact_path else p.name
            c.log_artifacts(run_id, str(p), artifact_path=sub)
        logged.append(p.name)
    return logged


def ui_links(run_id: str, model: tuple[str, int] | None = None) -> dict[str, str]:
    """MLflow UI links for the run (and a model version) when tracking goes to a server, else {}."""
    import mlflow

    base = mlflow.get_tracking_uri().rstrip("/")
    if not base.startswith(("http://", "https://")):
        return {}
    experiment_id = client().get_run(run_id).info.experiment_id
    links = {"run": f"{base}/#/experiments/{experiment_id}/runs/{run_id}"}
    if model is not None:
        links["model_version"] = f"{base}/#/models/{model[0]}/versions/{model[1]}"
    return links


def git_revision(repo_dir: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the checkout (with "-dirty" if it has changes), None outside git."""
    cwd = Path(repo_dir) if repo_dir else Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{head}-dirty" if dirty else head


def quote_filter_value(value: str) -> str:
    """Escape a value for an MLflow search filter string literal."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
