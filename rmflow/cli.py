"""``rmflow``: one console script, one module per command under ``rmflow.commands``.

Each command module defines ``register(subparsers)``; its handler returns a dict that
is printed as one JSON object with ``--json`` (logs go to stderr) or rendered for a
person otherwise. Any failure exits non-zero with a one-line reason.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import os
import sys
from typing import Any

# Command modules, in the order --help lists them. Each owns one concern.
COMMANDS = ("stack", "run", "download", "clean", "mix", "train", "eval", "score", "rank")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rmflow",
        description="Reward-model factory: preference data -> Bradley-Terry reward model -> RewardBench -> registry.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in COMMANDS:  # a missing or renamed command module is an error, never skipped
        importlib.import_module(f"rmflow.commands.{name}").register(sub)
    return parser


def emit(result: Any, args: argparse.Namespace) -> None:
    """Print a command's result: JSON on stdout with --json, else its human rendering."""
    if result is None:
        return
    if getattr(args, "json", False):
        sys.stdout.write(json.dumps(result, default=str) + "\n")
        return
    render = getattr(args, "render", None)
    if render is not None:
        render(result)
    else:
        sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")


class StderrHandler(logging.StreamHandler):
    """Log to whatever ``sys.stderr`` is at the time of the record (not at set-up).

    Its name must not start with "_": Prefect keeps root handlers it sees as the user's own.
    """

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # Without `rmflow up`, flows run on an ephemeral Prefect API; its 20 s start-up budget
    # is too short on a busy 2-core machine.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", "rmcore,tasks,flows")
    # rmcore's log lines outside a flow run (rmflow train, eval, score) go to the console only;
    # without this Prefect warns once per logger that it cannot ship them to its API.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    args = build_parser().parse_args(argv)
    handler = StderrHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, handlers=[handler])
    for noisy in ("httpx", "httpcore", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from rmcore.progress import set_progress_bar

    set_progress_bar(sys.stderr.isatty())  # a progress bar on a terminal; log lines everywhere
    try:
        if getattr(args, "json", False):
            # --json promises one JSON object on stdout: anything a library prints goes to stderr.
            with contextlib.redirect_stdout(sys.stderr):
                result = args.func(args)
        else:
            result = args.func(args)
        emit(result, args)
    except KeyboardInterrupt:
        print("rmflow: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # the CLI contract: one-line reason, non-zero exit
        if args.verbose:
            logging.getLogger("rmflow").exception("failed")
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"rmflow {args.command}: error: {reason}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
