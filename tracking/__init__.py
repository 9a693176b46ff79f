"""MLflow adapters: the only code besides tasks/ and flows/ that imports MLflow.

Only tasks/ and flows/ import this package (a test checks it); rmcore never sees MLflow.

- ``store``: where the store is (``TrackingConfig``, URIs, the local SQLite store, experiments);
- ``runs``: one run per pipeline run; params, metrics and tags into it;
- ``lineage``: dataset inputs with digests and manifests, artifacts, UI links, git revision;
- ``secrets``: no secret value or secret-named key reaches MLflow;
- ``registry``: the pyfunc model, registered versions, the champion gate (``reward_pyfunc``);
- ``sinks``: training metrics into a run; ``orphan_runs``: runs of killed pipelines closed.

The names of store, runs, lineage and secrets are re-exported: ``tracking.log_params(...)``.
"""

from __future__ import annotations

from tracking.lineage import (
    git_revision,
    log_artifacts,
    log_dataset_input,
    run_inputs,
    ui_links,
)
from tracking.runs import (
    PIPELINE_RUN_TAG,
    end_pipeline_run,
    find_pipeline_run,
    flatten,
    log_metrics,
    log_params,
    log_tables,
    numeric_leaves,
    quote_filter_value,
    safe_key,
    set_tags,
    start_pipeline_run,
)
from tracking.secrets import (
    SECRET_KEY,
    SECRET_NAME,
    SecretLeakError,
    check_file_has_no_secret,
    is_secret,
    redact_mapping,
    secret_values,
)
from tracking.store import (
    DEFAULT_EXPERIMENT,
    TrackingConfig,
    client,
    configure,
    ensure_experiment,
    local_store_paths,
    resolve_tracking_uri,
    rmflow_home,
    sqlite_path,
)

__all__ = [
    "DEFAULT_EXPERIMENT",
    "PIPELINE_RUN_TAG",
    "SECRET_KEY",
    "SECRET_NAME",
    "SecretLeakError",
    "TrackingConfig",
    "check_file_has_no_secret",
    "client",
    "configure",
    "end_pipeline_run",
    "ensure_experiment",
    "find_pipeline_run",
    "flatten",
    "git_revision",
    "is_secret",
    "local_store_paths",
    "log_artifacts",
    "log_dataset_input",
    "log_metrics",
    "log_params",
    "log_tables",
    "numeric_leaves",
    "quote_filter_value",
    "redact_mapping",
    "resolve_tracking_uri",
    "rmflow_home",
    "run_inputs",
    "safe_key",
    "secret_values",
    "set_tags",
    "sqlite_path",
    "start_pipeline_run",
    "ui_links",
]
