"""``rmflow score MODEL``: raw rewards from a model folder or a registered model.

One response with ``--prompt P --response R``; otherwise JSONL on stdin, one row per line,
``{"prompt": ..., "response": ...}`` or ``{"messages": [...]}``, and one reward per output
line in input order (``--json``: one object with the list).

MODEL is a local folder (loaded directly, no MLflow) or an MLflow model URI
(``models:/NAME@champion``, ``models:/NAME/3``, ``runs:/...``), read from the tracking /
registry URI given by ``--tracking-uri``, else $MLFLOW_TRACKING_URI, else the local store.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

_URI_SCHEMES = ("models:/", "runs:/", "mlflow-artifacts:/")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="print the raw reward of responses (one, or JSONL on stdin)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", metavar="MODEL", help="model folder, or models:/NAME@ALIAS / models:/NAME/VERSION")
    p.add_argument("--prompt", help="user prompt (with --response)")
    p.add_argument("--response", help="assistant response to score (with --prompt)")
    p.add_argument("--tracking-uri", help="MLflow tracking/registry URI for models:/ URIs")
    p.add_argument("--batch-size", type=int, default=16, help="conversations per forward pass (default 16)")
    p.add_argument("--max-length", type=int, help="token budget (default: the model's)")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.set_defaults(func=handle, render=render)


def read_jsonl(lines, where: str = "stdin") -> list[dict[str, Any]]:
    """Parse JSONL rows; blank lines are skipped; errors name the line."""
    rows = []
    for n, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{where} line {n}: not valid JSON ({e.msg})") from None
        if not isinstance(row, dict):
            raise TypeError(f"{where} line {n}: expected a JSON object with prompt/response or messages")
        rows.append(row)
    return rows


def _input_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    if (args.prompt is None) != (args.response is None):
        raise ValueError("give both --prompt and --response, or neither (then JSONL rows are read from stdin)")
    if args.prompt is not None:
        return [{"prompt": args.prompt, "response": args.response}]
    if sys.stdin.isatty():
        raise ValueError("no input: give --prompt and --response, or pipe JSONL rows on stdin")
    rows = read_jsonl(sys.stdin)
    if not rows:
        raise ValueError("stdin held no JSONL rows to score")
    return rows


def is_model_uri(model: str) -> bool:
    return model.startswith(_URI_SCHEMES)


def score_with_folder(folder: Path, rows: list[dict[str, Any]], *, batch_size: int, max_length: int | None) -> list[float]:
    from rmcore.model import load_reward_model
    from rmcore.scoring import score_conversations
    from tracking.reward_pyfunc import rows_to_conversations

    conversations = rows_to_conversations(rows)
    model = load_reward_model(folder, max_length=max_length)
    return [float(r) for r in score_conversations(model, conversations, batch_size=batch_size)]


def score_with_registry(uri: str, rows: list[dict[str, Any]], *, tracking_uri: str | None) -> list[float]:
    import mlflow.pyfunc

    import tracking
    from tracking.reward_pyfunc import rows_to_conversations

    rows_to_conversations(rows)  # validate input before loading the model
    tracking.configure(tracking.TrackingConfig(tracking_uri=tracking_uri))
    model = mlflow.pyfunc.load_model(uri)
    out = model.predict(rows)
    return [float(r) for r in out["reward"]]


def handle(args: argparse.Namespace) -> dict[str, Any]:
    rows = _input_rows(args)
    if is_model_uri(args.model):
        rewards = score_with_registry(args.model, rows, tracking_uri=args.tracking_uri)
    else:
        folder = Path(args.model)
        if not (folder / "config.json").exists():
            raise FileNotFoundError(
                f"{folder}: not a model folder (no config.json); give a saved model folder or a "
                "registry URI such as models:/NAME@champion"
            )
        rewards = score_with_folder(folder, rows, batch_size=args.batch_size, max_length=args.max_length)
    return {"model": args.model, "count": len(rewards), "rewards": rewards}


def render(result: dict[str, Any]) -> None:
    for reward in result["rewards"]:
        sys.stdout.write(f"{reward!r}\n")
