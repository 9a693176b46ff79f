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
