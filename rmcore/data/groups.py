"""Ranked groups for listwise (Plackett-Luce) training, regrouped from a source's pairs.

A listwise model sees, per prompt, every response with its rank at once. The groups are built
from the pairs of the ``all-pairs`` pairing (v2) of a multi-response source (UltraFeedback:
four completions ranked by the mean of their fine-grained ratings; HelpSteer: the responses to
one prompt ranked by mean(helpfulness, correctness)), so the listwise and the pairwise model
are trained on the same prompts and responses, cleaned and quarantined by the same rules:

- a group is one prompt (its messages, exactly) within one source and split;
- its responses are the distinct answers that appear in its pairs (chosen or rejected side),
  each with the score the pairing gave it; an answer that appears with two scores (HelpSteer
  has the same response text rated twice for one prompt) is one response with the mean of its
  scores, counted as ``merged_answers`` (the pairwise data keeps both as two candidates), and
  one given twice with the same score is one response (its pairs appear twice there);
- tiers rank the scores, best first: equal scores share a tier (dense ranks: 0, 0, 1, 2);
- a prompt whose pairs name fewer than two responses cannot occur (a pair has two), and a
  group whose responses all tie cannot occur either (all-pairs drops equal-score pairs).

Responses that tie with every other response of their prompt never appear in a pair, so they
are not in the group either: the all-pairs pairing already dropped them (``equal_scores``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pyarrow as pa

from data_contracts import RANKED_GROUPS, validate
from rmcore.data.pairing import canonical_json
from rmcore.io import digest_strings


class GroupingError(ValueError):
    """Pairs that cannot be regrouped (a missing score)."""


def dense_tiers(scores: Iterable[float]) -> list[int]:
    """Rank tiers of ``scores``, best (highest) first; equal scores share a tier: (3, 1, 3, 2) -> (0, 2, 0, 1)."""
    values = np.asarray(list(scores), dtype=np.float64)
    distinct = np.unique(values)[::-1]
    return [int(np.flatnonzero(distinct == v)[0]) for v in values]


def groups_from_pairs(pairs: pa.Table, *, where: str = "pairs") -> tuple[pa.Table, dict[str, int]]:
    """The RANKED_GROUPS table of a pair-contract table (groups in order of first appearance),
    and what regrouping changed: ``merged_answers`` (answers seen with several scores)."""
    groups: dict[tuple[str, str, str], dict] = {}
    cols = {name: pairs.column(name).to_pylist() for name in ("source", "split", "prompt", "chosen", "rejected")}
    scores = {side: pairs.column(f"{side}_score").to_pylist() for side in ("chosen", "rejected")}
    for i in range(pairs.num_rows):
        prompt = cols["prompt"][i]
        key = (cols["source"][i], cols["split"][i], canonical_json(prompt))
        group = groups.setdefault(key, {"prompt": prompt, "answers": {}})
        for side in ("chosen", "rejected"):
            messages, score = cols[side][i], scores[side][i]
            if score is None or not np.isfinite(score):
                raise GroupingError(f"{where}: pair {i} has no usable {side}_score ({score!r}); listwise needs scores")
            answer = canonical_json(messages)
            group["answers"].setdefault(answer, (messages, set()))[1].add(float(score))
    rows, merged = [], 0
    for (source, split, prompt_json), group in groups.items():
        answers = [(m, float(np.mean(sorted(s)))) for m, s in group["answers"].values()]
        merged += sum(len(s) > 1 for _, s in group["answers"].values())
        rows.append(
            {
                "group_id": digest_strings(source, split, prompt_json),
                "source": source,
                "prompt": group["prompt"],
                "responses": [m for m, _ in answers],
                "scores": [s for _, s in answers],
                "tiers": dense_tiers(s for _, s in answers),
                "split": split,
            }
        )
    table = pa.Table.from_pylist(rows, schema=RANKED_GROUPS.schema)
    return validate(table, RANKED_GROUPS, where=where), {"merged_answers": merged}


def group_stats(groups: pa.Table) -> dict[str, float]:
    """Groups, responses, mean responses per group, groups with a tie, and the pairs they stand for."""
    sizes = np.array([len(r) for r in groups.column("responses").to_pylist()], dtype=np.int64)
    tiers = groups.column("tiers").to_pylist()
    ordered_pairs = sum(
        int(sum(1 for a in t for b in t if a < b)) for t in tiers
    )  # the comparisons a group encodes (pairs of different tiers)
    return {
        "groups": len(sizes),
        "responses": int(sizes.sum()),
        "mean_group_size": float(sizes.mean()) if len(sizes) else 0.0,
        "groups_with_ties": int(sum(len(set(t)) < len(t) for t in tiers)),
        "ordered_pairs": ordered_pairs,
    }
