"""One MLflow run per pipeline run, and what is logged into it: params, metrics, tags.

Every helper takes an explicit ``run_id`` and talks through ``MlflowClient``, so stages
running in Prefect worker threads never depend on MLflow's thread-local "active run".
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping
from typing import Any

from tracking.lineage import ui_links
from tracking.orphan_runs import close_orphaned_runs, owner_tags
from tracking.secrets import redact_mapping
from tracking.store import TrackingConfig, client, configure, ensure_experiment

log = logging.getLogger(__name__)

PIPELINE_RUN_TAG = "rmflow.pipeline_run_id"
_MAX_PARAM_LEN = 6000


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
    (``tracking.orphan_runs``: runs of pipelines killed on this host are closed as KILLED here).
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


def log_tables(run_id: str, tables: Mapping[str, Mapping[str, list]]) -> list[str]:
    """Log each table (columns -> values) as an MLflow table artifact at its file name."""
    c = client()
    for artifact_file, columns in tables.items():
        c.log_table(run_id, data=dict(columns), artifact_file=artifact_file)
    return list(tables)


def set_tags(run_id: str, tags: Mapping[str, Any]) -> dict[str, str]:
    """Set run tags (secret-filtered); returns what was set."""
    kept = redact_mapping({k: str(v) for k, v in tags.items()}, what="tag")
    c = client()
    for key, value in kept.items():
        c.set_tag(run_id, key, value)
    return kept


def quote_filter_value(value: str) -> str:
    """Escape a value for an MLflow search filter string literal."""
    return value.replace("\\", "\\\\").replace("'", "\\'")
