"""Rated responses for multi-objective regression (ArmoRM's first stage), from HelpSteer.

HelpSteer rates every response on five attributes, 0-4 (helpfulness, correctness, coherence,
complexity, verbosity). A regression reward model learns all five from one backbone; the rows
here are the RATED_RESPONSES contract: one response per row, as the whole conversation
(the user prompt, then the answer), with each rating as a float or null.

Every raw row is kept or quarantined (nothing is dropped silently):
- a missing or non-text prompt/response, or an empty answer: quarantined (``missing_field``,
  ``wrong_type``, ``empty_response``);
- a rating outside 0-4: quarantined (``rating_out_of_range: <attribute>``);
- a missing or NaN rating: kept, the value null (masked in the loss; the other ratings train).
A row with no rating at all is quarantined (``no_rating``): it has nothing to learn from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_contracts import RATED_ATTRIBUTES, RATED_RESPONSES, validate
from rmcore.data.sources.tables import quarantine_table, raw_json, row_numbers, typed_column
from rmcore.io import digest_strings

RATING_RANGE = (0.0, 4.0)


@dataclass(frozen=True)
class RatedResult:
    rows_in: int
    responses: pa.Table
    quarantine: pa.Table
    missing_ratings: dict[str, int]
    """Kept rows whose rating of an attribute is null (masked in the loss)."""


def rated_responses(raw: pa.Table, *, source: str = "helpsteer", split: str = "train") -> RatedResult:
    """The RATED_RESPONSES table of a HelpSteer raw table, and its quarantine."""
    numbers = row_numbers(raw)
    reasons: dict[int, str] = {}
    texts = {}
    for name in ("prompt", "response"):
        if name not in raw.column_names:
            raise ValueError(f"HelpSteer raw table has no {name!r} column (columns: {raw.column_names})")
        wrong, why, col = typed_column(raw.column(name), name, "text")
        for i in np.flatnonzero(wrong):
            reasons.setdefault(int(i), why)
        for i in np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False)):
            reasons.setdefault(int(i), f"missing_field: {name}")
        texts[name] = col.to_pylist() if isinstance(col, pa.Array) else col.combine_chunks().to_pylist()
    for i, answer in enumerate(texts["response"]):
        if answer is not None and not answer.strip():
            reasons.setdefault(i, "empty_response")
    ratings = {}
    for name in RATED_ATTRIBUTES:
        if name not in raw.column_names:
            ratings[name] = np.full(raw.num_rows, np.nan)
            continue
        wrong, why, col = typed_column(raw.column(name), name, "number")
        for i in np.flatnonzero(wrong):
            reasons.setdefault(int(i), why)
        values = pc.cast(col, pa.float64()).to_numpy(zero_copy_only=False).astype(np.float64)
        lo, hi = RATING_RANGE
        for i in np.flatnonzero(~np.isnan(values) & ((values < lo) | (values > hi))):
            reasons.setdefault(int(i), f"rating_out_of_range: {name}")
        ratings[name] = values
    rated = np.column_stack([ratings[n] for n in RATED_ATTRIBUTES])
    for i in np.flatnonzero(np.isnan(rated).all(axis=1)):
        reasons.setdefault(int(i), "no_rating")
    keep = [i for i in range(raw.num_rows) if i not in reasons]
    rows = []
    for i in keep:
        prompt = [{"role": "user", "content": texts["prompt"][i]}]
        conversation = [*prompt, {"role": "assistant", "content": texts["response"][i]}]
        row = {
            "response_id": digest_strings(source, split, texts["prompt"][i], texts["response"][i], str(numbers[i])),
            "source": source,
            "prompt": prompt,
            "conversation": conversation,
            "split": split,
            "source_row": int(numbers[i]),
        }
        row.update({n: None if np.isnan(ratings[n][i]) else float(ratings[n][i]) for n in RATED_ATTRIBUTES})
        rows.append(row)
    table = validate(pa.Table.from_pylist(rows, schema=RATED_RESPONSES.schema), RATED_RESPONSES, where=source)
    q = sorted(reasons)
    quarantine = quarantine_table(
        source, [int(numbers[i]) for i in q], [reasons[i] for i in q], [raw_json(raw.slice(i, 1).to_pylist()[0]) for i in q]
    )
    missing = {n: int(np.isnan(ratings[n][keep]).sum()) for n in RATED_ATTRIBUTES}
    return RatedResult(raw.num_rows, table, quarantine, missing)
