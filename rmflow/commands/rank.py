"""``rmflow rank FILE...``: classic Bradley-Terry strengths from pairwise outcomes (SPEC section 7)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

HELP = """Fit Bradley-Terry strengths to pairwise outcomes and print the ranking.

FILE is a CSV/Parquet/JSONL of Chatbot Arena battles (model_a, model_b, winner_model_a,
winner_model_b, winner_tie), RewardBench rows (chosen_model beats rejected_model),
UltraFeedback raw rows (completions ranked by fine-grained score) or generic outcomes
(item_a, item_b, winner = item_a | item_b | "tie"). Two or more score files
(score_chosen, score_rejected keyed by subset+id or pair_id, e.g. `rmflow eval` output)
rank reward-model versions head to head. Ties count as half a win each (--ties drop
ignores them; --ties davidson fits Davidson's tie parameter). When the plain
maximum-likelihood fit does not exist (an item never won or never lost), --prior auto
adds one virtual game per item and says so in the notes."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rank", help="classic Bradley-Terry strengths from pairwise outcomes", description=HELP
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="outcomes file(s); see above")
    p.add_argument(
        "--format", default="auto", choices=["auto", "arena", "rewardbench", "ultrafeedback", "generic"]
    )
    p.add_argument(
        "--method", default="newton", choices=["newton", "mm", "gradient"], help="solver (default newton)"
    )
    p.add_argument(
        "--ties",
        default="half",
        choices=["half", "drop", "davidson"],
        help="half a win each, drop, or Davidson model",
    )
    p.add_argument(
        "--prior",
        default="auto",
        choices=["auto", "none", "virtual", "gaussian", "gamma"],
        help="regularisation",
    )
    p.add_argument(
        "--prior-strength", type=float, default=None, help="virtual games / precision / choix alpha"
    )
    p.add_argument(
        "--reference", default=None, help="report strengths relative to this item (default: sum to zero)"
    )
    p.add_argument("--top", type=int, default=None, help="show only the strongest N items")
    p.add_argument("--bootstrap", type=int, default=0, help="N > 0: 95%% intervals from N bootstrap refits")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed")
    p.add_argument("--max-iter", type=int, default=None)
    p.add_argument(
        "--tol", type=float, default=1e-9, help="stop when every score component is below this (wins)"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.set_defaults(func=run, render=render)


def run(args: argparse.Namespace) -> dict[str, Any]:
    from rmcore.ranking import leaderboard_markdown, rank_files

    result = rank_files(
        args.files,
        fmt=args.format,
        method=args.method,
        ties=args.ties,
        prior=args.prior,
        prior_strength=args.prior_strength,
        reference=args.reference,
        max_iter=args.max_iter,
        tol=args.tol,
        bootstrap=args.bootstrap,
        seed=args.seed,
    )
    out = {"files": [str(f) for f in args.files], **result.to_dict(args.top)}
    out["_markdown"] = leaderboard_markdown(result, args.top)
    return out if not args.json else {k: v for k, v in out.items() if k != "_markdown"}


def render(result: dict[str, Any]) -> None:
    sys.stdout.write(result["_markdown"])
