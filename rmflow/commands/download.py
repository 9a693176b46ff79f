"""``rmflow download RECIPE``: fetch every source split a recipe names (the download flow)."""

from __future__ import annotations

import argparse
import sys

from rmflow.commands.common import add_data_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "download",
        help="fetch a recipe's sources to raw Parquet + manifests (cached by content)",
        description="Run the download flow for RECIPE: each source split from the local mirror (--data-dir) "
        "or the hub, to raw Parquet with a manifest (rows, sha256, revision, fetched-at).",
    )
    p.add_argument("recipe", help="recipe YAML path or shipped recipe name")
    add_data_args(p)
    p.set_defaults(func=run, render=render)


def run(args: argparse.Namespace) -> dict:
    from rmflow.commands.common import load_checked_recipe

    load_checked_recipe(args.recipe, args.data_dir)  # refused before any work (or server) starts
    from flows.download import download_flow

    return download_flow(recipe=args.recipe, data_dir=args.data_dir or "", work_dir=args.out or "")


def render(result: dict) -> None:
    out = sys.stdout
    out.write(f"Data: {result['data']}\n")
    for d in result["downloads"]:
        out.write(f"  {d['source']} [{d['split']}]: {d['rows']:,} rows -> {d['raw_dir']}\n")
    if result["missing"]:
        out.write(f"Not available: {', '.join(result['missing'])}\n")
