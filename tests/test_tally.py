"""The pipeline's "n recomputed, m cached" line, for each way a rerun can go."""

from __future__ import annotations

from flows.tally import StageTally


def _tally(**states: str) -> StageTally:
    tally = StageTally()
    for name, state in states.items():
        tally.record(name, state)
    return tally


def test_no_op_rerun_says_the_mixture_is_unchanged_and_training_reused() -> None:
    tally = _tally(clean="Cached", mixture="Cached", train="Cached", evaluate="Cached", register="Completed")
    assert tally.line(mixture_digest="0123456789abcdef") == (
        "1 recomputed, 4 cached; mixture digest 0123456789ab unchanged, training reused")
    assert tally.recomputed == ["register"] and tally.cached == ["clean", "mixture", "train", "evaluate"]


def test_an_edit_outside_the_sample_rebuilds_the_mixture_but_says_why_nothing_retrained() -> None:
    tally = _tally(clean="Completed", mixture="Completed", train="Cached", register="Completed")
    assert tally.line(mixture_digest="abc") == (
        "3 recomputed, 1 cached; mixture rebuilt with the same digest abc, training reused")


def test_a_changed_mixture_trains() -> None:
    tally = _tally(mixture="Completed", train="Completed")
    assert tally.line(mixture_digest="feed") == "2 recomputed, 0 cached; mixture digest feed, model trained"
    assert _tally(evaluate="Cached").line() == "0 recomputed, 1 cached"  # a stage flow without training
