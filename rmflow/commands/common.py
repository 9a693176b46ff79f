"""Arguments several commands share."""

from __future__ import annotations

import argparse


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data-dir",
        default=None,
        help="hub-mirror folder (<hub id>/<path>), or 'hub'; default $RMFLOW_DATA_DIR, else the built-in "
        "GENERATED sample",
    )
    p.add_argument(
        "--out", default=None, help="work folder for all stage outputs (default $RMFLOW_WORK_DIR or ./runs)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def load_checked_recipe(path: str, data_dir: str | None, *, train: bool = False):
    """The recipe, refused before any work (or server) starts when it is invalid, when ``train``
    and it has no train section, or when files a source lists are missing or outside the data dir."""
    import os
    from pathlib import Path

    from rmcore.config import env_roots
    from rmcore.data.stages import listed_files
    from rmcore.recipe import load_recipe, require_train

    recipe = load_recipe(path, extra_roots=env_roots(os.environ))
    if train:
        require_train(recipe)
    chosen = data_dir or os.environ.get("RMFLOW_DATA_DIR")
    if chosen:  # without one the run reads the generated sample, whose absence of the files the flow reports
        root = None if chosen == "hub" else Path(chosen)
        for section in ("sources", "heldout"):
            for i, spec in enumerate(getattr(recipe.data, section)):
                if spec.files is not None:
                    listed_files(spec.files, root, where=f"{path}: data.{section}[{i}] ({spec.key})")
    return recipe
