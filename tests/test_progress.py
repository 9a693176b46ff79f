"""Progress lines (rmcore.progress): every N steps or every ~15 s, whichever comes first, with an ETA."""

from __future__ import annotations

import logging

from rmcore.progress import Progress, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_line_every_n_steps_or_every_15_seconds(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="rmcore.progress"):
        p = Progress("train", 100, every_steps=10, every_seconds=15.0, clock=clock)
        logged = []
        for step in range(1, 31):
            clock.now += 1.0 if step <= 20 else 20.0  # steps slow down after step 20
            logged.append(p.update(step, metrics={"loss": 0.693147}, rate=(1234.5, "real tok/s")))
    # steps 10 and 20 by count; from 21 on every step is 20 s later, so every step is logged
    assert [i + 1 for i, x in enumerate(logged) if x] == [10, 20, *range(21, 31)]
    first = caplog.records[0].getMessage()
    assert first == "train step 10/100 (10%) | loss 0.6931 | 1,234 real tok/s | elapsed 10s | ETA 1m30s"


def test_the_last_step_is_always_logged_and_says_done(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="rmcore.progress"):
        p = Progress("score", 7, unit="sequence", every_seconds=1e9, clock=clock)
        assert not p.update(3)
        clock.now += 7
        assert p.update(7)
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == "score sequence 7/7 (100%) | 1.00 sequences/s | elapsed 7s | done"


def test_resumed_work_measures_its_rate_from_the_resume_point(caplog):
    clock = Clock()
    with caplog.at_level(logging.INFO, logger="rmcore.progress"):
        p = Progress("train", 100, every_steps=10, start=50, clock=clock)
        clock.now += 20
        p.update(60)
    assert caplog.records[0].getMessage().endswith("0.50 steps/s | elapsed 20s | ETA 1m20s")


def test_durations():
    assert [format_duration(s) for s in (0, 59.4, 61, 3600 * 2 + 65)] == ["0s", "59s", "1m01s", "2h01m"]
    assert format_duration(float("nan")) == "?"


def test_with_a_bar_console_lines_go_above_it_and_handlers_come_back():
    """A bar redirects the console handlers in place when it starts (Prefect may have replaced
    the CLI's by then) and restores them when it closes."""
    import io
    import sys

    root = logging.getLogger()
    console = logging.StreamHandler(sys.stderr)
    before = list(root.handlers)
    root.addHandler(console)
    try:
        with Progress("train", 3, bar=True, clock=Clock()) as p:
            names = [type(h).__name__ for h in root.handlers]
            assert "_TqdmLoggingHandler" in names and console not in root.handlers
            p._bar.fp = io.StringIO()  # keep the test's output clean
        assert console in root.handlers and "_TqdmLoggingHandler" not in [type(h).__name__ for h in root.handlers]
    finally:
        root.removeHandler(console)
    assert root.handlers == before
