"""openbmb/UltraFeedback: 4 completions per instruction, GPT-4 fine-grained ratings, vectorised.

Rows: ``source, instruction, models, completions[]`` with each completion holding
``model, principle, custom_system_prompt, response, critique, overall_score,
fine-grained_score`` and ``annotations`` = {``instruction_following``, ``honesty``,
``truthfulness``, ``helpfulness``} each a struct with ``Rating`` (a string "1".."5" or
"N/A") and ``Rationale``. Score of a completion = mean of its numeric ratings ("N/A"
skipped; none numeric = unrated). Pairing (rmcore.data.pairing): v1 best vs a random
strictly lower-scored completion (``all_scores_equal`` when none is lower), v2 all pairs
(chosen = higher score; equal scores dropped). Accounting is per
candidate comparison (``unit = "candidate"``): rows with < 2 completions are one unit
``fewer_than_two_completions``; rows with a missing instruction/response or a rating
that is neither a number nor "N/A" are quarantined (one unit each).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
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
    UNRATED,
    cap_per_group,
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

ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")
TOO_FEW = "fewer_than_two_completions"
RULES = (TOO_FEW, UNRATED, SAME_TEXT, EQUAL_SCORES, ALL_SCORES_EQUAL, NOT_SELECTED, PER_PROMPT_CAP)
_NUMBER = re.compile(r"\s*[0-9]+(\.[0-9]+)?\s*")
_BATCH_ROWS = 100_000


def _ratings(items: pa.StructArray) -> tuple[np.ndarray, np.ndarray]:
    """(n_items x 4 float ratings with NaN for N/A or missing, mask of items with a bad rating)."""
    n = len(items)
    out = np.full((n, len(ASPECTS)), np.nan)
    bad = np.zeros(n, dtype=bool)
    ann_type = (
        items.type.field("annotations").type if items.type.get_field_index("annotations") >= 0 else None
    )
    if ann_type is None:
        return out, bad
    ann = pc.struct_field(items, "annotations")
    for j, aspect in enumerate(ASPECTS):
        if ann_type.get_field_index(aspect) < 0 or ann_type.field(aspect).type.get_field_index("Rating") < 0:
            continue
        rating = pc.struct_field(pc.struct_field(ann, aspect), "Rating")
        if pa.types.is_string(rating.type) or pa.types.is_large_string(rating.type):
            out[:, j], bad_j = _parse_rating_strings(rating)
            bad |= bad_j
            continue
        if pa.types.is_integer(rating.type) or pa.types.is_floating(rating.type):
            values = pc.cast(rating, pa.float64())
            bad |= pc.fill_null(pc.is_nan(values), False).to_numpy(zero_copy_only=False)
        elif pa.types.is_null(rating.type):
            continue
        else:  # e.g. lists: every such rating is neither a number nor "N/A"
            bad |= pc.is_valid(rating).to_numpy(zero_copy_only=False).astype(bool)
            continue
        out[:, j] = values.to_numpy(zero_copy_only=False)
    return out, bad


def _parse_rating_strings(rating: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(values, NaN for "N/A" or missing; mask of ratings neither a number nor "N/A").

    Each distinct string is parsed once (a handful: "1".."5", "N/A"), then mapped back.
    """
    encoded = pc.dictionary_encode(rating)
    vocab = encoded.dictionary.to_pylist()
    values = np.full(len(vocab) + 1, np.nan)  # the extra slot: null ratings, skipped like N/A
    bad = np.zeros(len(vocab) + 1, dtype=bool)
    for k, text in enumerate(vocab):
        if text.strip() == "N/A":
            continue
        if _NUMBER.fullmatch(text):
            values[k] = float(text)
        else:
            bad[k] = True
    codes = pc.fill_null(encoded.indices, len(vocab)).to_numpy(zero_copy_only=False)
    return values[codes], bad[codes]


def completion_scores(ratings: np.ndarray) -> np.ndarray:
    """Mean of the numeric ratings per completion; NaN where none is numeric."""
    counts = (~np.isnan(ratings)).sum(axis=1)
    sums = np.nansum(ratings, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@dataclass
class _BatchOut:
    pairs: pa.Table
    q_rows: list[int]
    q_reasons: list[str]
    q_raw: list[str]
    dropped: dict[str, int]
    units: int


def _check_schema(schema: pa.Schema) -> None:
    problems = []
    if "instruction" not in schema.names:
        problems.append("no 'instruction' column")
    t = schema.field("completions").type if "completions" in schema.names else None
    if (
        t is None
        or not (pa.types.is_list(t) or pa.types.is_large_list(t))
        or not (pa.types.is_struct(t.value_type) or pa.types.is_null(t.value_type))
    ):
        problems.append("'completions' must be a list of structs")
    elif pa.types.is_struct(t.value_type) and t.value_type.get_field_index("response") < 0:
        problems.append("completions have no 'response' field")
    if problems:
        raise ValueError(
            "UltraFeedback raw table: "
            + "; ".join(problems)
            + f" (columns: {schema.names}). Fix: read the hub's raw files"
        )


def _clean_batch(
    batch: pa.RecordBatch, rows: np.ndarray, u: np.ndarray, options: CleanOptions, split: str, name: str
) -> _BatchOut:
    comps = batch.column("completions")
    if pa.types.is_null(comps.type.value_type):  # only empty lists (or nulls) in this batch
        comps = comps.cast(pa.list_(pa.struct([("response", pa.string())])))
    sizes = pc.fill_null(pc.list_value_length(comps), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    items = comps.flatten()
    parent = np.repeat(np.arange(len(sizes)), sizes)
    ratings, bad_rating = _ratings(items)
    scores = completion_scores(ratings)
    reasons: dict[int, str] = {}
    wrong, why, instruction = typed_column(batch.column("instruction"), "instruction", "text")
    for i in np.flatnonzero(wrong):
        reasons[int(i)] = why
    wrong, why, response = typed_column(pc.struct_field(items, "response"), "completions[].response", "text")
    for k in np.flatnonzero(wrong):
        reasons.setdefault(int(parent[k]), why)
    for i in np.flatnonzero(pc.is_null(instruction).to_numpy(zero_copy_only=False)):
        reasons.setdefault(int(i), "missing_field: instruction")
    for i in np.flatnonzero(pc.is_null(comps).to_numpy(zero_copy_only=False)):
        reasons.setdefault(int(i), "missing_field: completions")
    for k in np.flatnonzero(pc.is_null(response).to_numpy(zero_copy_only=False)):
        reasons.setdefault(
            int(parent[k]), f"missing_field: completions[{k - np.searchsorted(parent, parent[k])}].response"
        )
    for k in np.flatnonzero(bad_rating):
        reasons.setdefault(int(parent[k]), "bad_rating: a Rating is neither a number nor 'N/A'")
    good = np.ones(len(sizes), dtype=bool)
    good[list(reasons)] = False
    if reasons:  # empty the quarantined rows' groups
        keep_items = good[parent]
        scores, response = scores[keep_items], response.filter(pa.array(keep_items))
        sizes = np.where(good, sizes, 0)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    gp = pair_groups(
        offsets, scores, response, pairing=options.pairing or BEST_VS_RANDOM, seed=options.seed, draws=u
    )
    dropped = {TOO_FEW: int((good & (sizes < 2)).sum()), **gp.dropped}
    chosen, rejected, group = gp.chosen, gp.rejected, gp.group
    if options.per_prompt is not None:
        keep = cap_per_group(rows[group], options.per_prompt, options.seed)
        dropped[PER_PROMPT_CAP] = int((~keep).sum())
        chosen, rejected, group = chosen[keep], rejected[keep], group[keep]
    pairs = single_turn_pairs_table(
        name, split, instruction, group, response, chosen, rejected, scores, rows[group]
    )
    q = sorted(reasons)
    raws = [raw_json(batch.slice(i, 1).to_pylist()[0]) for i in q]
    units = int((sizes * (sizes - 1) // 2)[good & (sizes >= 2)].sum() + (good & (sizes < 2)).sum() + len(q))
    return _BatchOut(pairs, [int(rows[i]) for i in q], [reasons[i] for i in q], raws, dropped, units)


def _no_pairs(name: str, split: str) -> pa.Table:
    empty = np.zeros(0, np.int64)
    no_text = pa.array([], pa.string())
    return single_turn_pairs_table(name, split, no_text, empty, no_text, empty, empty, np.zeros(0), empty)


@dataclass(frozen=True)
class UltraFeedback:
    name: str = "ultrafeedback"
    hub_id: str = "openbmb/UltraFeedback"
    revision: str = "40b436560ca83a8dba36114c22ab3c66e43f6d5e"
    """The raw release (one ``<source>.jsonl`` per prompt source, ``completions[].annotations`` with
    the fine-grained ratings), as the dataset card and public ``datasets`` cache snapshots name it."""
    splits: tuple[str, ...] = ("train",)
    options: frozenset[str] = MULTI_RESPONSE_OPTIONS
    streams: bool = True
    columns: tuple[str, ...] = (
        "instruction",
        "completions.list.element.response",
        *(f"completions.list.element.annotations.{a}.Rating" for a in ASPECTS),
    )
    """The Parquet columns the rules read: a mirror decodes only these (quarantined rows are re-read whole)."""

    def file_patterns(self, split: str) -> list[str]:
        # The hub keeps the train split as one JSON-lines file per prompt source at the repo root.
        return ["*.jsonl"] if split == "train" else []

    def clean(self, raw: pa.Table, options: CleanOptions, *, split: str) -> CleanResult:
        _check_schema(raw.schema)
        batches = raw.to_batches(max_chunksize=_BATCH_ROWS)
        return self.clean_batches(batches, raw.num_rows, options, split=split, numbers=row_numbers(raw))

    def clean_batches(
        self,
        batches: Iterable[pa.RecordBatch],
        n_rows: int,
        options: CleanOptions,
        *,
        split: str,
        numbers: np.ndarray | None = None,
    ) -> CleanResult:
        """``clean`` over raw batches streamed from the files, so the raw table is never whole.

        ``n_rows`` (all batches together) fixes the seeded draws; rows are numbered in
        order unless ``numbers`` gives their raw row numbers.
        """
        numbers = np.arange(n_rows, dtype=np.int64) if numbers is None else numbers
        u = np.random.default_rng(options.seed).random(n_rows)
        outs, start = [], 0
        for batch in batches:
            if start == 0:
                _check_schema(batch.schema)
            n = batch.num_rows
            sl = slice(start, start + n)
            outs.append(_clean_batch(batch, numbers[sl], u[sl], options, split, self.name))
            start += n
        if start != n_rows:
            raise ValueError(f"ultrafeedback: batches held {start} rows, expected {n_rows}")
        rules = pairing_rules(options.pairing or BEST_VS_RANDOM)
        dropped = dict.fromkeys((k for k in RULES if k in rules or k in (TOO_FEW, PER_PROMPT_CAP)), 0)
        for o in outs:
            for k, v in o.dropped.items():
                dropped[k] += v
        if options.per_prompt is None:
            del dropped[PER_PROMPT_CAP]
        quarantine = quarantine_table(
            self.name,
            [r for o in outs for r in o.q_rows],
            [r for o in outs for r in o.q_reasons],
            [r for o in outs for r in o.q_raw],
        )
        result = CleanResult(
            source=self.name,
            rows_in=sum(o.units for o in outs),
            pairs=pa.concat_tables([o.pairs for o in outs]) if outs else _no_pairs(self.name, split),
            quarantine=quarantine,
            dropped=dropped,
            unit="candidate",
            raw_rows=n_rows,
        )
        result.check_accounting()
        return result
