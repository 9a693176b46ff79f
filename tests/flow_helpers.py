"""Helpers for flow tests: which tasks of a flow run really ran, read from the Prefect API."""

from __future__ import annotations

import time
from collections import Counter

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, TaskRunFilter
from prefect.states import State


def task_states(state: State, *, settle_seconds: float = 20.0) -> dict[str, str]:
    """Task run name -> final state name ("Completed" ran, "Cached" served from cache).

    Task states reach the API asynchronously: read until two reads agree and none is
    still pending or running.
    """
    flow_run_id = state.state_details.flow_run_id
    deadline, previous = time.monotonic() + settle_seconds, None
    with get_client(sync_client=True) as client:
        while True:
            runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])),
                task_run_filter=TaskRunFilter(),
            )
            current = {r.name: r.state.name for r in runs if r.state is not None}
            settled = not any(s in {"Running", "Pending", "Scheduled"} for s in current.values())
            if (settled and current == previous) or time.monotonic() > deadline:
                return current
            previous = current
            time.sleep(0.5)


def ran(state: State) -> set[str]:
    """Names of the tasks that did real work in this flow run (not served from cache)."""
    return {name for name, s in task_states(state).items() if s == "Completed"}


def state_counts(state: State) -> Counter:
    return Counter(task_states(state).values())
