"""``rmflow eval``: JSON on stdout with per-subset, per-category and overall scores; files written."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tiny import build_tiny_model_dir

from rmcore import io
from rmcore.evaluate.official import CATEGORIES, CORE_SUBSETS
from rmflow.cli import main


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("m") / "model", "bert")


@pytest.fixture
def bench_file(tmp_path):
    """One row per core subset (23 rows) in the hub schema, as Parquet."""
    rows = [
        {
            "prompt": f"question {i}",
            "chosen": "a good and long answer" if i % 2 else "no",
            "chosen_model": "m1",
            "rejected": "bad",
            "rejected_model": "m2",
            "subset": subset,
            "id": i,
        }
        for i, subset in enumerate(CORE_SUBSETS)
    ]
    path = tmp_path / "rb.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path


def run_json(capsys, argv: list[str]) -> tuple[int, dict | None, str]:
    code = main(argv)
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def test_eval_json_scores_and_files(capsys, tmp_path, model_dir, bench_file):
    out = tmp_path / "out"
    argv = ["eval", str(model_dir), "--rewardbench", str(bench_file), "--out", str(out), "--max-length", "32"]
    code, result, _ = run_json(capsys, [*argv, "--batch-size", "5", "--fp32", "--json"])
    assert code == 0
    assert set(result["subsets"]) == set(CORE_SUBSETS)
    assert set(result["categories"]) == set(CATEGORIES)
    assert result["overall"] == pytest.approx(sum(result["categories"].values()) / 4)
    assert result["rows_scored"] == 23 and result["sampled"] is None
    assert result["scoring"]["precision"] == "fp32"
    scores = io.read_table(out / "scores.parquet", "rewardbench_scores").to_pandas()
    assert len(scores) == 23 and scores.columns.tolist() == ["subset", "id", "score_chosen", "score_rejected"]
    for _, row in scores.iterrows():  # every subset accuracy is its single row's outcome
        assert result["subsets"][row["subset"]]["accuracy"] == float(
            row["score_chosen"] > row["score_rejected"]
        )
    summary = io.read_json(out / "rewardbench_summary.json")
    assert summary["overall"] == result["overall"]
    assert (out / "rewardbench_rewards.png").exists() and (out / "rewardbench_calibration.png").exists()


def test_eval_batch_size_and_precision(capsys, tmp_path, model_dir, bench_file):
    out = tmp_path / "out"
    argv = ["eval", str(model_dir), "--rewardbench", str(bench_file), "--out", str(out), "--max-length", "32"]
    code, _, _ = run_json(capsys, [*argv, "--batch-size", "5", "--fp32", "--json", "--no-plots"])
    assert code == 0
    scores = io.read_table(out / "scores.parquet").to_pandas()
    # a different batch size and bf16: same scores within float noise / bf16 rounding
    code, _, _ = run_json(capsys, [*argv, "--batch-size", "1", "--fp32", "--json", "--no-plots"])
    assert code == 0
    rescored = io.read_table(out / "scores.parquet").to_pandas()
    assert (rescored["score_chosen"] - scores["score_chosen"]).abs().max() < 1e-5
    code, bf16, _ = run_json(capsys, [*argv, "--bf16", "--bf16-mode", "weights", "--json", "--no-plots"])
    assert code == 0 and bf16["scoring"]["precision"] == "bf16 weights"
    bf16_scores = io.read_table(out / "scores.parquet").to_pandas()
    assert (bf16_scores["score_chosen"] - scores["score_chosen"]).abs().max() < 0.05
    code, auto, _ = run_json(capsys, [*argv, "--bf16", "--json", "--no-plots"])
    assert code == 0 and auto["scoring"]["precision"] == "bf16 autocast"


def test_eval_human_output(capsys, tmp_path, model_dir, bench_file):
    code = main(
        ["eval", str(model_dir), "--rewardbench", str(bench_file), "--out", str(tmp_path), "--no-plots"]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "| Chat Hard |" in out and "| Reasoning | math-prm | 1 |" in out and "pairs/s" in out


def test_eval_errors_are_one_line(capsys, tmp_path, model_dir, bench_file):
    code, _, err = run_json(capsys, ["eval", str(model_dir), "--rewardbench", str(tmp_path / "nope.parquet")])
    assert code == 1 and "no such file" in err and err.strip().count("\n") == 0

    partial = tmp_path / "partial.parquet"
    pd.read_parquet(bench_file).query("subset != 'hep-go'").to_parquet(partial)
    code, _, err = run_json(
        capsys, ["eval", str(model_dir), "--rewardbench", str(partial), "--out", str(tmp_path)]
    )
    assert code == 1 and "hep-go" in err
    assert not (tmp_path / "scores.parquet").exists()  # refused before scoring
    code, result, _ = run_json(
        capsys,
        [
            "eval",
            str(model_dir),
            "--rewardbench",
            str(partial),
            "--out",
            str(tmp_path),
            "--allow-missing-subsets",
            "--json",
        ],
    )
    assert code == 0 and result["missing_subsets"] == ["hep-go"] and result["complete"] is False


def test_eval_sample_on_real_file(capsys, tmp_path, model_dir, shared_data):
    real = shared_data / "allenai/reward-bench/data/filtered-00000-of-00001.parquet"
    argv = [
        "eval",
        str(model_dir),
        "--rewardbench",
        str(real),
        "--out",
        str(tmp_path),
        "--sample-per-subset",
        "1",
    ]
    code, result, _ = run_json(capsys, [*argv, "--max-length", "32", "--no-plots", "--json"])
    assert code == 0
    assert result["sampled"] == {"per_subset": 1, "seed": 0, "rows": 23}
    assert all(v["n"] == 1 for v in result["subsets"].values())
    assert result["complete"] is False
