"""What a run's tracking page shows from an evaluation: a few headline numbers, and tables.

A metric is something with a curve or a number people compare across runs: RewardBench overall
and its categories (both on the official 0-100 scale), and per held-out source the accuracy, its
95% interval, the length-only rule's accuracy and the calibration error. Everything else
(RewardBench per subset, per-source counts and correlations, calibration bins) is a table: one
row per subset, source or bin, columns in reading order, values rounded for people.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rmcore.evaluate.official import SUBSET_MAPPING


def _key(name: str) -> str:
    """A metric-safe form of a source name (MLflow keys take no ":")."""
    return name.replace(":", "_")


def headline_metrics(evaluated: Mapping[str, Any]) -> dict[str, float]:
    """The headline metrics of an evaluation result (the evaluate task's return value)."""
    out: dict[str, float] = {}
    rb = evaluated.get("rewardbench") or {}
    if rb.get("overall") is not None:
        out["rewardbench/overall"] = float(rb["overall"])
    for category, value in (rb.get("categories") or {}).items():
        if value is not None:
            out[f"rewardbench/{category}"] = float(value)
    for source, result in (evaluated.get("heldout") or {}).items():
        prefix = f"heldout/{_key(source)}/"
        lo, hi = result["ci95"]
        out[prefix + "accuracy"] = float(result["accuracy"])
        out[prefix + "accuracy_low"] = float(lo)
        out[prefix + "accuracy_high"] = float(hi)
        out[prefix + "length_rule_accuracy"] = float(result["length_rule_accuracy"])
        if "calibration" in result:
            out[prefix + "ece"] = float(result["calibration"]["ece"])
    return out


def _pct(value: float | None) -> float | None:
    return None if value is None else round(100 * float(value), 1)


def _round(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(float(value), digits)


def _columns(rows: list[dict]) -> dict[str, list]:
    """Rows -> columns (the layout MLflow's table artifacts take), keys in the rows' order."""
    return {key: [r[key] for r in rows] for key in rows[0]} if rows else {}


def ordered_subsets(subsets: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(category, subset) pairs in the official order; subsets outside it last, by name."""
    ordered = [(c, s) for c, names in SUBSET_MAPPING.items() for s in names if s in subsets]
    ordered += [
        (subsets[s].get("category", ""), s) for s in sorted(subsets) if all(s != o for _, o in ordered)
    ]
    return ordered


def rewardbench_subset_rows(rb: Mapping[str, Any]) -> list[dict]:
    """One row per RewardBench subset, in the official category order, percentages."""
    subsets = rb.get("subsets") or {}
    rows = []
    for category, name in ordered_subsets(subsets):
        v = subsets[name]
        lo, hi = v.get("ci95", (None, None))
        rows.append(
            {
                "category": category,
                "subset": name,
                "n": int(v["n"]),
                "accuracy (%)": _pct(v["accuracy"]),
                "95% CI low (%)": _pct(lo),
                "95% CI high (%)": _pct(hi),
                "ties": int(v.get("ties", 0)),
                "length rule (%)": _pct(v.get("length_rule_accuracy")),
            }
        )
    return rows


def heldout_rows(heldout: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """One row per held-out source: counts, accuracy and interval, length bias, calibration."""
    rows = []
    for source, r in heldout.items():
        lo, hi = r["ci95"]
        rows.append(
            {
                "source": source,
                "pairs": int(r["n"]),
                "accuracy": _round(r["accuracy"]),
                "95% CI low": _round(lo),
                "95% CI high": _round(hi),
                "ties": int(r.get("ties", 0)),
                "length rule": _round(r.get("length_rule_accuracy")),
                "rho(margin, length diff)": _round(r.get("margin_length_spearman")),
                "ECE": _round((r.get("calibration") or {}).get("ece")),
                "mean margin": _round(r.get("mean_margin"), 4),
            }
        )
    return rows


def calibration_rows(heldout: Mapping[str, Mapping[str, Any]]) -> list[dict]:
    """One row per (source, confidence bin) of the held-out calibration tables."""
    rows = []
    for source, r in heldout.items():
        for b in (r.get("calibration") or {}).get("bins", []):
            rows.append(
                {
                    "source": source,
                    "confidence from": _round(b["lo"], 2),
                    "confidence to": _round(b["hi"], 2),
                    "pairs": int(b["n"]),
                    "mean confidence": _round(b["confidence"]),
                    "accuracy": _round(b["accuracy"]),
                }
            )
    return rows


def detail_tables(evaluated: Mapping[str, Any]) -> dict[str, dict[str, list]]:
    """The evaluation's tables by artifact file name (columns -> values); empty ones left out."""
    heldout = evaluated.get("heldout") or {}
    tables = {
        "tables/rewardbench_subsets.json": _columns(
            rewardbench_subset_rows(evaluated.get("rewardbench") or {})
        ),
        "tables/heldout.json": _columns(heldout_rows(heldout)),
        "tables/heldout_calibration.json": _columns(calibration_rows(heldout)),
    }
    return {name: table for name, table in tables.items() if table}


def regression_attribute_rows(regression: Mapping[str, Any]) -> list[dict]:
    """A regression model's held-out attributes, one row each: its weight in the reward, Pearson and
    Spearman with their 95% intervals, RMSE (rmcore.train.regression_eval's details)."""
    weights = regression.get("weights") or {}
    rows = []
    for name, m in (regression.get("attributes") or {}).items():
        rows.append(
            {
                "attribute": name,
                "weight": _round(weights.get(name), 4),
                "n": int(m["n"]),
                "pearson": _round(m["pearson"]),
                "pearson 95% low": _round(m["pearson_low"]),
                "pearson 95% high": _round(m["pearson_high"]),
                "spearman": _round(m["spearman"]),
                "spearman 95% low": _round(m["spearman_low"]),
                "spearman 95% high": _round(m["spearman_high"]),
                "rmse": _round(m["rmse"]),
            }
        )
    return rows


def regression_tables(regression: Mapping[str, Any]) -> dict[str, dict[str, list]]:
    """A regression model's attribute table by artifact file name (empty when there is none)."""
    table = _columns(regression_attribute_rows(regression))
    return {"tables/regression_attributes.json": table} if table else {}
