"""Loading and checking RewardBench rows: errors that name the problem, reported exclusions."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from rmcore.evaluate.official import CORE_SUBSETS, ROW_COUNTS
from rmcore.evaluate.rewardbench_data import (
    RewardBenchDataError,
    check_rewardbench,
    conversations,
    count_mismatches,
    load_rewardbench,
    sample_per_subset,
)

REAL = "allenai/reward-bench/data/filtered-00000-of-00001.parquet"


def frame(rows: list[tuple[str, int, str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["subset", "id", "prompt", "chosen", "rejected"])


def test_unknown_subset_is_an_error_naming_it():
    df = frame(
        [("chat-typo", 1, "q", "a", "b"), ("chat-typo", 2, "q", "a", "b"), ("hep-go", 3, "q", "a", "b")]
    )
    with pytest.raises(RewardBenchDataError, match=r"rb\.parquet: unknown subset\(s\) chat-typo \(2 rows\)"):
        check_rewardbench(df, "rb.parquet")


def test_duplicate_key_is_an_error_but_same_id_in_two_subsets_is_not():
    ok = check_rewardbench(
        frame([("donotanswer", 3692, "q", "a", "b"), ("hep-python", 3692, "q", "a", "b")]), "f"
    )
    assert len(ok.frame) == 2
    dup = frame([("hep-go", 7, "q", "a", "b"), ("hep-go", 7, "q", "c", "d")])
    with pytest.raises(RewardBenchDataError, match=r"2 rows share a \(subset, id\) key.*'id': 7"):
        check_rewardbench(dup, "f")


def test_empty_texts_are_excluded_and_reported_row_by_row():
    df = frame(
        [
            ("hep-go", 1, "q", "a", "b"),
            ("hep-go", 2, "q", "   ", "b"),
            ("hep-js", 3, "", "a", "b"),
            ("hep-js", 4, "q", "a", None),
        ]
    )
    rows = check_rewardbench(df, "f")
    assert rows.frame["id"].tolist() == [1]
    assert rows.rows_in == 4
    assert sorted((e["id"], e["row"], e["reason"]) for e in rows.exclusions) == [
        (2, 1, "empty chosen"),
        (3, 2, "empty prompt"),
        (4, 3, "empty rejected"),
    ]


def test_missing_columns_and_bad_ids():
    with pytest.raises(RewardBenchDataError, match="missing column.*prompt.*BiasScope"):
        check_rewardbench(
            pd.DataFrame({"question": ["q"], "chosen": ["a"], "rejected": ["b"], "subset": ["x"], "id": [1]}),
            "f",
        )
    bad = frame([("hep-go", 1, "q", "a", "b")]).astype({"id": object})
    bad.loc[0, "id"] = "one"
    with pytest.raises(RewardBenchDataError, match="non-integer id"):
        check_rewardbench(bad, "f")


def test_hub_needs_a_pinned_revision(tmp_path):
    with pytest.raises(RewardBenchDataError, match="pinned revision"):
        load_rewardbench("allenai/reward-bench")
    with pytest.raises(RewardBenchDataError, match="no such file"):
        load_rewardbench(tmp_path / "absent.parquet")


def test_conversations_are_user_then_assistant():
    df = frame([("hep-go", 1, "Q?", "yes", "no")])
    assert conversations(df, "chosen") == [
        [{"role": "user", "content": "Q?"}, {"role": "assistant", "content": "yes"}]
    ]
    assert conversations(df, "rejected")[0][1]["content"] == "no"


def test_real_filtered_split_loads_complete(shared_data):
    rows = load_rewardbench(shared_data / REAL)
    assert len(rows.frame) == 2985 and rows.exclusions == []
    assert rows.frame["subset"].value_counts().to_dict() == ROW_COUNTS
    assert count_mismatches(rows.frame) == {}
    assert sorted(rows.frame.loc[rows.frame["id"] == 3692, "subset"]) == ["donotanswer", "hep-python"]
    # a hub-mirror directory resolves to the same file
    assert len(load_rewardbench(shared_data).frame) == 2985


def test_stratified_sample_is_fixed_per_subset_and_seeded(shared_data):
    rows = load_rewardbench(shared_data / REAL)
    a = sample_per_subset(rows, 3, seed=1)
    b = sample_per_subset(rows, 3, seed=1)
    c = sample_per_subset(rows, 3, seed=2)
    assert a.sample == {"per_subset": 3, "seed": 1, "rows": 69}
    assert a.frame["subset"].value_counts().to_dict() == {s: 3 for s in CORE_SUBSETS}
    assert a.frame["id"].tolist() == b.frame["id"].tolist()
    assert a.frame["id"].tolist() != c.frame["id"].tolist()
    assert a.frame["row"].is_monotonic_increasing  # file order kept


def test_jsonl_in_hub_schema(tmp_path):
    path = tmp_path / "rb.jsonl"
    path.write_text(
        "\n".join(
            json.dumps({"prompt": "q", "chosen": "a", "rejected": "b", "subset": "hep-go", "id": i})
            for i in (1, 2)
        )
    )
    rows = load_rewardbench(path)
    assert rows.frame["id"].tolist() == [1, 2] and rows.origin == str(path)
