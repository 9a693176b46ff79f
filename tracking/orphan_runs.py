"""Close the MLflow runs of pipelines whose process died (kill -9, OOM, power loss).

A pipeline's MLflow run is marked FINISHED or FAILED when the flow ends; a killed process
never gets there and its run would show RUNNING forever. Each pipeline run records the pid
and a host digest of the process that (re)started it (``owner_tags``); when a later pipeline
starts, runs still RUNNING that belong to this host and to a process that no longer exists
are marked KILLED. A live concurrent pipeline's run is never touched, nor a run from another
machine (its pids mean nothing here).
"""

from __future__ import annotations

import logging
import os

from rmcore.liveness import HOST_DIGEST, process_gone

log = logging.getLogger(__name__)

PID_TAG = "rmflow.pid"
HOST_TAG = "rmflow.host"


def owner_tags() -> dict[str, str]:
    """The tags naming this process as the one running the pipeline."""
    return {PID_TAG: str(os.getpid()), HOST_TAG: HOST_DIGEST}


def close_orphaned_runs(client, experiment_id: str) -> list[str]:
    """Mark KILLED the RUNNING pipeline runs of this host whose process is gone; return their ids."""
    runs = client.search_runs(
        [experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{HOST_DIGEST}'",
        max_results=1000,
    )
    closed = []
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if pid.isdigit() and process_gone(int(pid)):  # this process's own runs are alive
            client.set_terminated(run.info.run_id, status="KILLED")
            log.warning(
                "MLflow run %s was left RUNNING by a pipeline process that no longer exists (pid %s): "
                "marked KILLED",
                run.info.run_id,
                pid,
            )
            closed.append(run.info.run_id)
    return closed
