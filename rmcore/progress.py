"""Progress a person can see: step/total, rate, ETA and a few metrics, as log lines (+ a bar).

Long work (training, scoring) reports through one ``Progress``: a log line every
``every_steps`` steps or every ``every_seconds`` seconds, whichever comes first, and at the
end. The lines go to the ``rmcore`` loggers, so they reach the console and, inside a Prefect
run, the flow-run logs (``PREFECT_LOGGING_EXTRA_LOGGERS=rmcore``) whatever the metrics sink.
With ``bar=True`` (the CLI on a terminal) a tqdm bar is drawn on stderr as well and the log
lines are printed above it (tqdm.contrib.logging redirects the console handlers while a bar is drawn).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

_bar_wanted = False


def set_progress_bar(enabled: bool) -> None:
    """Draw tqdm bars for long work in this process (the CLI sets it when stderr is a TTY)."""
    global _bar_wanted
    _bar_wanted = enabled


def format_duration(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Progress:
    """Reports ``done/total`` of a piece of work named ``what`` (``unit``: step, row, ...).

    ``update(done, metrics=..., rate=...)``: ``rate`` is a (value, unit) pair such as real
    tokens/s; without it the rate is ``unit``/s since ``start`` (or the first update after a
    resume). ``clock`` is injectable (tests).
    """

    def __init__(
        self,
        what: str,
        total: int,
        *,
        unit: str = "step",
        every_steps: int = 0,
        every_seconds: float = 15.0,
        logger: logging.Logger | None = None,
        start: int = 0,
        bar: bool | None = None,
        clock=time.monotonic,
    ) -> None:
        self.what, self.total, self.unit = what, max(int(total), 0), unit
        self.every_steps, self.every_seconds = every_steps, every_seconds
        self.log = logger or log
        self.clock = clock
        self.t0 = self.last_time = clock()
        self.start = self.last_done = start
        self.lines = 0
        self._bar = None
        self._redirect: contextlib.AbstractContextManager | None = None
        if (_bar_wanted if bar is None else bar) and self.total:
            from tqdm.auto import tqdm
            from tqdm.contrib.logging import logging_redirect_tqdm

            # console log lines go above the bar while it is drawn (the handlers in place now:
            # Prefect may have configured logging after the CLI started)
            self._redirect = logging_redirect_tqdm()
            self._redirect.__enter__()
            self._bar = tqdm(total=self.total, initial=start, desc=what, unit=unit, leave=False)

    def update(
        self,
        done: int,
        *,
        metrics: Mapping[str, float] | None = None,
        rate: tuple[float, str] | None = None,
        force: bool = False,
    ) -> bool:
        """Record that ``done`` units are finished; log a line when one is due. True if logged."""
        now = self.clock()
        if self._bar is not None:
            self._bar.update(done - self._bar.n)
            if metrics:
                self._bar.set_postfix({k: _short(v) for k, v in metrics.items()}, refresh=False)
        due = (
            force
            or done >= self.total
            or (self.every_steps and done - self.last_done >= self.every_steps)
            or now - self.last_time >= self.every_seconds
        )
        if not due or done == self.last_done and self.lines:
            return False
        self.log.info("%s", self.line(done, now, metrics, rate))
        self.last_time, self.last_done, self.lines = now, done, self.lines + 1
        return True

    def line(
        self, done: int, now: float, metrics: Mapping[str, float] | None, rate: tuple[float, str] | None
    ) -> str:
        elapsed = now - self.t0
        per_s = (done - self.start) / elapsed if elapsed > 0 else 0.0
        left = (self.total - done) / per_s if per_s > 0 else float("nan")
        pct = 100.0 * done / self.total if self.total else 100.0
        parts = [f"{self.what} {self.unit} {done}/{self.total} ({pct:.0f}%)"]
        parts += [f"{k} {_short(v)}" for k, v in (metrics or {}).items()]
        if rate is not None:
            parts.append(f"{rate[0]:,.0f} {rate[1]}")
        else:
            parts.append(f"{per_s:,.2f} {self.unit}s/s")
        parts.append(f"elapsed {format_duration(elapsed)}")
        parts.append("done" if done >= self.total else f"ETA {format_duration(left)}")
        return " | ".join(parts)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        if self._redirect is not None:
            self._redirect.__exit__(None, None, None)
            self._redirect = None

    def __enter__(self):  # -> Self (py3.11+)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)
