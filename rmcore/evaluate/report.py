"""Markdown tables for people: the RewardBench table (per subset and category) and the
held-out table, each with the length-bias numbers beside the accuracy.

The lead publishes these as Prefect markdown artifacts; they are also written beside
the JSON summaries.
"""

from __future__ import annotations

from rmcore.evaluate.headline import ordered_subsets
from rmcore.evaluate.official import SUBSET_MAPPING


def _pct(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _rho(value: float | None) -> str:
    return "-" if value is None else f"{value:+.2f}"


def rewardbench_markdown(summary: dict) -> str:
    """The RewardBench table: overall, categories, then every subset under its category."""
    lines = ["# RewardBench v1 (filtered)", ""]
    overall = summary.get("overall")
    rule = summary.get("length_rule", {})
    lines.append(
        f"**Overall {_pct(overall)}** ({summary.get('overall_form', '')}; weights: {summary.get('weights_name')}); "
        f"length-only rule: {_pct(rule.get('overall'))}"
    )
    if summary.get("sampled"):
        s = summary["sampled"]
        lines.append(
            f"\n> SAMPLED: {s['per_subset']} rows per subset (seed {s['seed']}, {s['rows']} rows), not the full split."
        )
    if summary.get("missing_subsets"):
        lines.append(f"\n> PARTIAL: missing subsets {', '.join(summary['missing_subsets'])}.")
    if summary.get("exclusions"):
        lines.append(f"\n> {len(summary['exclusions'])} row(s) excluded (empty text); see the JSON summary.")
    lines += ["", "| category | score | length rule |", "|---|---:|---:|"]
    for category in SUBSET_MAPPING:
        lines.append(
            f"| {category} | {_pct(summary['categories'].get(category))} | "
            f"{_pct(rule.get('categories', {}).get(category))} |"
        )
    if summary.get("prior_sets") is not None:
        lines.append(f"| Prior Sets (0.5 weight) | {_pct(summary['prior_sets'])} | |")
    lines += [
        "",
        "| category | subset | n | accuracy | 95% CI | ties | length rule | rho(margin, length diff) |",
        "|---|---|---:|---:|---|---:|---:|---:|",
    ]
    subsets = summary["subsets"]
    for category, name in ordered_subsets(subsets):
        v = subsets[name]
        lo, hi = v["ci95"]
        lines.append(
            f"| {category} | {name} | {v['n']} | {100 * v['accuracy']:.1f} | {100 * lo:.1f}-{100 * hi:.1f} | "
            f"{v['ties']} | {100 * v['length_rule_accuracy']:.1f} | {_rho(v['margin_length_spearman'])} |"
        )
    lines += [
        "",
        "Ties count as wrong for the model, as half for the length rule (longer answer wins, in words).",
    ]
    return "\n".join(lines) + "\n"


def heldout_markdown(summary: dict) -> str:
    """Held-out accuracy per source with its interval, calibration and length-bias numbers."""
    lines = [
        "# Held-out pairwise accuracy",
        "",
        "| source | pairs | accuracy | 95% CI | ties | length rule | rho(margin, length diff) | ECE |",
        "|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    for name, v in summary["sources"].items():
        lo, hi = v["ci95"]
        lines.append(
            f"| {name} | {v['n']} | {100 * v['accuracy']:.1f} | {100 * lo:.1f}-{100 * hi:.1f} | {v['ties']} | "
            f"{100 * v['length_rule_accuracy']:.1f} | {_rho(v['margin_length_spearman'])} | {v['calibration']['ece']:.3f} |"
        )
    lines += [
        "",
        "Ties count as wrong for the model, as half for the length rule (longer answer wins, in words).",
    ]
    return "\n".join(lines) + "\n"
