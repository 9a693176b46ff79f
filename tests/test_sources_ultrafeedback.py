"""UltraFeedback: mean fine-grained rating, best-vs-random / all pairs, accounting per candidate."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from rmcore.data.pairing import pair_id
from rmcore.data.sources import CleanOptions
from rmcore.data.sources.ultrafeedback import UltraFeedback


def completion(response: str, ratings: tuple[str, str, str, str]) -> dict:
    """One completion with the hub's nesting: annotations.<aspect>.{Rating, Rationale, ...}."""
    inf, hon, tru, hlp = ratings
    return {
        "annotations": {
            "instruction_following": {"Rating": inf, "Rationale": "r"},
            "honesty": {"Rating": hon, "Rationale": "r"},
            "truthfulness": {"Type": ["0"], "Rationale": "r", "Rating": tru, "Rationale For Rating": "r"},
            "helpfulness": {"Type": ["1"], "Rationale": "r", "Rating": hlp, "Rationale For Rating": "r"},
        },
        "critique": "c", "custom_system_prompt": "s", "fine-grained_score": 1.0, "model": "m",
        "overall_score": 1.0, "principle": "helpfulness", "response": response,
    }  # fmt: skip


def uf_row(instruction: str | None, completions: list[dict]) -> dict:
    return {
        "source": "evol_instruct", "instruction": instruction, "models": ["m"] * len(completions),
        "completions": completions, "correct_answers": ["None"], "incorrect_answers": ["None"],
    }  # fmt: skip


FIVE, THREE, ONE = ("5",) * 4, ("3", "3", "N/A", "3"), ("1",) * 4
ROWS = [
    # 0: scores 5, 3 (N/A skipped), 5, 1 -> 6 candidates: (0,2) equal, the other 5 ordered pairs
    uf_row(
        "Q0", [completion("a", FIVE), completion("b", THREE), completion("c", FIVE), completion("d", ONE)]
    ),
    # 1: one completion -> one unit, fewer_than_two_completions
    uf_row("Q1", [completion("only", FIVE)]),
    # 2: all-N/A (unrated), 4, and a copy of the 4's text rated 2 -> 2 unrated + 1 same-text candidate
    uf_row("Q2", [completion("x", ("N/A",) * 4), completion("y", ("4",) * 4), completion("y", ("2",) * 4)]),
    # 3: a rating that is not a number -> quarantined
    uf_row("Q3", [completion("p", ("five", "5", "5", "5")), completion("q", ONE)]),
    # 4: no instruction -> quarantined
    uf_row(None, [completion("p", FIVE), completion("q", ONE)]),
]


def test_all_pairs_counts_worked_by_hand() -> None:
    result = UltraFeedback().clean(
        pa.Table.from_pylist(ROWS), CleanOptions(pairing="all-pairs"), split="train"
    )
    assert (result.rows_in, result.raw_rows, result.unit) == (6 + 1 + 3 + 1 + 1, 5, "candidate")
    assert result.kept == 5
    assert result.dropped == {
        "fewer_than_two_completions": 1, "unrated_response": 2, "chosen_equals_rejected": 1,
        "equal_scores": 1, "not_best_vs_random": 0,
    }  # fmt: skip
    assert result.quarantine["source_row"].to_pylist() == [3, 4]
    assert [r.split(":")[0] for r in result.quarantine["reason"].to_pylist()] == [
        "bad_rating",
        "missing_field",
    ]
    got = {
        (p["chosen"][-1]["content"], p["rejected"][-1]["content"]): (p["chosen_score"], p["rejected_score"])
        for p in result.pairs.to_pylist()
    }
    assert got == {
        ("a", "b"): (5, 3),
        ("a", "d"): (5, 1),
        ("c", "b"): (5, 3),
        ("b", "d"): (3, 1),
        ("c", "d"): (5, 1),
    }
    for p in result.pairs.to_pylist():
        assert p["pair_id"] == pair_id("ultrafeedback", p["chosen"], p["rejected"])
        assert p["prompt"] == [{"role": "user", "content": "Q0"}] and p["source_row"] == 0


def test_best_vs_random_uses_one_seeded_draw_per_row() -> None:
    for seed in (11, 12, 13):
        result = UltraFeedback().clean(
            pa.Table.from_pylist(ROWS), CleanOptions(pairing="best-vs-random", seed=seed), split="train"
        )
        # Row 0: a 5, b 3, c 5, d 1. Best = "a" (the first 5); the rejected is drawn among the
        # strictly lower b, d (c ties with a: never drawn), k = floor(u0 * 2): one pair, every seed.
        k = int(np.random.default_rng(seed).random(5)[0] * 2)
        (p,) = result.pairs.to_pylist()
        assert (p["chosen"][-1]["content"], p["rejected"][-1]["content"]) == ("a", "bd"[k])
        assert result.dropped == {
            "fewer_than_two_completions": 1, "unrated_response": 2,
            "chosen_equals_rejected": 1,  # row 2: best "y", its only lower completion copies it
            "all_scores_equal": 0, "not_best_vs_random": 5,
        }  # fmt: skip
        assert result.rows_in == 12 and result.quarantined == 2
def test_per_prompt_cap_counts_what_it_removes() -> None:
    result = UltraFeedback().clean(
        pa.Table.from_pylist(ROWS), CleanOptions(pairing="all-pairs", per_prompt=2), split="train"
    )
    assert result.kept == 2 and result.dropped["per_prompt_cap"] == 3
    result.check_accounting()
