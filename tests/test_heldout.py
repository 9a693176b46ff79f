"""Held-out pairwise accuracy per source: hand-made scores, then a real tiny model end to end."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from tiny import build_tiny_model_dir

from data_contracts.schemas import PAIRS
from rmcore import io
from rmcore.evaluate import EvalConfig, evaluate_heldout
from rmcore.evaluate.heldout import pair_accuracy, summarize_pairs


def pairs_table(source: str, answers: list[tuple[str, str]]) -> pa.Table:
    rows = []
    for i, (good, bad) in enumerate(answers):
        prompt = [{"role": "user", "content": f"question {i}"}]
        rows.append(
            {
                "pair_id": f"{source}-{i}",
                "source": source,
                "prompt": prompt,
                "chosen": prompt + [{"role": "assistant", "content": good}],
                "rejected": prompt + [{"role": "assistant", "content": bad}],
                "chosen_score": None,
                "rejected_score": None,
                "split": "test",
            }
        )
    return pa.Table.from_pylist(rows, schema=PAIRS.schema)


def test_pair_accuracy_by_hand():
    # right, tie (wrong), wrong, right -> 2 of 4
    out = pair_accuracy([2.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, -1.0])
    assert (out["accuracy"], out["n"], out["correct"], out["ties"]) == (0.5, 4, 2, 1)
    lo, hi = out["ci95"]
    assert lo < 0.5 < hi


def test_summarize_pairs_reports_length_bias_beside_accuracy():
    # answer words: chosen longer, tie, shorter, longer -> length rule (2 + 0.5) / 4 = 0.625
    s = summarize_pairs([2.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, -1.0], [5, 3, 4, 2], [3, 3, 6, 1], bins=5)
    assert s["accuracy"] == 0.5 and s["length_rule_accuracy"] == 0.625
    assert s["mean_margin"] == pytest.approx((1 + 0 - 1 + 1) / 4)
    assert s["calibration"]["n"] == 4 and len(s["calibration"]["bins"]) == 5


def test_evaluate_heldout_end_to_end(tmp_path):
    model_dir = build_tiny_model_dir(tmp_path / "model", "bert")
    answers = [
        ("a good long answer with many words", "short"),
        ("same size", "two words"),
        ("no", "a longer but worse reply"),
        ("thanks for asking here it is", "ok then"),
    ]
    paths = {}
    for source in ("hh-rlhf/helpful-base", "hh-rlhf/harmless-base"):
        paths[source] = tmp_path / f"{source.replace('/', '_')}.parquet"
        io.write_table(pairs_table(source, answers), paths[source], "pairs")
    out = tmp_path / "eval"
    summary = evaluate_heldout(model_dir, paths, out, EvalConfig(batch_size=3, max_length=32))

    scores = io.read_table(out / "heldout_scores.parquet", "heldout_scores")
    assert scores.num_rows == 8
    assert scores.column("len_chosen").to_pylist()[:4] == [7, 2, 1, 6]
    for source, s in summary["sources"].items():
        rows = scores.filter(pa.compute.equal(scores.column("source"), source)).to_pylist()
        correct = sum(r["score_chosen"] > r["score_rejected"] for r in rows)
        assert s["n"] == 4 and s["accuracy"] == correct / 4
        assert s["length_rule_accuracy"] == 0.625  # longer, tie, shorter, longer
        assert s["input_sha256"] == io.file_sha256(paths[source])
        for key in ("histogram", "calibration_plot"):
            assert Path(s[key]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert io.read_json(out / "heldout_summary.json")["sources"].keys() == summary["sources"].keys()
    markdown = (out / "heldout.md").read_text()
    assert "| hh-rlhf/helpful-base | 4 |" in markdown and "62.5" in markdown


def test_evaluate_heldout_rejects_wrong_contract(tmp_path):
    model_dir = build_tiny_model_dir(tmp_path / "model", "bert")
    bad = tmp_path / "bad.parquet"
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"chosen": ["a"], "rejected": ["b"]}), bad)
    with pytest.raises(Exception, match="bad.parquet does not match contract 'pairs'"):
        evaluate_heldout(model_dir, {"x": bad}, tmp_path / "out", EvalConfig(max_length=32))


def test_a_held_out_source_with_max_pairs_is_scored_on_a_seeded_sample(tmp_path):
    """The recipe's held-out ``max_pairs`` (as the mixture samples a source): same seed, same pairs."""
    model_dir = build_tiny_model_dir(tmp_path / "model", "bert")
    answers = [(f"good answer {i}", f"bad {i}") for i in range(10)]
    path = tmp_path / "h.parquet"
    io.write_table(pairs_table("hh-rlhf/helpful-base", answers), path, "pairs")
    config = EvalConfig(batch_size=4, max_length=32, plots=False)
    runs = [
        evaluate_heldout(model_dir, {"h": path}, tmp_path / f"e{i}", config, max_pairs={"h": 3}, seed=seed)
        for i, seed in enumerate((7, 7, 8))
    ]
    ids = [
        io.read_table(tmp_path / f"e{i}" / "heldout_scores.parquet", "heldout_scores").column("pair_id").to_pylist()
        for i in range(3)
    ]
    assert [r["sources"]["h"]["n"] for r in runs] == [3, 3, 3]
    assert runs[0]["sources"]["h"]["pairs_in_source"] == 10
    assert ids[0] == ids[1] != ids[2] and len(set(ids[0])) == 3
    whole = evaluate_heldout(model_dir, {"h": path}, tmp_path / "all", config, seed=7)
    assert whole["sources"]["h"]["n"] == 10  # no max_pairs: every pair
