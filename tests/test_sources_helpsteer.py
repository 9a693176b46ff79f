"""HelpSteer: group responses by prompt, score = mean(helpfulness, correctness), pair."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa

from rmcore.data.sources import CleanOptions
from rmcore.data.sources.helpsteer import HelpSteer


def hs(prompt: str, response: str, helpfulness: float | None, correctness: float) -> dict:
    return {
        "prompt": prompt, "response": response, "helpfulness": helpfulness, "correctness": correctness,
        "coherence": 4.0, "complexity": 2.0, "verbosity": 2.0,
    }  # fmt: skip


ROWS = [
    hs("P1", "A", 4, 4),  # 0  P1 score 4
    hs("P3", "same", 3, 3),  # 1  P3 score 3
    hs("P1", "B", 2, 2),  # 2  P1 score 2
    hs("P2", "alone", 3, 3),  # 3  P2: single response
    hs("P1", "C", 4, 2),  # 4  P1 score 3
    hs("P3", "same", 1, 1),  # 5  P3 score 1, same text as row 1
    hs("P1", "D", 1, 3),  # 6  P1 score 2
    hs("P3", "E", None, 3),  # 7  quarantined: missing helpfulness
    hs("P1", "F", 3, math.nan),  # 8  quarantined: NaN correctness
]
# P1 candidates (6): A>B, A>C, A>D, C>B, C>D kept; B vs D equal (2 = 2).


def test_all_pairs_counts_worked_by_hand() -> None:
    result = HelpSteer().clean(pa.Table.from_pylist(ROWS), CleanOptions(pairing="all-pairs"), split="train")
    assert (result.rows_in, result.raw_rows) == (6 + 1 + 1 + 2, 9)
    assert result.kept == 5
    assert result.dropped == {
        "single_response_prompt": 1,
        "chosen_equals_rejected": 1,
        "equal_scores": 1,
        "not_best_vs_random": 0,
    }
    assert result.quarantine["source_row"].to_pylist() == [7, 8]
    pairs = {(p["chosen"][-1]["content"], p["rejected"][-1]["content"]): p for p in result.pairs.to_pylist()}
    assert set(pairs) == {("A", "B"), ("A", "C"), ("A", "D"), ("C", "B"), ("C", "D")}
    assert (pairs[("C", "B")]["chosen_score"], pairs[("C", "B")]["rejected_score"]) == (3.0, 2.0)
    assert pairs[("C", "B")]["source_row"] == 4  # the chosen response's row


def test_best_vs_random() -> None:
    seed = 4
    result = HelpSteer().clean(pa.Table.from_pylist(ROWS), CleanOptions(seed=seed), split="train")
    # groups in order of first appearance: P1, P3, P2; P1's best is A, the other the k-th of B, C, D
    k = int(np.random.default_rng(seed).random(3)[0] * 3)
    (p,) = result.pairs.to_pylist()
    assert (p["chosen"][-1]["content"], p["rejected"][-1]["content"]) == ("A", "BCD"[k])
    assert result.dropped == {
        "single_response_prompt": 1,
        "chosen_equals_rejected": 1,  # P3: its only lower response copies the best's text
        "all_scores_equal": 0,
        "not_best_vs_random": 5,
    }
    assert result.rows_in == 10 and result.quarantined == 2
