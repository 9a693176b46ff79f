"""Headline metrics vs detail tables: what an evaluation puts on a run's metrics tab."""

from __future__ import annotations

from rmcore.evaluate.headline import detail_tables, headline_metrics


def _heldout(accuracy: float, lo: float, hi: float) -> dict:
    bins = [{"lo": 0.5 + i / 20, "hi": 0.55 + i / 20, "n": 0, "confidence": None, "accuracy": None} for i in range(10)]
    bins[0].update(n=4, confidence=0.51, accuracy=0.75)
    return {
        "accuracy": accuracy,
        "n": 4,
        "correct": 3,
        "ties": 0,
        "ci95": [lo, hi],
        "length_rule_accuracy": 0.5,
        "margin_length_spearman": 0.123456,
        "mean_margin": 0.0123456,
        "calibration": {"bins": bins, "ece": 0.24, "mean_confidence": 0.51, "accuracy": 0.75, "n": 4},
    }


EVALUATED = {
    "rewardbench": {
        "overall": 61.25,
        "categories": {"Chat": 80.0, "Chat Hard": 40.0, "Safety": 62.5, "Reasoning": None},
        "subsets": {
            "xstest-should-respond": {"accuracy": 0.5, "n": 2, "ties": 1, "ci95": [0.1, 0.9],
                                      "category": "Safety", "length_rule_accuracy": 0.25},
            "alpacaeval-easy": {"accuracy": 1.0, "n": 3, "ties": 0, "ci95": [0.4385, 1.0],
                                "category": "Chat", "length_rule_accuracy": 2 / 3},
        },
    },
    "heldout": {"hh-rlhf/helpful-base/test": _heldout(0.75, 0.3, 0.95), "shp:test": _heldout(0.5, 0.1, 0.9)},
}


def test_headline_metrics_are_rewardbench_on_the_0_100_scale_and_per_source_headlines() -> None:
    assert headline_metrics(EVALUATED) == {
        "rewardbench/overall": 61.25,
        "rewardbench/Chat": 80.0,
        "rewardbench/Chat Hard": 40.0,
        "rewardbench/Safety": 62.5,  # Reasoning unscored: no metric rather than a fake 0
        "heldout/hh-rlhf/helpful-base/test/accuracy": 0.75,
        "heldout/hh-rlhf/helpful-base/test/accuracy_low": 0.3,
        "heldout/hh-rlhf/helpful-base/test/accuracy_high": 0.95,
        "heldout/hh-rlhf/helpful-base/test/length_rule_accuracy": 0.5,
        "heldout/hh-rlhf/helpful-base/test/ece": 0.24,
        "heldout/shp_test/accuracy": 0.5,
        "heldout/shp_test/accuracy_low": 0.1,
        "heldout/shp_test/accuracy_high": 0.9,
        "heldout/shp_test/length_rule_accuracy": 0.5,
        "heldout/shp_test/ece": 0.24,
    }


def test_details_are_tables_in_reading_order_rounded() -> None:
    tables = detail_tables(EVALUATED)
    assert set(tables) == {"tables/rewardbench_subsets.json", "tables/heldout.json", "tables/heldout_calibration.json"}
    subsets = tables["tables/rewardbench_subsets.json"]
    assert list(subsets) == ["category", "subset", "n", "accuracy (%)", "95% CI low (%)", "95% CI high (%)",
                             "ties", "length rule (%)"]
    # official order: Chat's alpacaeval-easy before Safety's xstest-should-respond; percentages
    assert subsets["subset"] == ["alpacaeval-easy", "xstest-should-respond"]
    assert subsets["accuracy (%)"] == [100.0, 50.0]
    assert subsets["95% CI low (%)"] == [43.9, 10.0]
    assert subsets["length rule (%)"] == [66.7, 25.0]
    heldout = tables["tables/heldout.json"]
    assert list(heldout)[:3] == ["source", "pairs", "accuracy"]
    assert heldout["rho(margin, length diff)"] == [0.123, 0.123] and heldout["mean margin"] == [0.0123, 0.0123]
    calibration = tables["tables/heldout_calibration.json"]
    assert len(calibration["source"]) == 20  # 10 bins x 2 sources, none of them metrics
    assert calibration["pairs"][:2] == [4, 0] and calibration["accuracy"][:2] == [0.75, None]


def test_an_evaluation_without_rewardbench_or_heldout_has_no_empty_tables() -> None:
    assert headline_metrics({}) == {}
    assert detail_tables({"heldout": {}}) == {}
