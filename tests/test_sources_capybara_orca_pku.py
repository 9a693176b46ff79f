"""Capybara (equal ratings), Orca (ties), PKU-SafeRLHF (safer response): hand-written hub rows."""

from __future__ import annotations

import pyarrow as pa
import pytest

from rmcore.data.sources import CleanOptions
from rmcore.data.sources.capybara import Capybara
from rmcore.data.sources.orca import Orca
from rmcore.data.sources.pku_saferlhf import PKU_SAFERLHF, PKU_SAFERLHF_30K


def _user(t: str) -> dict:
    return {"content": t, "role": "user"}


def _bot(t: str) -> dict:
    return {"content": t, "role": "assistant"}


def capy(chosen: list, rejected: list, rc: int | None, rr: int) -> dict:
    return {
        "source": "Dove", "prompt": chosen[0]["content"], "chosen": chosen, "rating_chosen": rc,
        "rejected": rejected, "rating_rejected": rr, "chosen_model": "gpt-4", "rejected_model": "mistral",
    }  # fmt: skip


def test_capybara_rules() -> None:
    q = _user("Q")
    rows = [
        capy([q, _bot("good")], [q, _bot("bad")], 5, 2),  # 0 kept
        capy([q, _bot("x")], [q, _bot("y")], 3, 3),  # 1 equal_scores
        capy([q, _bot("x")], [q, _bot("x")], 5, 1),  # 2 chosen_equals_rejected
        capy([q, _bot("x")], [q, _bot("y")], 2, 4),  # 3 chosen_rated_lower
        capy([q, _bot("x")], [_user("other"), _bot("y")], 5, 1),  # 4 quarantined prompt_mismatch
        capy([q, _bot("x")], [q, _bot("y"), _user("more?")], 5, 1),  # 5 quarantined not_ending_with_assistant
        capy([q, _bot("x")], [q, _bot("y")], None, 1),  # 6 quarantined missing_field
        capy(
            [q, _bot("a1"), _user("Q2"), _bot("good2")], [q, _bot("a1"), _user("Q2"), _bot("bad2")], 4, 1
        ),  # 7 kept
    ]
    result = Capybara().clean(pa.Table.from_pylist(rows), CleanOptions(), split="train")
    assert (result.rows_in, result.kept, result.quarantined) == (8, 2, 3)
    assert result.dropped == {"chosen_equals_rejected": 1, "equal_scores": 1, "chosen_rated_lower": 1}
    assert [r.split(":")[0] for r in result.quarantine["reason"].to_pylist()] == [
        "prompt_mismatch", "not_ending_with_assistant", "missing_field",
    ]  # fmt: skip
    multi = result.pairs.to_pylist()[1]
    assert [m["role"] for m in multi["prompt"]] == ["user", "assistant", "user"]
    assert (multi["chosen_score"], multi["rejected_score"]) == (4.0, 1.0)


def orca(
    chosen: str, rejected: str, status: str, rating: list | None, generations: list, score: float | None
) -> dict:
    return {
        "system": "Be brief.", "input": "Q", "chosen": chosen, "rejected": rejected, "generations": generations,
        "order": ["gpt4", "gpt35"], "labelling_model": "gpt-4", "labelling_prompt": [_user("rate")],
        "raw_labelling_response": "...", "rating": rating, "rationale": "...", "status": status,
        "original_chosen": chosen, "original_rejected": rejected, "chosen_score": score, "in_gsm8k_train": False,
    }  # fmt: skip


def test_orca_rules() -> None:
    rows = [
        orca("g", "b", "unchanged", [9.0, 6.0], ["g", "b"], 9.0),  # 0 kept 9 vs 6
        orca("g", "b", "tie", [7.0, 7.0], ["g", "b"], 7.0),  # 1 status_tie
        orca("g", "b", "swapped", [4.0, 8.0], ["b", "g"], 8.0),  # 2 kept 8 vs 4 (ratings follow generations)
        orca("g", "b", "unchanged", [7.0, 7.0], ["g", "b"], 7.0),  # 3 equal_scores
        orca("s", "s", "unchanged", [5.0, 6.0], ["s", "t"], 5.0),  # 4 chosen_equals_rejected
        orca("g", "b", "unchanged", [5.0], ["g", "b"], None),  # 5 quarantined: one rating for two answers
        orca("g", "b", "unchanged", [8.0, 5.0], ["other1", "other2"], 8.0),  # 6 kept via chosen_score 8 vs 5
        orca("g", "b", "unchanged", [3.0, 9.0], ["g", "b"], 3.0),  # 7 chosen_rated_lower
        # the hub's unrated rows: no rating, status tie -> the tie rule, not quarantine
        orca("g", "b", "tie", None, ["g", "b"], None),  # 8 status_tie
        orca("g", "b", "unchanged", None, ["g", "b"], None),  # 9 unrated_pair (no rating, not a tie)
    ]
    result = Orca().clean(pa.Table.from_pylist(rows), CleanOptions(), split="train")
    assert (result.rows_in, result.kept, result.quarantined) == (10, 3, 1)
    assert result.dropped == {
        "chosen_equals_rejected": 1,
        "status_tie": 2,
        "unrated_pair": 1,
        "equal_scores": 1,
        "chosen_rated_lower": 1,
    }
    assert result.quarantine["source_row"].to_pylist() == [5]
    scores = [(p["source_row"], p["chosen_score"], p["rejected_score"]) for p in result.pairs.to_pylist()]
    assert scores == [(0, 9.0, 6.0), (2, 8.0, 4.0), (6, 8.0, 5.0)]
    first = result.pairs.to_pylist()[0]
    assert first["prompt"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Q"}]


def test_orca_argilla_recommended_filter_is_an_option_counted_by_its_own_rule() -> None:
    """chosen_score >= 8 and not in_gsm8k_train, applied to rated non-tie pairs only; off by default."""
    rows = [
        orca("g", "b", "unchanged", [9.0, 6.0], ["g", "b"], 9.0),  # 0 passes (9 >= 8)
        orca("g", "b", "unchanged", [8.0, 5.0], ["g", "b"], 8.0),  # 1 passes (8 >= 8)
        orca("g", "b", "swapped", [4.0, 7.0], ["b", "g"], 7.0),  # 2 filtered: chosen_score 7
        {**orca("g", "b", "unchanged", [10.0, 2.0], ["g", "b"], 10.0), "in_gsm8k_train": True},  # 3 filtered: gsm8k
        orca("g", "b", "tie", [5.0, 5.0], ["g", "b"], 5.0),  # 4 status_tie (the tie rule comes first)
    ]
    table = pa.Table.from_pylist(rows)
    plain = Orca().clean(table, CleanOptions(), split="train")
    filtered = Orca().clean(table, CleanOptions(filter="argilla-recommended"), split="train")
    assert (plain.kept, filtered.kept) == (4, 2)
    assert filtered.dropped == {
        "chosen_equals_rejected": 0, "status_tie": 1, "unrated_pair": 0, "equal_scores": 0,
        "chosen_rated_lower": 0, "argilla_filter": 2,
    }  # fmt: skip
    assert [p["source_row"] for p in filtered.pairs.to_pylist()] == [0, 1]
    from rmcore.data.sources.base import check_options
    from rmcore.data.sources.catalog import get_adapter

    with pytest.raises(ValueError, match=r"'strict' is not a filter of source 'orca'; its filters: argilla-recommended"):
        check_options(get_adapter("orca"), CleanOptions(filter="strict"))
    with pytest.raises(ValueError, match=r"filter: source 'shp' does not use 'filter'"):
        check_options(get_adapter("shp"), CleanOptions(filter="argilla-recommended"))


def pku(r0: str, r1: str, safer: int | None) -> dict:
    return {
        "prompt": "How?", "response_0": r0, "response_1": r1, "prompt_source": "x", "response_0_source": "x",
        "response_1_source": "x", "is_response_0_safe": safer == 0, "is_response_1_safe": safer == 1,
        "better_response_id": 0, "safer_response_id": safer,
    }  # fmt: skip


def test_pku_chosen_is_the_safer_response() -> None:
    rows = [
        pku("unsafe", "safe", 1),
        pku("safe", "unsafe", 0),
        pku("same", "same", 0),
        pku("a", "b", 2),
        pku("a", "b", None),
    ]
    for adapter in (PKU_SAFERLHF, PKU_SAFERLHF_30K):
        result = adapter.clean(pa.Table.from_pylist(rows), CleanOptions(), split="train")
        assert (result.rows_in, result.kept, result.quarantined) == (5, 2, 2)
        assert result.dropped == {"chosen_equals_rejected": 1}
        assert [p["chosen"][-1]["content"] for p in result.pairs.to_pylist()] == ["safe", "safe"]
        assert [p["rejected"][-1]["content"] for p in result.pairs.to_pylist()] == ["unsafe", "unsafe"]
        assert set(result.pairs["source"].to_pylist()) == {adapter.name}
        assert [r.split(":")[0] for r in result.quarantine["reason"].to_pylist()] == [
            "bad_label",
            "missing_field",
        ]
