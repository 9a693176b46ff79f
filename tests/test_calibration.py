"""Calibration table, ECE and the Wilson interval on values worked out by hand."""

from __future__ import annotations

import math

import pytest

from rmcore.evaluate.calibration import calibration_table, sigmoid
from rmcore.evaluate.intervals import wilson_interval


def test_calibration_by_hand():
    # margins and sigmoid(|m|): ln4 -> 0.8 (right), -ln4 -> 0.8 (wrong), ln9 -> 0.9 (right),
    # 0 -> 0.5 (a tie: half right), ln1.5 -> 0.6 (right).
    margins = [math.log(4), -math.log(4), math.log(9), 0.0, math.log(1.5)]
    table = calibration_table(margins, bins=2)  # bins [0.5, 0.75) and [0.75, 1]
    low, high = table["bins"]
    # low bin: confidences 0.5, 0.6 -> 0.55; accuracy (0.5 + 1) / 2 = 0.75
    assert (low["n"], low["confidence"], low["accuracy"]) == (2, pytest.approx(0.55), pytest.approx(0.75))
    # high bin: 0.8, 0.8, 0.9 -> 0.8333; accuracy 2/3
    assert (high["n"], high["confidence"], high["accuracy"]) == (
        3,
        pytest.approx(2.5 / 3),
        pytest.approx(2 / 3),
    )
    # ECE = 2/5 * |0.75 - 0.55| + 3/5 * |2/3 - 5/6| = 0.08 + 0.1 = 0.18
    assert table["ece"] == pytest.approx(0.18)
    assert table["accuracy"] == pytest.approx(3.5 / 5) and table["n"] == 5


def test_empty_bins_and_extremes():
    table = calibration_table([50.0, -50.0], bins=4)  # confidence 1.0 lands in the last bin
    assert [b["n"] for b in table["bins"]] == [0, 0, 0, 2]
    assert table["bins"][0]["accuracy"] is None
    assert table["ece"] == pytest.approx(0.5)  # confidence 1.0, accuracy 0.5
    assert sigmoid(-1000.0) == 0.0 and sigmoid(0.0) == 0.5
    with pytest.raises(ValueError):
        calibration_table([])


def test_wilson_interval_known_values():
    # 8 of 10: p = 0.8, z = 1.96; centre = (0.8 + z^2/20) / (1 + z^2/10) = 0.71674,
    # half = z * sqrt(0.016 + z^2/400) / (1 + z^2/10) = 0.22658  -> (0.4902, 0.9433)
    lo, hi = wilson_interval(8, 10)
    assert (lo, hi) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    # 0 of 10 stays inside [0, 1]: upper = (z^2/n) / (1 + z^2/n) = 0.38415 / 1.38415 = 0.2775
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-4)
    with pytest.raises(ValueError):
        wilson_interval(1, 0)
