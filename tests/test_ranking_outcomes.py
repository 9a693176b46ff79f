"""Outcome readers (arena, RewardBench, UltraFeedback, generic, reward-model versions) and leaderboards."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmcore.io import write_table
from rmcore.ranking import (
    fit_bradley_terry,
    head_to_head,
    leaderboard,
    leaderboard_from_files,
    leaderboard_markdown,
    outcomes_from_arena,
    outcomes_from_file,
    outcomes_from_files,
    outcomes_from_rewardbench,
    outcomes_from_ultrafeedback,
    outcomes_from_versions,
)

ARENA = "lmsys/lmsys-arena-human-preference-55k/train.jsonl"
REWARDBENCH = "allenai/reward-bench/data/filtered-00000-of-00001.parquet"


def rows_of(table: pa.Table) -> list[tuple[str, str, str]]:
    return list(zip(*(table.column(c).to_pylist() for c in ("item_a", "item_b", "winner"))))


def test_arena_one_hot_winner_columns():
    battles = pa.table(
        {
            "model_a": ["x", "y", "x"],
            "model_b": ["y", "z", "z"],
            "winner_model_a": [1, 0, 0],
            "winner_model_b": [0, 1, 0],
            "winner_tie": [0, 0, 1],
        }
    )
    assert rows_of(outcomes_from_arena(battles)) == [("x", "y", "x"), ("y", "z", "z"), ("x", "z", "tie")]
    broken = battles.set_column(4, "winner_tie", pa.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r"arena row 1: .* = \[0, 1, 1\], expected exactly one 1"):
        outcomes_from_arena(broken)


def test_arena_winner_strings():
    battles = pa.table({"model_a": ["x", "y"], "model_b": ["y", "x"], "winner": ["model_b", "tie (bothbad)"]})
    assert rows_of(outcomes_from_arena(battles)) == [("x", "y", "y"), ("y", "x", "tie")]


def test_rewardbench_chosen_model_beats_rejected_model():
    rb = pa.table({"chosen_model": ["gpt-4", "human"], "rejected_model": ["llama", "human"]})
    assert rows_of(outcomes_from_rewardbench(rb)) == [
        ("gpt-4", "llama", "gpt-4"),
        ("human", "human", "human"),
    ]


def completion(model, score=None, ratings=None):
    """One UltraFeedback completion in the raw openbmb/UltraFeedback schema."""
    aspects = ("helpfulness", "honesty", "instruction_following", "truthfulness")
    annotations = {a: {"Rating": r, "Rationale": "..."} for a, r in zip(aspects, ratings or ["N/A"] * 4)}
    return {
        "annotations": annotations,
        "critique": "...",
        "custom_system_prompt": "",
        "fine-grained_score": score,
        "model": model,
        "overall_score": 7.0,
        "principle": "helpfulness",
        "response": "...",
    }


def test_ultrafeedback_every_pair_of_completions_once(tmp_path):
    rows = [
        {
            "source": "evol_instruct",
            "instruction": "q1",
            "completions": [completion("gpt-4", 4.5), completion("llama", 3.0), completion("alpaca", 4.5)],
        },
        {
            "source": "sharegpt",
            "instruction": "q2",
            # wizard has no fine-grained score: mean of ratings 5, 4, 3 ("N/A" skipped) = 4.0 > 3.75.
            "completions": [
                completion("wizard", None, ["5", "4", "N/A", "3"]),
                completion("gpt-4", 3.75),
                completion("unrated", None),
            ],
        },
    ]
    expected = [
        ("gpt-4", "llama", "gpt-4"),
        ("gpt-4", "alpaca", "tie"),
        ("llama", "alpaca", "alpaca"),
        ("wizard", "gpt-4", "wizard"),
    ]
    assert rows_of(outcomes_from_ultrafeedback(rows)) == expected
    path = tmp_path / "ultrafeedback.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert rows_of(outcomes_from_file(path)) == expected


def test_generic_files_in_each_format(tmp_path):
    table = pa.table({"item_a": ["a", "b"], "item_b": ["b", "c"], "winner": ["a", "tie"], "note": ["x", "y"]})
    (tmp_path / "o.csv").write_text("item_a,item_b,winner\na,b,a\nb,c,tie\n")
    (tmp_path / "o.jsonl").write_text(
        '{"item_a":"a","item_b":"b","winner":"a"}\n{"item_a":"b","item_b":"c","winner":"tie"}\n'
    )
    pq.write_table(table, tmp_path / "o.parquet")
    for name in ("o.csv", "o.jsonl", "o.parquet"):
        assert rows_of(outcomes_from_file(tmp_path / name)) == [("a", "b", "a"), ("b", "c", "tie")], name
    # Names that look like numbers stay names.
    (tmp_path / "n.csv").write_text("item_a,item_b,winner\n1,2,2\nNA,1,tie\n")
    (tmp_path / "n.jsonl").write_text(
        '{"item_a":1,"item_b":2,"winner":2}\n{"item_a":3,"item_b":1,"winner":"tie"}\n'
    )
    assert rows_of(outcomes_from_file(tmp_path / "n.csv")) == [("1", "2", "2"), ("NA", "1", "tie")]
    assert rows_of(outcomes_from_file(tmp_path / "n.jsonl")) == [("1", "2", "2"), ("3", "1", "tie")]
    (tmp_path / "x.csv").write_text("left,right\n1,2\n")
    with pytest.raises(ValueError, match=r"x.csv: cannot tell what these columns hold: \['left', 'right'\]"):
        outcomes_from_file(tmp_path / "x.csv")
    with pytest.raises(FileNotFoundError, match="missing.jsonl: no such file"):
        outcomes_from_file(tmp_path / "missing.jsonl")


def test_reward_model_versions_head_to_head():
    # margin = score(chosen) - score(rejected) on the same 5 pairs.
    v1 = np.array([0.5, -0.2, 0.1, -1.0, 0.3])  # right on pairs 0, 2, 4
    v2 = np.array([0.4, 0.3, -0.1, -0.5, 0.2])  # right on pairs 0, 1, 4
    assert head_to_head(v1, v2) == {
        "pairs": 5,
        "both_right": 2,
        "only_a_right": 1,
        "only_b_right": 1,
        "both_wrong": 1,
    }
    out = outcomes_from_versions({"v1": v1, "v2": v2})
    assert out.column("winner").to_pylist() == ["tie", "v2", "v1", "tie", "tie"]
    r = fit_bradley_terry(out)
    assert r.strength("v1") == pytest.approx(r.strength("v2"), abs=1e-12)
    with pytest.raises(ValueError, match="different numbers of pairs"):
        outcomes_from_versions({"v1": v1, "v2": v2[:3]})


def test_score_files_rank_versions(tmp_path):
    def scores(chosen, rejected):
        return pa.table(
            {
                "subset": ["chat"] * 3,
                "id": [1, 2, 3],
                "score_chosen": chosen,
                "score_rejected": rejected,
            }
        )

    write_table(scores([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]), tmp_path / "good.parquet", "rewardbench_scores")
    write_table(scores([1.0, 0.0, 0.0], [0.0, 1.0, 1.0]), tmp_path / "bad.parquet", "rewardbench_scores")
    # good is right on 3 pairs, bad on 1: two wins for good, one tie.
    out = outcomes_from_files([tmp_path / "good.parquet", tmp_path / "bad.parquet"])
    good, bad = str(tmp_path / "good.parquet"), str(tmp_path / "bad.parquet")
    assert rows_of(out) == [(good, bad, "tie"), (good, bad, good), (good, bad, good)]
    r = fit_bradley_terry(out)
    assert r.ranking == [good, bad]
    # 2 wins + 2 halves = 2.5 vs 0.5: P(good beats bad) = 2.5 / 3.
    assert r.predict_proba(good, bad) == pytest.approx(2.5 / 3, abs=1e-9)
    write_table(scores([1.0] * 3, [0.0] * 3).slice(0, 2), tmp_path / "short.parquet", "rewardbench_scores")
    with pytest.raises(ValueError, match="different set of pairs"):
        outcomes_from_files([tmp_path / "good.parquet", tmp_path / "short.parquet"])
    with pytest.raises(ValueError, match="pass two or more score files"):
        outcomes_from_files([tmp_path / "good.parquet"])


def test_real_arena_sample_ranks(shared_data):
    out = outcomes_from_file(shared_data / ARENA)
    r = fit_bradley_terry(out)
    assert r.converged and len(r.items) == 62 and r.n_comparisons == 500
    assert r.ties.sum() == 2 * 150
    assert np.isfinite(r.std_errors).all()
    assert r.prior.startswith("virtual")  # the 500-battle sample has models that never lost
    # gpt-4-1106-preview has the most battles (35-12-17); it must sit in the upper half.
    assert r.ranking.index("gpt-4-1106-preview") < 31


def test_real_rewardbench_model_pairs_rank(shared_data):
    out = outcomes_from_file(shared_data / REWARDBENCH)
    assert out.num_rows == 2985
    r = fit_bradley_terry(out)
    assert r.converged and len(r.items) == 46
    assert "1301 comparisons of an item with itself ignored (no information)" in r.notes
    assert r.n_comparisons == 2985 - 1301
    # dolphin-2.0-mistral-7b is only ever the rejected model (0-208): it ranks last.
    assert r.ranking[-1] == "dolphin-2.0-mistral-7b"
    table, md, summary = leaderboard_from_files(
        [shared_data / REWARDBENCH], top=10, title="RewardBench models"
    )
    assert table.num_rows == 10 and table.column("item").to_pylist() == r.ranking[:10]
    assert md.startswith("## RewardBench models\n") and summary["items"] == 46


def test_leaderboard_markdown_says_how_it_was_fitted(tmp_path):
    rows = [("A", "B", "A")] * 3 + [("A", "B", "B")] + [("B", "C", "B"), ("C", "B", "tie"), ("C", "B", "C")]
    out = pa.table({k: [r[i] for r in rows] for i, k in enumerate(("item_a", "item_b", "winner"))})
    r = fit_bradley_terry(out)
    table, md = leaderboard(r, top=2, title="Source models")
    assert table.column("item").to_pylist() == r.ranking[:2] == ["A", "B"]
    lines = md.splitlines()
    assert lines[0] == "## Source models"
    assert lines[4] == "| rank | item | strength | 95% interval | std. error | W-L-T |"
    a = r.to_table().to_pylist()[0]
    assert lines[6] == (
        f"| 1 | A | {a['strength']:.3f} | [{a['ci_low']:.3f}, {a['ci_high']:.3f}] | {a['std_error']:.3f} | 3-1-0 |"
    )
    assert "Items: top 2 of 3; comparisons: 7; method: newton" in md
    assert "- 1 ties counted as half a win for each side" in md
    assert md == leaderboard_markdown(r, 2, title="Source models")
    write_table(table, tmp_path / "leaderboard.parquet", "ranking_leaderboard")
    assert pq.read_table(tmp_path / "leaderboard.parquet").column("rank").to_pylist() == [1, 2]
