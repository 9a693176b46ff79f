"""``rmflow clean SOURCE``: clean + pair one source split; every raw row accounted for.

Writes ``<out>/<source with / as __>/<split>/pairs.parquet`` and ``quarantine.parquet``
(through rmcore.io, so both are validated against their contracts; the folder with both and a
``_SUCCESS`` marker replaces the previous one whole, so a killed run never leaves new pairs
beside an old quarantine) and reports
``source, rows_in, kept, dropped (rule -> count), quarantined, output``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

HUB = "hub"
SUCCESS = "_SUCCESS"
"""Marker in the output folder: written last, the folder is complete (as in stage folders)."""
PAIRINGS = ("best-vs-random", "all-pairs")


def register(sub: argparse._SubParsersAction) -> None:
    from rmcore.data.sources.catalog import SOURCE_NAMES

    p = sub.add_parser(
        "clean",
        help="clean + pair one source (rows kept / dropped by rule / quarantined)",
        description="Clean and pair one split of one source with the recipe's rules (SPEC section 3). "
        f"Sources: {', '.join(SOURCE_NAMES)}.",
    )
    p.add_argument("source", metavar="SOURCE", help="source name, e.g. hh-rlhf/helpful-base or ultrafeedback")
    p.add_argument("--split", default="train", help="split to read (default train)")
    p.add_argument(
        "--pairing",
        choices=PAIRINGS,
        default=None,
        help="ultrafeedback and helpsteer (several responses per prompt): best-vs-random (v1, the default) "
        "or all-pairs (v2); refused for sources whose rows are pairs already",
    )
    p.add_argument(
        "--per-prompt", type=int, default=None, metavar="N", help="keep at most N pairs per prompt"
    )
    p.add_argument(
        "--filter", default=None, metavar="NAME",
        help="a named row filter the source offers (orca: argilla-recommended = chosen_score >= 8, not in_gsm8k_train)",
    )  # fmt: skip
    p.add_argument("--seed", type=int, default=42, help="seed for random pairing and caps (default 42)")
    p.add_argument(
        "--data-dir",
        default=None,
        help="hub-mirror folder (<hub id>/<path in repo>), or 'hub'; default $RMFLOW_DATA_DIR, else the hub",
    )
    p.add_argument(
        "--out", default=None, help="output folder (default $RMFLOW_WORK_DIR/clean, else ./runs/clean)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run, render=render)


def _data_dir(value: str | None) -> tuple[Path | None, str]:
    from rmcore.data.sample_data import is_generated

    chosen = value or os.environ.get("RMFLOW_DATA_DIR")
    if not chosen or chosen == HUB:
        return None, "the Hugging Face hub (pinned revisions)"
    path = Path(chosen).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"data dir {path} does not exist (give a hub-mirror folder, or 'hub')")
    kind = "GENERATED sample data" if is_generated(path) else "real data from the local mirror"
    return path, f"{kind} at {path}"


def run(args: argparse.Namespace) -> dict:
    from data_contracts.schemas import PAIRS, QUARANTINE
    from rmcore import io
    from rmcore.data.sources import CleanOptions, clean_source

    if args.per_prompt is not None and args.per_prompt < 1:
        raise ValueError(f"--per-prompt must be >= 1, got {args.per_prompt}")
    data_dir, label = _data_dir(args.data_dir)
    options = CleanOptions(pairing=args.pairing, per_prompt=args.per_prompt, filter=args.filter, seed=args.seed)
    result = clean_source(args.source, args.split, options, data_dir)
    root = (
        Path(args.out or Path(os.environ.get("RMFLOW_WORK_DIR") or "runs") / "clean").expanduser().resolve()
    )
    out = root / args.source.replace("/", "__") / args.split
    with io.replace_dir(out) as tmp:  # pairs and quarantine replace the previous ones together
        io.write_table(result.pairs, tmp / "pairs.parquet", PAIRS)
        io.write_table(result.quarantine, tmp / "quarantine.parquet", QUARANTINE)
        (tmp / SUCCESS).touch()
    return {
        "source": args.source,
        "split": args.split,
        "rows_in": result.rows_in,
        "kept": result.kept,
        "dropped": result.dropped,
        "quarantined": result.quarantined,
        "quarantine_reasons": result.quarantine_reasons,
        "unit": result.unit,
        "raw_rows": result.raw_rows if result.raw_rows is not None else result.rows_in,
        "output": str(out / "pairs.parquet"),
        "quarantine": str(out / "quarantine.parquet"),
        "data": label,
    }


def render(result: dict) -> None:
    w = sys.stdout.write
    w(f"{result['source']} ({result['split']}) from {result['data']}\n")
    unit = "" if result["unit"] == "row" else f" candidate comparisons from {result['raw_rows']:,} raw rows"
    w(f"  {'rows in':<38}{result['rows_in']:>10,}{unit}\n")
    w(f"  {'kept (pairs)':<38}{result['kept']:>10,}\n")
    for rule, n in result["dropped"].items():
        w(f"  {'dropped: ' + rule:<38}{n:>10,}\n")
    w(f"  {'quarantined':<38}{result['quarantined']:>10,}\n")
    for reason, n in result["quarantine_reasons"].items():
        w(f"  {'  ' + reason:<38}{n:>10,}\n")
    w(f"  pairs: {result['output']}\n  quarantine: {result['quarantine']}\n")
