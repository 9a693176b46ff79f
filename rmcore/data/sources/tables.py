"""Shared pieces of the adapters: field checks, the row-by-row cleaning loop, table builders.

Row-wise adapters write one function ``row -> pair`` that raises ``Drop(rule)`` for a
row a recipe rule removes and ``Quarantine(code, detail)`` for a row that is broken
(missing field, wrong type, NaN score, unparseable text). ``clean_rows`` runs it over
the raw table, applies the per-prompt cap and returns a checked ``CleanResult``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from data_contracts.schemas import PAIRS, QUARANTINE
from rmcore.data.pairing import PER_PROMPT_CAP, canonical_json, cap_per_group, group_codes, pair_id
from rmcore.data.sources.base import CleanOptions, CleanResult

SOURCE_ROW = "__source_row__"
"""Column ``read_raw`` adds: the row's number in the raw input (files in sorted order, 0-based)."""

ROLES = ("system", "user", "assistant")
Message = dict[str, str]


class Drop(Exception):
    """A recipe rule removes this row (counted under ``rule`` in ``dropped``)."""

    def __init__(self, rule: str) -> None:
        super().__init__(rule)
        self.rule = rule


class Quarantine(Exception):
    """The row is broken; it goes to the quarantine table with ``code: detail``."""

    def __init__(self, code: str, detail: str = "") -> None:
        super().__init__(f"{code}: {detail}" if detail else code)
        self.reason = str(self)


# ---------------------------------------------------------------- field checks


def require_str(row: dict[str, Any], name: str) -> str:
    value = row.get(name)
    if value is None:
        raise Quarantine("missing_field", name)
    if not isinstance(value, str):
        raise Quarantine("wrong_type", f"{name} is {type(value).__name__}, expected string")
    return value


def require_number(row: dict[str, Any], name: str) -> float:
    value = row.get(name)
    if value is None:
        raise Quarantine("missing_field", name)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Quarantine("wrong_type", f"{name} is {type(value).__name__}, expected a number")
    if math.isnan(value) or math.isinf(value):
        raise Quarantine("nan_score", f"{name} is {value}")
    return float(value)


def require_messages(row: dict[str, Any], name: str) -> list[Message]:
    """A non-empty list of {role, content} with known roles, ending with the assistant's answer."""
    value = row.get(name)
    if value is None:
        raise Quarantine("missing_field", name)
    if not isinstance(value, list) or not value:
        raise Quarantine("wrong_type", f"{name} must be a non-empty list of messages")
    out = []
    for i, m in enumerate(value):
        if not isinstance(m, dict) or not isinstance(m.get("content"), str) or m.get("role") not in ROLES:
            raise Quarantine(
                "bad_message", f"{name}[{i}] is not a {{role, content}} message with a known role"
            )
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "assistant":
        raise Quarantine("not_ending_with_assistant", f"{name} ends with a {out[-1]['role']} turn")
    return out


def single_turn(prompt: str, answer: str, system: str | None = None) -> tuple[list[Message], list[Message]]:
    """(prompt messages, prompt + answer) for one user turn, with an optional system turn."""
    head = [{"role": "system", "content": system}] if system else []
    msgs = head + [{"role": "user", "content": prompt}]
    return msgs, msgs + [{"role": "assistant", "content": answer}]


def typed_column(
    column: pa.Array | pa.ChunkedArray, name: str, kind: str
) -> tuple[np.ndarray, str, pa.Array | pa.ChunkedArray]:
    """Check a whole column's Arrow type for the vectorised adapters (``kind``: "text" or "number").

    Returns (mask of rows whose value has the wrong type, the quarantine reason for them,
    the column as the expected type). A JSON mirror gives a column the type most of its
    rows have, so a column of another type means every non-null value in it is wrong.
    """
    t = column.type
    if kind == "text":
        ok, target = pa.types.is_string(t) or pa.types.is_large_string(t), pa.string()
    else:
        ok, target = pa.types.is_integer(t) or pa.types.is_floating(t), pa.float64()
    if ok or pa.types.is_null(t):
        return np.zeros(len(column), dtype=bool), "", column if ok else column.cast(target)
    mask = pc.is_valid(column).to_numpy(zero_copy_only=False).astype(bool)
    reason = f"wrong_type: {name} is {t}, expected {'a string' if kind == 'text' else 'a number'}"
    return mask, reason, pa.nulls(len(column), target)


# ---------------------------------------------------------------- tables


def raw_json(row: dict[str, Any]) -> str:
    """The raw row as JSON text for the quarantine table (nothing lost, non-JSON values as str)."""
    return json.dumps({k: v for k, v in row.items() if k != SOURCE_ROW}, ensure_ascii=False, default=str)


def quarantine_table(source: str, rows: list[int], reasons: list[str], raws: list[str]) -> pa.Table:
    return pa.Table.from_pydict(
        {"source": [source] * len(rows), "source_row": rows, "reason": reasons, "raw": raws},
        schema=QUARANTINE.schema,
    )


def pairs_table(source: str, split: str, pairs: list[dict[str, Any]]) -> pa.Table:
    """Pair-contract table from dicts with prompt, chosen, rejected, scores and source_row."""
    cols: dict[str, list[Any]] = {f.name: [] for f in PAIRS.full_schema}
    for p in pairs:
        cols["pair_id"].append(pair_id(source, p["chosen"], p["rejected"]))
        cols["source"].append(source)
        cols["split"].append(split)
        for name in ("prompt", "chosen", "rejected", "chosen_score", "rejected_score", "source_row"):
            cols[name].append(p[name])
    return pa.Table.from_pydict(cols, schema=PAIRS.full_schema)


def row_numbers(table: pa.Table) -> np.ndarray:
    if SOURCE_ROW in table.column_names:
        return table.column(SOURCE_ROW).to_numpy(zero_copy_only=False).astype(np.int64)
    return np.arange(table.num_rows, dtype=np.int64)


# ---------------------------------------------------------------- the row loop


def clean_rows(
    source: str,
    split: str,
    table: pa.Table,
    convert: Callable[[dict[str, Any]], dict[str, Any]],
    *,
    rules: Iterable[str],
    options: CleanOptions,
    cap: int | None = None,
    cap_key: Callable[[dict[str, Any]], str] | None = None,
) -> CleanResult:
    """Run ``convert`` over every raw row; cap pairs per prompt; account for every row.

    ``convert`` returns prompt/chosen/rejected/chosen_score/rejected_score or raises
    Drop / Quarantine. ``cap`` (default ``options.per_prompt``) keeps at most that many
    pairs per ``cap_key`` (default: the prompt messages), a seeded choice.
    """
    dropped = dict.fromkeys(rules, 0)
    pairs: list[dict[str, Any]] = []
    keys: list[str] = []
    q_rows: list[int] = []
    q_reasons: list[str] = []
    q_raw: list[str] = []
    numbers = row_numbers(table)
    for n, row in zip(
        numbers.tolist(),
        table.drop_columns([c for c in (SOURCE_ROW,) if c in table.column_names]).to_pylist(),
    ):
        try:
            pair = convert(row)
        except Drop as d:
            dropped[d.rule] = dropped.get(d.rule, 0) + 1
            continue
        except Quarantine as q:
            q_rows.append(n)
            q_reasons.append(q.reason)
            q_raw.append(raw_json(row))
            continue
        pair["source_row"] = n
        pairs.append(pair)
        keys.append(cap_key(row) if cap_key else canonical_json(pair["prompt"]))
    cap = options.per_prompt if cap is None else cap
    if cap is not None:
        keep = cap_per_group(group_codes(pa.array(keys, pa.string())), cap, options.seed)
        dropped[PER_PROMPT_CAP] = int((~keep).sum())
        pairs = [p for p, k in zip(pairs, keep.tolist()) if k]
    result = CleanResult(
        source=source,
        rows_in=table.num_rows,
        pairs=pairs_table(source, split, pairs),
        quarantine=quarantine_table(source, q_rows, q_reasons, q_raw),
        dropped=dropped,
    )
    result.check_accounting()
    return result


# ---------------------------------------------------------------- vectorised single-turn pairs

_CHUNK_PAIRS = 200_000


def _messages(roles: tuple[str, ...], contents: list[pa.Array]) -> pa.ListArray:
    """A list<{role, content}> array: row i holds (roles[j], contents[j][i]) for each j."""
    k, m = len(contents[0]), len(contents)
    if m == 1:
        content = contents[0]
    else:
        order = (np.arange(m)[None, :] * k + np.arange(k)[:, None]).ravel()
        content = pa.concat_arrays(contents).take(pa.array(order))
    role = pa.array(roles, pa.string()).take(pa.array(np.tile(np.arange(m), k)))
    values = pa.StructArray.from_arrays([role, content], names=["role", "content"])
    return pa.ListArray.from_arrays(pa.array(np.arange(0, m * k + 1, m, dtype=np.int32)), values)


def single_turn_pairs_table(
    source: str,
    split: str,
    prompts: pa.Array,
    prompt_of_pair: np.ndarray,
    answers: pa.Array,
    chosen: np.ndarray,
    rejected: np.ndarray,
    scores: np.ndarray,
    source_row: np.ndarray,
) -> pa.Table:
    """Pair-contract table for one-user-turn pairs, built column-wise (no Python per row but the hash).

    ``prompts[prompt_of_pair[i]]`` is pair i's prompt; ``answers[chosen[i]]`` and
    ``answers[rejected[i]]`` its two answers, ``scores`` indexed like ``answers``.
    Ids equal ``pairing.pair_id`` on the same messages.
    """
    from rmcore.data.pairing import json_escape, single_turn_pair_ids

    chunks = []
    for lo in range(0, max(len(chosen), 1), _CHUNK_PAIRS):
        sl = slice(lo, lo + _CHUNK_PAIRS)
        p_txt = prompts.take(pa.array(prompt_of_pair[sl]))
        c_txt, r_txt = answers.take(pa.array(chosen[sl])), answers.take(pa.array(rejected[sl]))
        ids = single_turn_pair_ids(source, json_escape(p_txt), json_escape(c_txt), json_escape(r_txt))
        n = len(p_txt)
        cols = {
            "pair_id": ids,
            "source": pa.array([source] * n, pa.string()),
            "prompt": _messages(("user",), [p_txt]),
            "chosen": _messages(("user", "assistant"), [p_txt, c_txt]),
            "rejected": _messages(("user", "assistant"), [p_txt, r_txt]),
            "chosen_score": pa.array(scores[chosen[sl]], pa.float64()),
            "rejected_score": pa.array(scores[rejected[sl]], pa.float64()),
            "split": pa.array([split] * n, pa.string()),
            "source_row": pa.array(source_row[sl], pa.int64()),
        }
        chunks.append(pa.Table.from_pydict(cols, schema=PAIRS.full_schema))
    return pa.concat_tables(chunks)
