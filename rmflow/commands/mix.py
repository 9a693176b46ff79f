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

    recipe = load_checked_recipe(args.recipe, args.data_dir)  # refused before any work (or server) starts
    from flows.mixture import mixture_flow

    result = mixture_flow(recipe=args.recipe, data_dir=args.data_dir or "", work_dir=args.out or "")
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
        "missing_why": _why_missing(recipe, mixture["missing"], args.data_dir),
        "stats_markdown": mixture["stats_markdown"],
    }


def _why_missing(recipe, missing: list[str], data_dir: str | None) -> dict[str, str]:
    """Each left-out entry -> why (a mirror: the files looked for; the hub: not reachable)."""
    from pathlib import Path

    from rmcore.data.sources.catalog import get_adapter
    from rmcore.data.sources.mirror import why_missing

    specs = {s.key: s for s in recipe.data.sources + recipe.data.heldout}
    why = {}
    for key in missing:
        spec = specs.get(key)
        if spec is None:
            continue
        if spec.files:
            why[key] = f"listed files {', '.join(spec.files)} not found"
        elif data_dir and data_dir != "hub":
            why[key] = why_missing(get_adapter(spec.source), spec.split, Path(data_dir).resolve())
        else:
            why[key] = "not loadable from the hub here (offline?)"
    return why


def render(result: dict) -> None:
    from pathlib import Path

    out = sys.stdout
    out.write(Path(result["stats_markdown"]).read_text())
    out.write(f"\nData: {result['data']}\n")
    if result["missing"]:
        out.write("Not available, left out:\n")
        for key in result["missing"]:
            why = result.get("missing_why", {}).get(key)
            out.write(f"  - {key}" + (f": {why}" if why else "") + "\n")
    out.write(f"Mixture: {result['total']:,} pairs, digest {result['digest']}\n{result['output']}\n")
