"""Leaderboards from a fit: a table and markdown, for the pipeline's Prefect/MLflow artifacts.

The markdown says how the numbers were got (method, ties, prior, normalisation, notes),
so a reader of the artifact can tell a plain MLE from a regularised fit.
"""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa

from rmcore.ranking.fit import fit_bradley_terry
from rmcore.ranking.outcomes import outcomes_from_files
from rmcore.ranking.result import RankingResult


def _num(x: float, digits: int = 3) -> str:
    return "n/a" if not math.isfinite(x) else f"{x:.{digits}f}"


def leaderboard_markdown(result: RankingResult, top: int | None = None, *, title: str = "Leaderboard") -> str:
    """A markdown leaderboard: rank, item, strength, 95% interval, record; then how it was fitted."""
    rows = result.to_table(top).to_pylist()
    if result.tie_parameter is None:
        model = "P(a beats b) = 1 / (1 + exp(-(a - b)))"
    else:
        nu = f"{result.tie_parameter:.4g}"
        model = (
            f"Davidson ties: P(a wins) = e^h / (e^h + e^-h + {nu}), P(tie) = {nu} / (...), h = (a - b) / 2"
        )
    lines = [
        f"## {title}",
        "",
        f"Bradley-Terry log-strengths ({result.normalisation}); {model}.",
        "",
        "| rank | item | strength | 95% interval | std. error | W-L-T |",
        "|---:|---|---:|---|---:|---|",
    ]
    for r in rows:
        interval = f"[{_num(r['ci_low'])}, {_num(r['ci_high'])}]"
        record = f"{r['wins']}-{r['losses']}-{r['ties']}"
        item = str(r["item"]).replace("|", "\\|")
        lines.append(
            f"| {r['rank']} | {item} | {_num(r['strength'])} | {interval} | {_num(r['std_error'])} | {record} |"
        )
    shown = f"top {len(rows)} of {len(result.items)}" if top is not None else f"{len(result.items)}"
    summary = (
        f"Items: {shown}; comparisons: {result.n_comparisons}; method: {result.method}"
        f" ({result.iterations} iterations, converged: {result.converged}); ties: {result.tie_rule};"
        f" prior: {result.prior}; intervals: 95% {result.interval_kind}."
    )
    lines += ["", summary]
    lines += [f"- {note}" for note in result.notes]
    return "\n".join(lines) + "\n"


def leaderboard(
    result: RankingResult, top: int | None = None, *, title: str = "Leaderboard"
) -> tuple[pa.Table, str]:
    """The leaderboard as (table, markdown): what the pipeline publishes as artifacts."""
    return result.to_table(top), leaderboard_markdown(result, top, title=title)


def rank_files(paths: list[str | Path], *, fmt: str = "auto", **fit_options) -> RankingResult:
    """Read outcomes from files (see ``outcomes_from_files``) and fit; ``fit_options`` go to the fit."""
    return fit_bradley_terry(outcomes_from_files(paths, fmt), **fit_options)


def leaderboard_from_files(
    paths: list[str | Path],
    *,
    top: int | None = None,
    title: str = "Leaderboard",
    fmt: str = "auto",
    **fit_options,
) -> tuple[pa.Table, str, dict]:
    """One call for the pipeline: files -> (leaderboard table, markdown, JSON-ready summary of the fit)."""
    result = rank_files(paths, fmt=fmt, **fit_options)
    table, markdown = leaderboard(result, top, title=title)
    return table, markdown, result.to_dict(top)
