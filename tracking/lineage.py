"""Lineage in MLflow: the datasets a run used (with digests and manifests), artifacts, UI links,
the git revision."""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tracking.secrets import check_file_has_no_secret, redact_mapping
from tracking.store import client

log = logging.getLogger(__name__)


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


UI_VIEW = "?workflowType=machine_learning"
"""Query of every MLflow UI link rmflow gives: MLflow 3.x opens in its GenAI view unless told
(the GenAI / Model training switch is per browser; this opens the model-training one)."""


def ui_links(run_id: str, model: tuple[str, int] | None = None) -> dict[str, str]:
    """MLflow UI links for the run (and a model version) when tracking goes to a server, else {}."""
    import mlflow

    base = mlflow.get_tracking_uri().rstrip("/")
    if not base.startswith(("http://", "https://")):
        return {}
    experiment_id = client().get_run(run_id).info.experiment_id
    links = {"run": f"{base}/#/experiments/{experiment_id}/runs/{run_id}{UI_VIEW}"}
    if model is not None:
        links["model_version"] = f"{base}/#/models/{model[0]}/versions/{model[1]}{UI_VIEW}"
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


