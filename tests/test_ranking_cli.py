"""``rmflow rank``: one JSON object with --json, a markdown leaderboard otherwise, one-line errors."""

from __future__ import annotations

import json
import math

import pytest

from rmflow.cli import main

ARENA = "lmsys/lmsys-arena-human-preference-55k/train.jsonl"
REWARDBENCH = "allenai/reward-bench/data/filtered-00000-of-00001.parquet"


def test_rank_arena_json(shared_data, capsys):
    assert main(["rank", str(shared_data / ARENA), "--json", "--top", "5"]) == 0
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    result = json.loads(out)
    assert (result["items"], result["comparisons"], result["converged"]) == (62, 500, True)
    assert result["method"] == "newton" and result["ties"] == "half"
    assert len(result["ranking"]) == 5 and [r["item"] for r in result["leaderboard"]] == result["ranking"]
    assert [r["rank"] for r in result["leaderboard"]] == [1, 2, 3, 4, 5]
    top = result["leaderboard"][0]
    assert top["ci_low"] < top["strength"] < top["ci_high"]
    assert any("so a small prior was added" in n for n in result["notes"])


def test_rank_rewardbench_with_reference_and_mm(shared_data, capsys):
    args = ["rank", str(shared_data / REWARDBENCH), "--json", "--method", "mm", "--reference", "GPT-4"]
    assert main(args) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["items"] == 46 and result["converged"]
    assert result["normalisation"] == "reference item 'GPT-4' = 0"
    gpt4 = next(r for r in result["leaderboard"] if r["item"] == "GPT-4")
    assert gpt4["strength"] == 0.0 and gpt4["std_error"] == 0.0


def test_rank_prints_a_markdown_leaderboard(tmp_path, capsys):
    path = tmp_path / "games.csv"
    path.write_text("item_a,item_b,winner\nA,B,A\nA,B,A\nA,B,A\nB,A,B\n")
    assert main(["rank", str(path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("## Leaderboard\n")
    # 3 wins to 1: strengths +-ln(3)/2 = +-0.549 (see test_ranking_fit).
    assert f"| 1 | A | {math.log(3) / 2:.3f} |" in out
    assert f"| 2 | B | {-math.log(3) / 2:.3f} |" in out


def test_rank_fails_with_one_line_reason(tmp_path, capsys):
    path = tmp_path / "games.csv"
    path.write_text("item_a,item_b,winner\nA,B,A\nA,B,C\n")
    assert main(["rank", str(path)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("rmflow rank: error: ")
    assert "row 1: winner 'C' is neither item_a 'A', item_b 'B' nor 'tie'" in err[-1]
    assert main(["rank", str(path.with_name("none.csv"))]) == 1
    assert "none.csv: no such file" in capsys.readouterr().err


def test_rank_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as e:
        main(["rank", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    for option in ("--method", "--ties", "--prior", "--reference", "--json", "{newton,mm,gradient}"):
        assert option in text


def test_rank_bootstrap_intervals_json(tmp_path, capsys):
    path = tmp_path / "games.jsonl"
    rows = ['{"item_a": "A", "item_b": "B", "winner": "A"}'] * 6 + [
        '{"item_a": "A", "item_b": "B", "winner": "B"}'
    ] * 3
    path.write_text("\n".join(rows) + "\n")
    assert main(["rank", str(path), "--json", "--bootstrap", "30", "--seed", "7", "--prior", "virtual"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["intervals"] == "95% bootstrap percentile (30 resamples of the comparisons, seed 7)"
    a = result["leaderboard"][0]
    assert a["item"] == "A" and a["ci_low"] <= a["strength"] <= a["ci_high"]
