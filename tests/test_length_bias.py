"""The length-bias report: the length-only rule and the margin/length rank correlation."""

from __future__ import annotations

import numpy as np
import pytest

from rmcore.evaluate.length_bias import (
    answer_length,
    length_bias_report,
    length_rule_accuracy,
    margin_length_spearman,
)


def test_length_rule_counts_ties_as_half():
    # chosen longer in pairs 0 and 3, a tie in pair 1, shorter in pair 2 -> (2 + 0.5) / 4
    acc, ties = length_rule_accuracy(np.array([5, 3, 4, 2]), np.array([3, 3, 6, 1]))
    assert (acc, ties) == (0.625, 1)


def test_spearman_by_hand():
    # margins ranks 1 2 3 4; length diffs [2, 0, -2, 1] ranks 4 2 1 3;
    # rank differences -3 0 2 1, squares sum 14 -> rho = 1 - 6 * 14 / (4 * 15) = -0.4
    assert margin_length_spearman(np.array([1.0, 2, 3, 4]), np.array([2, 0, -2, 1])) == pytest.approx(-0.4)
    assert margin_length_spearman(np.array([1.0, 1, 1]), np.array([1, 2, 3])) is None  # constant margins


def test_report_on_a_length_counter():
    # a "model" whose reward is the answer length: the rule and the model agree, rho = 1
    lc, lr = np.array([10, 2, 7, 3]), np.array([4, 5, 7, 1])
    report = length_bias_report(lc.astype(float), lr.astype(float), lc, lr)
    assert report["length_rule_accuracy"] == pytest.approx((2 + 0.5) / 4)
    assert report["margin_length_spearman"] == pytest.approx(1.0)
    assert report["chosen_longer_fraction"] == 0.5
    assert report["length_unit"] == "words" and report["length_tie_rule"] == "half"


def test_answer_length_is_words():
    assert answer_length("Hello,  world!\nTwo lines") == 4
    assert answer_length("") == 0
