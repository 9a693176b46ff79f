"""Training items besides pairs: rankings for the listwise model, rated responses for the regression
model, encoded once (token ids) like ``rmcore.train.pairs`` encodes pairs.

- **Rankings** are regrouped from the mixture's train pairs (``rmcore.data.groups``), so the
  listwise model sees exactly the prompts and responses the pairwise one does. A pair without
  scores (hh-rlhf says only which answer won) is a ranking of its two responses: for k = 2 the
  Plackett-Luce loss is the Bradley-Terry loss, so such a pair trains both models the same.
  A response that ``truncation: drop`` leaves out leaves its ranking; a ranking left with fewer
  than two responses or with one tier only is dropped (counted).
- **Rated responses** are the RATED_RESPONSES rows of the rated mixture (``rmcore.data.rated``):
  one conversation each and its five 0-4 ratings, a missing rating NaN (masked in the loss).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from data_contracts import MIXTURE, RATED_ATTRIBUTES
from rmcore.data.groups import dense_tiers, groups_from_pairs
from rmcore.encoding import encode_conversations
from rmcore.io import read_table
from rmcore.train.config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class EncodedGroups:
    """Rankings: each group's response token ids and their tiers (0 = best, equal tiers tied)."""

    seqs: list[list[list[int]]]
    tiers: list[list[int]]
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def lengths(self) -> list[int]:
        """Tokens per group (what length-grouped batching sorts by)."""
        return [sum(len(s) for s in group) for group in self.seqs]


@dataclass
class EncodedRated:
    """Rated responses: token ids and a [n, attributes] float array of ratings (NaN: not rated)."""

    seqs: list[list[int]]
    targets: np.ndarray
    words: np.ndarray
    """Words of each answer (the length the verbosity debiasing decorrelates from)."""
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.seqs)

    @property
    def lengths(self) -> list[int]:
        return [len(s) for s in self.seqs]


def _encode(config: TrainConfig, tokenizer: Any, conversations: list) -> list[list[int] | None]:
    return encode_conversations(
        tokenizer,
        conversations,
        max_length=config.backbone.max_length,
        truncation=config.backbone.truncation,
        system_prompt=config.backbone.system_prompt,
    )


def encode_groups(config: TrainConfig, tokenizer: Any, rows: list[dict[str, Any]]) -> EncodedGroups:
    """The rankings of mixture rows (pairs): scored pairs regrouped per prompt, unscored pairs as
    rankings of two."""

    def scored(r: dict[str, Any]) -> bool:
        return all(r[k] is not None and np.isfinite(r[k]) for k in ("chosen_score", "rejected_score"))

    with_scores = [r for r in rows if scored(r)]
    ranked: list[tuple[list, list[int]]] = []
    merged = 0
    if with_scores:
        names = [f.name for f in MIXTURE.schema if f.name in with_scores[0]]
        table = pa.Table.from_pylist(with_scores, schema=pa.schema([MIXTURE.schema.field(n) for n in names]))
        groups, info = groups_from_pairs(table, where="mixture train pairs")
        merged = info["merged_answers"]
        ranked += list(zip(groups.column("responses").to_pylist(), groups.column("tiers").to_pylist()))
    unscored = [r for r in rows if not scored(r)]
    ranked += [([r["chosen"], r["rejected"]], [0, 1]) for r in unscored]
    flat = [response for responses, _ in ranked for response in responses]
    encoded = iter(_encode(config, tokenizer, flat))
    out = EncodedGroups([], [])
    dropped_responses = dropped_groups = 0
    for responses, tiers in ranked:
        kept = [(ids, t) for ids, t in zip((next(encoded) for _ in responses), tiers) if ids is not None]
        dropped_responses += len(responses) - len(kept)
        if len(kept) < 2 or len({t for _, t in kept}) < 2:
            dropped_groups += 1
            continue
        out.seqs.append([ids for ids, _ in kept])
        out.tiers.append(dense_tiers(-t for _, t in kept))  # tiers again dense after a drop (0 = best)
    out.stats = {
        "pairs_in": len(rows),
        "groups": len(out),
        "responses": sum(len(g) for g in out.seqs),
        "unscored_pairs_as_groups": len(unscored),
        "merged_answers": merged,
        "responses_dropped": dropped_responses,
        "groups_dropped": dropped_groups,
    }
    log.info("listwise: %d pairs -> %d rankings (%s)", len(rows), len(out), out.stats)
    return out


def load_rated(config: TrainConfig, rated_path: Path, tokenizer: Any, split: str) -> EncodedRated:
    """The rated mixture's rows of ``split``, encoded; rows a ``truncation: drop`` leaves out are counted."""
    table = read_table(rated_path, "rated_responses")
    rows = [r for r in table.to_pylist() if r["split"] == split]
    encoded = _encode(config, tokenizer, [r["conversation"] for r in rows])
    kept = [i for i, ids in enumerate(encoded) if ids is not None]
    targets = np.array(
        [[np.nan if rows[i][a] is None else rows[i][a] for a in RATED_ATTRIBUTES] for i in kept],
        dtype=np.float32,
    ).reshape(len(kept), len(RATED_ATTRIBUTES))
    words = np.array(
        [len(str(rows[i]["conversation"][-1]["content"]).split()) for i in kept], dtype=np.float64
    )
    stats = {
        "responses_in": len(rows),
        "responses_kept": len(kept),
        "responses_dropped": len(rows) - len(kept),
    }
    log.info("regression %s: %s (%s)", split, stats, rated_path)
    return EncodedRated([encoded[i] for i in kept], targets, words, stats)
