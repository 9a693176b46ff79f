"""nvidia/HelpSteer: one row per response, 0-4 ratings; grouped by prompt and paired, vectorised.

Rows: ``prompt, response, helpfulness, correctness, coherence, complexity, verbosity``.
Score = mean(helpfulness, correctness). Responses are grouped by identical prompt text
(groups in order of first appearance, responses in row order); pairing as in
rmcore.data.pairing: v1 best vs a random strictly lower-scored response (``all_scores_equal``
when none is lower), v2 all pairs (equal scores dropped).
Accounting per candidate comparison (``unit = "candidate"``): a prompt with a single
response is one unit ``single_response_prompt``; rows with a missing text or a
missing/NaN helpfulness or correctness are quarantined (one unit each). A pair's
``source_row`` is the chosen response's row.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rmcore.data.pairing import (
    ALL_SCORES_EQUAL,
    BEST_VS_RANDOM,
    EQUAL_SCORES,
    NOT_SELECTED,
    PER_PROMPT_CAP,
    SAME_TEXT,
    cap_per_group,
    group_codes,
    pair_groups,
    pairing_rules,
)
from rmcore.data.sources.base import MULTI_RESPONSE_OPTIONS, CleanOptions, CleanResult
from rmcore.data.sources.tables import (
    quarantine_table,
    raw_json,
    row_numbers,
    single_turn_pairs_table,
    typed_column,
)

SINGLE = "single_response_prompt"
RULES = (SINGLE, SAME_TEXT, EQUAL_SCORES, ALL_SCORES_EQUAL, NOT_SELECTED, PER_PROMPT_CAP)
SCORE_FIELDS = ("helpfulness", "correctness")


def _quarantine_reasons(raw: pa.Table) -> tuple[dict[int, str], pa.Table]:
    """Row index -> reason for rows missing a text or a usable score; the table with typed columns.

    A column of the wrong type (a mirror's majority type, e.g. lists) quarantines every
    non-null value in it as ``wrong_type``, row by row.
    """
    reasons: dict[int, str] = {}
    for name in ("prompt", "response", *SCORE_FIELDS):
        if name not in raw.column_names:
            raise ValueError(f"HelpSteer raw table has no {name!r} column (columns: {raw.column_names})")
        wrong, why, col = typed_column(raw.column(name), name, "number" if name in SCORE_FIELDS else "text")
        raw = raw.set_column(raw.column_names.index(name), name, col)
        for i in np.flatnonzero(wrong):
            reasons.setdefault(int(i), why)
        for i in np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False)):
            reasons.setdefault(int(i), f"missing_field: {name}")
        if name in SCORE_FIELDS:
            values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False)
            for i in np.flatnonzero(np.isnan(values) | np.isinf(values)):
                reasons.setdefault(int(i), f"nan_score: {name}")
    return reasons, raw


@dataclass(frozen=True)
class HelpSteer:
    name: str = "helpsteer"
    hub_id: str = "nvidia/HelpSteer"
    revision: str = "3ca5d59c1bc1080af195b4254e7407db60b6f450"
    """Files ``train.jsonl.gz``, ``validation.jsonl.gz``; the sha public pin tables of nvidia/HelpSteer give."""
    splits: tuple[str, ...] = ("train", "validation")
    options: frozenset[str] = MULTI_RESPONSE_OPTIONS
    streams: bool = False
    columns: tuple[str, ...] | None = None

    def file_patterns(self, split: str) -> list[str]:
        return [f"{split}.jsonl.gz"]

    def clean(self, raw: pa.Table, options: CleanOptions, *, split: str) -> CleanResult:
        numbers = row_numbers(raw)
        reasons, typed = _quarantine_reasons(raw)
        good = np.ones(raw.num_rows, dtype=bool)
        good[list(reasons)] = False
        table = typed.filter(pa.array(good)) if reasons else typed
        rows = numbers[good]
        codes = group_codes(table.column("prompt"))
        order = np.argsort(codes, kind="stable")
        sizes = np.bincount(codes, minlength=int(codes.max()) + 1 if len(codes) else 0)
        offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        h, c = (
            pc.cast(table.column(f), pa.float64()).to_numpy(zero_copy_only=False)[order] for f in SCORE_FIELDS
        )
        scores = (h + c) / 2
        responses = table.column("response").combine_chunks().take(pa.array(order))
        pairing = options.pairing or BEST_VS_RANDOM
        gp = pair_groups(offsets, scores, responses, pairing=pairing, seed=options.seed)
        dropped = {SINGLE: int((sizes == 1).sum()), **gp.dropped}
        dropped.pop("unrated_response", None)  # quarantine already removed every unscored row
        chosen, rejected, group = gp.chosen, gp.rejected, gp.group
        if options.per_prompt is not None:
            keep = cap_per_group(group, options.per_prompt, options.seed)
            dropped[PER_PROMPT_CAP] = int((~keep).sum())
            chosen, rejected, group = chosen[keep], rejected[keep], group[keep]
        prompts = table.column("prompt").combine_chunks().take(pa.array(order[offsets[:-1]]))
        pairs = single_turn_pairs_table(
            self.name, split, prompts, group, responses, chosen, rejected, scores, rows[order][chosen]
        )
        q = sorted(reasons)
        result = CleanResult(
            source=self.name,
            rows_in=int((sizes * (sizes - 1) // 2).sum() + (sizes == 1).sum() + len(q)),
            pairs=pairs,
            quarantine=quarantine_table(
                self.name,
                [int(numbers[i]) for i in q],
                [reasons[i] for i in q],
                [raw_json(raw.slice(i, 1).to_pylist()[0]) for i in q],
            ),
            dropped={
                k: dropped.get(k, 0)
                for k in RULES
                if (k in pairing_rules(pairing) or k == SINGLE)
                or (k == PER_PROMPT_CAP and options.per_prompt is not None)
            },
            unit="candidate",
            raw_rows=raw.num_rows,
        )
        result.check_accounting()
        return result
