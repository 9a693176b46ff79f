"""The length-bias report shown beside every accuracy (SPEC section 6).

Without it a user cannot tell a reward model from a length counter: a MiniLM reward
model scored 0.61 on hh-rlhf helpful-base where "the longer answer wins" scored 0.60.

Two numbers on the same pairs the model was scored on:

- ``length_rule_accuracy``: accuracy of the rule "the longer answer wins"; a pair whose
  answers have equal length counts as HALF right (the rule has no preference there, so
  its expected accuracy under a coin flip is 1/2). ``length_ties`` says how many.
- ``margin_length_spearman``: Spearman rank correlation between the reward margin
  (chosen - rejected) and the length difference (chosen - rejected). Near 1 means the
  margins are ordered like the length differences. None when either side is constant.

Length unit: whitespace-delimited words of the answer (the same unit as the dataset
stats table).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import spearmanr

LENGTH_UNIT = "words"
LENGTH_TIE_RULE = "half"


def answer_length(text: str) -> int:
    """Words in one answer (``str.split`` on whitespace)."""
    return len(text.split())


def length_rule_accuracy(len_chosen: np.ndarray, len_rejected: np.ndarray) -> tuple[float, int]:
    """(accuracy of "longer answer wins" with ties counted as half, number of ties)."""
    lc = np.asarray(len_chosen, dtype=np.float64)
    lr = np.asarray(len_rejected, dtype=np.float64)
    if len(lc) == 0:
        raise ValueError("length_rule_accuracy of zero pairs is undefined")
    wins = (lc > lr).sum()
    ties = int((lc == lr).sum())
    return float((wins + 0.5 * ties) / len(lc)), ties


def margin_length_spearman(margins: np.ndarray, length_diff: np.ndarray) -> float | None:
    """Spearman rho of reward margins vs length differences; None if either is constant."""
    m = np.asarray(margins, dtype=np.float64)
    d = np.asarray(length_diff, dtype=np.float64)
    if len(m) < 2 or np.all(m == m[0]) or np.all(d == d[0]):
        return None
    return float(spearmanr(m, d).statistic)


def length_bias_report(
    score_chosen: np.ndarray, score_rejected: np.ndarray, len_chosen: np.ndarray, len_rejected: np.ndarray
) -> dict:
    """The report for one set of pairs; keys documented in the module docstring."""
    lc = np.asarray(len_chosen, dtype=np.float64)
    lr = np.asarray(len_rejected, dtype=np.float64)
    acc, ties = length_rule_accuracy(lc, lr)
    margins = np.asarray(score_chosen, dtype=np.float64) - np.asarray(score_rejected, dtype=np.float64)
    return {
        "length_rule_accuracy": acc,
        "length_ties": ties,
        "length_tie_rule": LENGTH_TIE_RULE,
        "chosen_longer_fraction": float((lc > lr).mean()),
        "margin_length_spearman": margin_length_spearman(margins, lc - lr),
        "length_unit": LENGTH_UNIT,
    }
