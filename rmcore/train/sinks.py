"""Where training metrics go: the ``MetricsSink`` protocol and two plain sinks.

The task layer adds an MLflow sink (tracking/sinks.py); rmcore stays MLflow-free.
"""

from __future__ import annotations

import logging
from typing import Protocol

log = logging.getLogger(__name__)


class MetricsSink(Protocol):
    """Where metrics go (the task layer sends them to MLflow)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


class LoggingSink:
    """Metrics as log lines."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        log.info("step %d: %s", step, " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))


class ListSink:
    """Metrics kept in memory as (step, metrics) tuples (tests)."""

    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.records.append((step, dict(metrics)))

    def series(self, key: str) -> list[float]:
        return [m[key] for _, m in self.records if key in m]
