"""``rmflow mix RECIPE``: download, clean and materialise a recipe's mixture (the mixture flow)."""

from __future__ import annotations

import argparse
import sys

from rmflow.commands.common import add_data_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mix",
        help="materialise a recipe's mixture (download -> clean -> mixture, cached)",
        description="Run the mixture flow for RECIPE (a YAML path or a shipped name: demo, v1, v2, v3, v4).",
    )
    p.add_argument("recipe", help="recipe YAML path or shipped recipe name")
    add_data_args(p)
    p.set_defaults(func=run, render=render)


def run(args: argparse.Namespace) -> dict:
    from rmflow.commands.common import load_checked_recipe

    load_checked_recipe(args.recipe, args.data_dir)  # refused before any work (or server) starts
    from flows.mixture import mixture_flow

    result = mixture_flow(recipe=args.recipe, data_dir=args.data_dir, work_dir=args.out)
    mixture = result["mixture"]
    return {
        "recipe": mixture["name"],
        "data": result["data"],
        "counts": mixture["counts"],
        "total": mixture["rows"],
        "digest": mixture["digest"],
        "output": mixture["path"],
        "manifest": mixture["manifest"],
        "missing": mixture["missing"],
        "stats_markdown": mixture["stats_markdown"],
    }


def render(result: dict) -> None:
    from pathlib import Path

    out = sys.stdout
    out.write(Path(result["stats_markdown"]).read_text())
    out.write(f"\nData: {result['data']}\n")
    if result["missing"]:
        out.write(f"Not available, left out: {', '.join(result['missing'])}\n")
    out.write(f"Mixture: {result['total']:,} pairs, digest {result['digest']}\n{result['output']}\n")
