"""RewardBench 2 scoring against values worked out by hand (the official code's arithmetic).

Rows are written in the published schema (``allenai/reward-bench-2``, split ``test``):
id, prompt, chosen: list[str], rejected: list[str], num_correct, num_incorrect,
total_completions, models, subset, additional_metadata. Rewards are given per row, the
chosen completions first, as the official code unrolls them.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmcore.evaluate.rewardbench2 import (
    HUB_ID,
    SUBSETS,
    TIES_WEIGHTS,
    RewardBench2DataError,
    best_of_n_result,
    check_rewardbench2,
    evaluate_rewardbench2,
    flatten_completions,
    load_rewardbench2,
    rewardbench2_markdown,
    score_rewardbench2,
    summarize_rewardbench2,
    ties_score,
)


def row(row_id: str, subset: str, chosen: list[str], rejected: list[str], prompt: str = "q") -> dict:
    return {
        "id": row_id,
        "prompt": prompt,
        "chosen": chosen,
        "rejected": rejected,
        "num_correct": len(chosen),
        "num_incorrect": len(rejected),
        "total_completions": len(chosen) + len(rejected),
        "models": ["m"] * (len(chosen) + len(rejected)),
        "subset": subset,
        "additional_metadata": {"category": None},
    }


def best_of_4(row_id: str, subset: str) -> dict:
    return row(row_id, subset, ["good"], ["bad 1", "bad 2", "bad 3"])


def rows_of(records: list[dict], origin: str = "rb2.parquet"):
    return check_rewardbench2(pd.DataFrame(records), origin)


# ------------------------------------------------------------------ best-of-4 per row


@pytest.mark.parametrize(
    ("rewards", "expected"),
    [
        ([3.0, 1.0, 2.0, 0.0], 1.0),  # correct (position 0) alone at the top: won outright
        ([1.0, 3.0, 2.0, 0.0], 0.0),  # an incorrect completion on top: lost
        ([3.0, 3.0, 1.0, 0.0], 0.5),  # 2-way tie at the max incl. the correct one: 1/2 (argmax would say 1)
        ([2.0, 2.0, 2.0, 1.0], 1 / 3),  # 3-way tie at the max: 1/3
        ([5.0, 5.0, 5.0, 5.0], 0.25),  # all four equal: 1/4
        ([1.0, 2.0, 2.0, 0.0], 0.0),  # two incorrect tie at the top, correct below: 0
    ],
)
def test_best_of_4_row(rewards, expected):
    assert best_of_n_result(rewards) == pytest.approx(expected, abs=1e-15)


def test_flattening_puts_chosen_before_rejected_and_marks_the_correct_ones():
    rows = rows_of(
        [
            row("1", "Math", ["c"], ["r1", "r2", "r3"], prompt="p1"),
            row("tied:1", "Ties", ["c1", "c2"], ["r1"], prompt="p2"),
        ]
    )
    flat = flatten_completions(rows)
    assert flat.pairs() == [
        ("p1", "c"),
        ("p1", "r1"),
        ("p1", "r2"),
        ("p1", "r3"),
        ("p2", "c1"),
        ("p2", "c2"),
        ("p2", "r1"),
    ]
    assert flat.correct.tolist() == [True, False, False, False, True, True, False]
    assert flat.offsets.tolist() == [0, 4, 7]
    assert [r.tolist() for r in flat.split(range(7))] == [[0, 1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match="7 completions"):
        flat.split(range(6))


# ------------------------------------------------------------------ the Ties subset

# Hand-made Ties rows: (id, rewards with the correct ones first, num_correct)
TIES_ROWS = [
    ("ref:1", [5.0, 2.0, 3.0], 1),
    ("tied:1", [6.0, 5.0, 4.0, 1.0, 2.0], 3),
    ("ref:2", [3.0, 4.0, 0.0], 1),
    ("tied:2", [9.0, 8.5, 5.0, 1.0], 2),
    ("tied:3", [2.0, 2.0, 3.0], 2),  # no ref:3: counts for tied accuracy only
    ("ref:4", [1.0, 0.0], 1),  # no tied:4: counts for ref accuracy only
]
# Per prompt: gap = min(correct) - max(incorrect), accurate = gap > 0, spread = max - min correct.
#   ref:1   gap = 5 - 3   =  2    accurate
#   tied:1  gap = 4 - 2   =  2    accurate   spread = 6 - 4   = 2
#   ref:2   gap = 3 - 4   = -1    wrong
#   tied:2  gap = 8.5 - 5 =  3.5  accurate   spread = 9 - 8.5 = 0.5
#   tied:3  gap = 2 - 3   = -1    wrong
#   ref:4   gap = 1 - 0   =  1    accurate
# ref_accuracy  = (1 + 0 + 1) / 3 = 2/3;   tied_accuracy = (1 + 1 + 0) / 3 = 2/3
# Paired prompts 1 and 2 (ref:k and tied:k both present):
#   k=1: preferred 2 > 2 no;    hard min(2, 2) = 2 > 2 no;       margin tanh(2 / 2 - 1)   = tanh(0)  = 0
#   k=2: preferred 3.5 > 0.5 yes; hard min(-1, 3.5) = -1 > 0.5 no; margin tanh(-1 / 0.5 - 1) = tanh(-3)
# correctness_preferred = 1/2, correctness_preferred_hard = 0, margin = tanh(-3) / 2 = -0.497527...
# Ties = 0.30 * 2/3 + 0.30 * 2/3 + 0.20 * 1/2 + 0.20 * 0 + 0.01 * tanh(-3) / 2
#      = 0.2 + 0.2 + 0.1 + 0 - 0.0049752737...  = 0.4950247262...
TIES_EXPECTED = 0.2 + 0.2 + 0.1 + 0.01 * math.tanh(-3) / 2


def test_ties_formula_on_a_hand_made_group():
    ids, rewards, num_correct = zip(*TIES_ROWS)
    out = ties_score(ids, rewards, num_correct)
    assert out["ref_accuracy"] == pytest.approx(2 / 3)
    assert out["tied_accuracy"] == pytest.approx(2 / 3)
    assert out["correctness_preferred"] == 0.5
    assert out["correctness_preferred_hard"] == 0.0
    assert out["correctness_margin_score"] == pytest.approx(math.tanh(-3) / 2)
    assert out["score"] == pytest.approx(TIES_EXPECTED, abs=1e-12)
    assert out["score"] == pytest.approx(0.49502472623156635, abs=1e-12)
    assert (out["n_ref"], out["n_tied"], out["n_pairs"]) == (3, 3, 2)
    assert TIES_WEIGHTS == {
        "tied_accuracy": 0.30,
        "ref_accuracy": 0.30,
        "correctness_preferred": 0.20,
        "correctness_preferred_hard": 0.20,
        "correctness_margin_score": 0.01,
    }


def test_ties_margin_at_zero_spread_follows_the_official_division():
    # tied:1 correct [2, 2] -> spread 0, gap 2 - 1 = 1; ref:1 gap 3 - 1 = 2; min(2, 1) = 1
    # 1 / 0 = inf -> tanh(inf) = 1; preferred 1 > 0 and hard 1 > 0; both accurate
    # Ties = 0.30 + 0.30 + 0.20 + 0.20 + 0.01 * 1 = 1.01 (the official weights sum to 1.01)
    perfect = ties_score(["ref:1", "tied:1"], [[3.0, 1.0], [2.0, 2.0, 1.0]], [1, 2])
    assert perfect["correctness_margin_score"] == 1.0
    assert perfect["score"] == pytest.approx(1.01)
    # tied:1 correct [1, 1], incorrect [1] -> spread 0, gap 0: 0 / 0 = NaN -> 0; not accurate
    # ref accurate (gap 2): Ties = 0.30 * 0 + 0.30 * 1 + 0.20 * (0 > 0) + 0.20 * 0 + 0.01 * 0 = 0.30
    flat = ties_score(["ref:1", "tied:1"], [[3.0, 1.0], [1.0, 1.0, 1.0]], [1, 2])
    assert flat["correctness_margin_score"] == 0.0
    assert flat["score"] == pytest.approx(0.30)


def test_ties_without_a_ref_tied_pair_is_an_error_not_nan():
    with pytest.raises(ValueError, match="no prompt has both"):
        ties_score(["ref:1", "tied:2"], [[3.0, 1.0], [2.0, 1.5, 1.0]], [1, 2])


# ------------------------------------------------------------------ summary and overall


def test_overall_is_the_unweighted_mean_of_the_six_subsets():
    plan = {  # subset -> rewards per best-of-4 row, correct first
        "Factuality": [[3, 1, 2, 0], [1, 3, 2, 0]],  # 1, 0           -> 50
        "Precise IF": [[3, 3, 1, 0], [4, 1, 1, 1]],  # 1/2, 1         -> 75
        "Math": [[2, 2, 2, 1]],  # 1/3            -> 33.33
        "Safety": [[9, 1, 1, 1]],  # 1              -> 100
        "Focus": [[0, 1, 1, 1], [0, 0, 1, 0], [1, 2, 3, 4]],  # 0, 0, 0  -> 0
    }
    records, rewards = [], []
    for subset, rows in plan.items():
        for k, r in enumerate(rows):
            records.append(best_of_4(f"{subset}-{k}", subset))
            rewards.append(r)
    for row_id, r, n in TIES_ROWS:
        records.append(
            row(row_id, "Ties", [f"ok {i}" for i in range(n)], [f"no {i}" for i in range(len(r) - n)])
        )
        rewards.append(r)
    summary = summarize_rewardbench2(rows_of(records), rewards)

    scores = {s: v["score"] for s, v in summary["subsets"].items()}
    assert scores == pytest.approx(
        {
            "Factuality": 50.0,
            "Precise IF": 75.0,
            "Math": 100 / 3,
            "Safety": 100.0,
            "Focus": 0.0,
            "Ties": 100 * TIES_EXPECTED,
        }
    )
    # (50 + 75 + 33.3333 + 100 + 0 + 49.5025) / 6 = 307.8358 / 6 = 51.3060
    expected = (50 + 75 + 100 / 3 + 100 + 0 + 100 * TIES_EXPECTED) / 6
    assert summary["overall"] == pytest.approx(expected, abs=1e-9)
    assert summary["overall"] == pytest.approx(51.30596766, abs=1e-6)
    # weighting by rows (2, 2, 1, 1, 3, 6 of 15) would give another number
    by_rows = (2 * 50 + 2 * 75 + 100 / 3 + 100 + 0 + 6 * 100 * TIES_EXPECTED) / 15
    assert abs(summary["overall"] - by_rows) > 1
    assert summary["subsets"]["Precise IF"]["shared_max"] == 1
    assert summary["subsets"]["Math"]["correct"] == pytest.approx(1 / 3)
    assert summary["subsets"]["Ties"]["n"] == 6
    assert summary["missing_subsets"] == []
    assert summary["complete"] is False  # 15 rows, not the split's 1,865
    json.dumps(summary)  # JSON-ready

    md = rewardbench2_markdown(summary)
    assert "**Overall 51.3**" in md
    assert "| Precise IF | 2 | 75.0 | 1 |" in md
    assert "| correctness_margin_score | -0.4975 | 0.01 |" in md


def test_a_missing_subset_gives_no_overall():
    summary = summarize_rewardbench2(rows_of([best_of_4("1", "Math")]), [[1.0, 0.0, 0.0, 0.0]])
    assert summary["overall"] is None
    assert summary["missing_subsets"] == [s for s in SUBSETS if s != "Math"]
    assert "PARTIAL: missing subsets Factuality" in rewardbench2_markdown(summary)


@pytest.mark.parametrize(
    ("rewards", "match"),
    [([[1.0, 0.0, 0.0]], "4 rewards"), ([[1.0, np.nan, 0.0, 0.0]], "no NaN"), ([], "1 rows but 0")],
)
def test_bad_rewards_are_errors(rewards, match):
    with pytest.raises(ValueError, match=match):
        summarize_rewardbench2(rows_of([best_of_4("1", "Math")]), rewards)


# ------------------------------------------------------------------ loader checks


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"num_correct": 2}, r"len\(chosen\) = 1 != num_correct = 2"),
        ({"num_incorrect": 2}, r"len\(rejected\) = 3 != num_incorrect = 2"),
        ({"total_completions": 5}, r"total_completions = 5 != num_correct \+ num_incorrect = 4"),
        ({"rejected": ["bad 1", "  ", "bad 3"]}, r"empty or non-text completion rejected\[1\]"),
        ({"chosen": "good"}, "chosen is not a list of texts"),
        ({"prompt": ""}, "empty prompt"),
        ({"subset": "Chat"}, "unknown subset 'Chat'"),
        ({"num_correct": 1.5}, "must be integers"),
    ],
)
def test_a_bad_row_is_an_error_naming_file_row_and_id(change, match):
    records = [best_of_4("ok-1", "Math"), best_of_4("bad-7", "Math") | change]
    with pytest.raises(
        RewardBench2DataError,
        match=rf"rb2\.parquet: \d problem\(s\): rb2\.parquet: row 1 \(id 'bad-7', subset '\w+'\): .*{match}",
    ):
        rows_of(records)


@pytest.mark.parametrize(
    ("record", "match"),
    [
        (row("7", "Ties", ["a"], ["b"]), r"a Ties id must be 'ref:<k>' or 'tied:<k>'"),
        (row("tied:7", "Ties", ["a"], ["b"]), "a tied prompt needs at least 2 correct answers, has 1"),
        (row("ref:7", "Ties", ["a", "c"], ["b"]), "a ref prompt has exactly 1 correct answer, has 2"),
        (row("7", "Focus", ["a", "c"], ["b", "d"]), "a best-of-N row has exactly 1 correct answer, has 2"),
        (row("7", "Focus", ["a"], []), "no rejected completion"),
    ],
)
def test_rows_the_official_rules_cannot_score_are_errors(record, match):
    with pytest.raises(RewardBench2DataError, match=match):
        rows_of([record])


def test_duplicate_ids_are_errors_but_the_same_id_in_two_subsets_is_not():
    assert len(rows_of([best_of_4("3", "Math"), best_of_4("3", "Focus")]).frame) == 2
    with pytest.raises(RewardBench2DataError, match=r"row 1 \(id '3', subset 'Math'\): repeats .*row 0"):
        rows_of([best_of_4("3", "Math"), best_of_4("3", "Math")])
    with pytest.raises(RewardBench2DataError, match=r"id 'ref:07'.*repeats"):  # same prompt number
        rows_of([row("ref:7", "Ties", ["a"], ["b"]), row("ref:07", "Ties", ["a"], ["b"])])


def test_missing_columns_and_missing_sources_are_errors(tmp_path):
    with pytest.raises(RewardBench2DataError, match="missing column.*num_incorrect"):
        check_rewardbench2(pd.DataFrame([best_of_4("1", "Math")]).drop(columns="num_incorrect"), "f")
    with pytest.raises(RewardBench2DataError, match="no such file"):
        load_rewardbench2(tmp_path / "absent.parquet")
    with pytest.raises(RewardBench2DataError, match="pinned revision"):
        load_rewardbench2(HUB_ID, revision=None)  # refused before any download
    with pytest.raises(RewardBench2DataError, match="no test-.*parquet"):
        load_rewardbench2(tmp_path)
    (tmp_path / "x.parquet").write_text("not parquet")
    with pytest.raises(RewardBench2DataError, match=r"x\.parquet: cannot be read as Parquet"):
        load_rewardbench2(tmp_path / "x.parquet")


# ------------------------------------------------------------------ end to end from a mirror folder

SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("prompt", pa.string()),
        ("chosen", pa.list_(pa.string())),
        ("rejected", pa.list_(pa.string())),
        ("num_correct", pa.int64()),
        ("num_incorrect", pa.int64()),
        ("total_completions", pa.int64()),
        ("models", pa.list_(pa.string())),
        ("subset", pa.string()),
        ("additional_metadata", pa.struct([("category", pa.string())])),
    ]
)
# Toy scorer: reward = len(completion). Results by hand:
#   f1  4 vs 1, 2, 3                 -> 1     f2  2 vs 4, 1, 1 -> 0      Factuality = 50
#   p1  3 vs 3, 1, 2 (2 at the top)  -> 1/2                              Precise IF = 50
#   m1  3 vs 3, 3, 1 (3 at the top)  -> 1/3                              Math = 33.33
#   s1  11 vs 2, 3, 4                -> 1                                Safety = 100
#   o1  1 vs 2, 2, 2                 -> 0                                Focus = 0
#   ref:1   correct [5], incorrect [2, 1]          gap 5 - 2 = 3  accurate
#   tied:1  correct [3, 4, 5], incorrect [3, 3]    gap 3 - 3 = 0  wrong, spread 5 - 3 = 2
#   Ties = 0.30 * 0 + 0.30 * 1 + 0.20 * (0 > 2) + 0.20 * (min(3, 0) > 2) + 0.01 * tanh(0 / 2 - 1)
#        = 0.3 + 0.01 * tanh(-1) = 0.29238405844...                      Ties = 29.2384
#   overall = (50 + 50 + 33.3333 + 100 + 0 + 29.2384) / 6 = 262.5717 / 6 = 43.7620
MIRROR_ROWS = [
    row("f1", "Factuality", ["aaaa"], ["a", "aa", "aaa"]),
    row("f2", "Factuality", ["aa"], ["aaaa", "a", "b"]),
    row("p1", "Precise IF", ["xxx"], ["yyy", "z", "zz"]),
    row("m1", "Math", ["ccc"], ["ddd", "eee", "f"]),
    row("s1", "Safety", ["long answer"], ["no", "nah", "nope"]),
    row("o1", "Focus", ["a"], ["bb", "cc", "dd"]),
    row("ref:1", "Ties", ["seven"], ["no", "x"]),
    row("tied:1", "Ties", ["red", "blue", "green"], ["cat", "dog"]),
]
MIRROR_OVERALL = (50 + 50 + 100 / 3 + 100 + 0 + 100 * (0.3 + 0.01 * math.tanh(-1))) / 6


def write_mirror(root, records) -> None:
    data = root / "allenai" / "reward-bench-2" / "data"
    data.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(records, schema=SCHEMA), data / "test-00000-of-00001.parquet")


def length_scorer(pairs: list[tuple[str, str]]) -> list[float]:
    return [float(len(completion)) for _, completion in pairs]


def test_a_mirror_folder_loads_and_scores_end_to_end(tmp_path):
    write_mirror(tmp_path, MIRROR_ROWS)
    summary = evaluate_rewardbench2(tmp_path, length_scorer)
    assert summary["overall"] == pytest.approx(MIRROR_OVERALL, abs=1e-12)
    assert summary["overall"] == pytest.approx(43.76195652956, abs=1e-9)
    assert summary["subsets"]["Ties"]["score"] == pytest.approx(29.238405844044235, abs=1e-9)
    assert summary["subsets"]["Math"]["score"] == pytest.approx(100 / 3)
    assert summary["origin"] == str(tmp_path)
    assert summary["rows_scored"] == 8 and summary["matches_pinned_file"] is False
    assert len(summary["file_sha256"]) == 64

    rows = load_rewardbench2(tmp_path)
    assert rows.frame["id"].tolist() == [r["id"] for r in MIRROR_ROWS]
    assert [r.tolist() for r in score_rewardbench2(rows, length_scorer)][:1] == [[4.0, 1.0, 2.0, 3.0]]


def test_a_bad_row_in_a_mirror_file_names_the_file_and_the_id(tmp_path):
    bad = [*MIRROR_ROWS[:3], row("m1", "Math", ["ccc", "c"], ["ddd"]) | {"num_correct": 1}]
    write_mirror(tmp_path, bad)
    path = tmp_path / "allenai" / "reward-bench-2" / "data" / "test-00000-of-00001.parquet"
    with pytest.raises(RewardBench2DataError) as e:
        load_rewardbench2(tmp_path)
    assert f"{path}: row 3 (id 'm1', subset 'Math'): len(chosen) = 2 != num_correct = 1" in str(e.value)


def test_a_scorer_returning_the_wrong_count_is_an_error(tmp_path):
    write_mirror(tmp_path, MIRROR_ROWS)
    with pytest.raises(ValueError, match="completions but"):
        evaluate_rewardbench2(tmp_path, lambda pairs: [0.0] * (len(pairs) - 1))


@pytest.mark.slow  # a tiny reward model and a tiny causal LM through the CLI (~15-30 s)
def test_rmflow_eval_scores_rewardbench2_with_a_reward_model_and_with_dpo_rewards(tmp_path, capsys):
    import json

    from tiny import build_tiny_model_dir

    from rmcore.evaluate.rewardbench2 import evaluate_rewardbench2, load_rewardbench2
    from rmcore.model import load_reward_model
    from rmcore.scoring import score_conversations
    from rmflow.cli import main

    write_mirror(tmp_path / "data", MIRROR_ROWS)
    model_dir = build_tiny_model_dir(tmp_path / "rm", "llama")
    assert main(["eval", str(model_dir), "--rewardbench2", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                 "--fp32", "--json"]) == 0
    # the last line: a library imported before main() may have bound its log handler to stdout
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    model = load_reward_model(str(model_dir))

    def direct(pairs):
        convs = [[{"role": "user", "content": p}, {"role": "assistant", "content": c}] for p, c in pairs]
        return score_conversations(model, convs)

    expected = evaluate_rewardbench2(tmp_path / "data", direct)
    assert result["benchmark"] == "RewardBench 2" and result["rows_scored"] == len(load_rewardbench2(tmp_path / "data").frame)
    assert result["overall"] == pytest.approx(expected["overall"], abs=1e-9)
    assert json.loads((tmp_path / "out" / "rewardbench2_summary.json").read_text())["model"] == str(model_dir)
    assert "Ties" in (tmp_path / "out" / "rewardbench2.md").read_text()
    # the same benchmark with a causal LM's DPO implicit rewards (reference-free, avg)
    from test_dpo_rewards import _tiny_lm

    policy = _tiny_lm(tmp_path / "policy")
    assert main(["eval", "--dpo", str(policy), "--rewardbench2", str(tmp_path / "data"), "--out",
                 str(tmp_path / "dpo"), "--json"]) == 0
    dpo = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert dpo["overall"] is not None and set(dpo["subsets"]) == set(result["subsets"])
