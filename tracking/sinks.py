"""An MLflow ``MetricsSink`` for rmcore's training loop (rmcore stays MLflow-free).

``rmcore.train`` reports metrics through ``MetricsSink.log_metrics(metrics, step)``; this
sink buffers them and writes them to one MLflow run in batches (one DB round trip per
``flush_every`` calls, or sooner once ``flush_seconds`` have passed since the last write, so
the curves grow in the MLflow UI while a long run trains). rmcore's keys already say where they come
from ("train/loss", "eval/accuracy"); ``prefix`` is prepended if given.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping

log = logging.getLogger(__name__)


class MlflowMetricsSink:
    """Writes training metrics to MLflow run ``run_id`` (keys as given, after ``prefix``).

    Use as a context manager, or call ``flush()`` at the end: buffered metrics are written
    every ``flush_every`` calls or ``flush_seconds`` seconds, whichever comes first.
    Non-numeric values are refused (a bug in the caller).
    """

    def __init__(
        self, run_id: str, *, prefix: str = "", flush_every: int = 10, flush_seconds: float = 30.0
    ) -> None:
        from mlflow import MlflowClient

        if flush_every < 1:
            raise ValueError(f"flush_every must be >= 1, got {flush_every}")
        self.run_id = run_id
        self.prefix = prefix
        self.flush_every = flush_every
        self.flush_seconds = flush_seconds
        self._last_flush = time.monotonic()
        self._client = MlflowClient()
        self._buffer: list = []
        self._calls = 0

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for key, value in metrics.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"metric {key!r} at step {step}: expected a number, got {value!r}")
            if not math.isfinite(value):
                log.warning("metric %s is %s at step %d", key, value, step)
            self._buffer.append(Metric(f"{self.prefix}{key}", float(value), now, int(step)))
        self._calls += 1
        if self._calls % self.flush_every == 0 or time.monotonic() - self._last_flush >= self.flush_seconds:
            self.flush()

    def flush(self) -> None:
        """Write buffered metrics (MLflow takes at most 1000 per batch)."""
        self._last_flush = time.monotonic()
        while self._buffer:
            batch, self._buffer = self._buffer[:1000], self._buffer[1000:]
            self._client.log_batch(self.run_id, metrics=batch)

    def __enter__(self):  # -> Self (py3.11+)
        return self

    def __exit__(self, *exc) -> None:
        self.flush()
