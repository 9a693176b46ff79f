"""JSON-lines (and JSON-array) files of a mirror -> Arrow rows, keeping every bad line.

Lines that do not parse, are not objects, or whose types disagree with the other rows come
back as bad rows (row number, reason, raw text) for the cleaner to quarantine, never dropped.
"""

from __future__ import annotations

import gzip
import json
import lzma
import math
from collections import Counter
from pathlib import Path
from typing import Any

import pyarrow as pa

from rmcore.data.sources.tables import SOURCE_ROW


def _json_array(data: bytes) -> list[Any] | None:
    """The items of a file holding one JSON array (objects, or several lines), else None (JSON lines)."""
    if not data.lstrip().startswith(b"["):
        return None
    try:
        items = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None  # e.g. JSON lines whose first line is an array: read line by line
    if not isinstance(items, list):
        return None
    if b"\n" not in data.strip() and not all(isinstance(x, dict) for x in items):
        return None  # one JSON line holding an array: one (bad) row, not several
    return items


def _json_rows(
    path: Path, first_row: int
) -> tuple[list[dict[str, Any]], list[int], list[tuple[int, str, str]]]:
    """Rows of a JSON-lines file (or one JSON array), their numbers, and the bad lines.

    Lines are split on ``\\n`` only (a raw U+2028 or NEL inside a JSON string is text, not a
    line break) and decoded one by one, so a line of invalid UTF-8 is one quarantined row.
    """
    opener = {".gz": gzip.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "rb") as f:
        data = f.read()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]  # a UTF-8 byte-order mark is not part of the first row
    items = _json_array(data)
    if items is not None:
        lines = [
            (i + 1, json.dumps(x, ensure_ascii=False).encode("utf-8", "surrogatepass"))
            for i, x in enumerate(items)
        ]
    else:
        lines = [(i + 1, line) for i, line in enumerate(data.split(b"\n")) if line.strip()]
    rows, numbers, bad = [], [], []
    for n, (line_no, raw) in enumerate(lines, start=first_row):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            text = raw.decode("utf-8", "backslashreplace")  # the bytes stay visible, nothing lost
            bad.append((n, f"invalid_utf8: {path.name} line {line_no}: {e}", text))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            bad.append((n, f"invalid_json: {path.name} line {line_no}: {e}", line))
            continue
        if not isinstance(obj, dict):
            bad.append((n, f"not_an_object: {path.name} line {line_no} is a JSON {type(obj).__name__}", line))
            continue
        rows.append(obj)
        numbers.append(n)
    return rows, numbers, bad


_UNREADABLE = (
    pa.ArrowInvalid,
    pa.ArrowTypeError,
    pa.ArrowNotImplementedError,
    OverflowError,
    UnicodeEncodeError,
)
"""What pyarrow raises for a row it cannot hold: mixed types, huge ints, lone surrogates (``"\\ud800"``)."""


def _row_json(row: dict[str, Any]) -> str:
    """A row as JSON text for the quarantine table; ASCII-escaped if it holds lone surrogates."""
    text = json.dumps(row, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(row)
    return text


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    """Every key of every row, in order of first appearance (not only the first row's keys)."""
    return list(dict.fromkeys(k for row in rows for k in row))


def _has_null(t: pa.DataType) -> bool:
    if pa.types.is_null(t):
        return True
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return _has_null(t.value_type)
    if pa.types.is_struct(t):
        return any(_has_null(t.field(i).type) for i in range(t.num_fields))
    return False


def _majority_schema(rows: list[dict[str, Any]]) -> pa.Schema:
    """Per column, the Arrow type most rows have (null-typed values do not vote).

    Integers and floats vote together: a column holding 4 and 4.5 is a float column.
    A value with a null inside (``[]``, a struct with a null field) votes only as a last resort.
    """
    votes: dict[str, Counter] = {name: Counter() for name in _columns(rows)}
    floats: set[str] = set()
    for row in rows:
        try:
            schema = pa.Table.from_pylist([row]).schema
        except _UNREADABLE:
            continue
        for f in schema:
            if pa.types.is_floating(f.type):
                floats.add(f.name)
            if not pa.types.is_null(f.type):
                number = pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
                votes[f.name]["number" if number else f.type] += 1
    fields = []
    for name, counter in votes.items():
        # Types with a null inside ([] is list<null>) only win when no fully typed value voted.
        full = Counter({t: c for t, c in counter.items() if t == "number" or not _has_null(t)})
        kind = (full or counter).most_common(1)[0][0] if counter else pa.null()
        if kind == "number":
            kind = pa.float64() if name in floats else pa.int64()
        fields.append((name, kind))
    return pa.schema(fields)


def _same(value: Any, held: Any) -> bool:
    """Whether Arrow holds ``value`` unchanged (missing keys and nulls alike; NaN equals NaN)."""
    if isinstance(value, dict):
        return isinstance(held, dict) and all(_same(value.get(k), held.get(k)) for k in {*value, *held})
    if isinstance(value, list):
        return isinstance(held, list) and len(value) == len(held) and all(map(_same, value, held))
    if isinstance(value, float) and math.isnan(value):
        return isinstance(held, float) and math.isnan(held)
    return value == held and isinstance(value, str) == isinstance(held, str)


def rows_to_table(
    rows: list[dict[str, Any]], numbers: list[int], where: str
) -> tuple[pa.Table, list[tuple[int, str, str]]]:
    """Rows -> one Arrow table; rows whose types disagree with the majority become bad rows."""
    names = _columns(rows)
    try:
        columns = {k: [row.get(k) for row in rows] for k in names}
        return pa.Table.from_pydict({**columns, SOURCE_ROW: pa.array(numbers, pa.int64())}), []
    except _UNREADABLE:
        pass
    schema = _majority_schema(rows)
    good, good_numbers, bad = [], [], []
    for row, n in zip(rows, numbers):
        try:
            held = pa.Table.from_pylist([row], schema=schema).to_pylist()[0]
        except _UNREADABLE as e:
            bad.append((n, f"wrong_type: {where}: {str(e).splitlines()[0]}", _row_json(row)))
            continue
        if not _same(row, held):  # pyarrow read "" or [] as a struct of nulls, or dropped a field
            bad.append(
                (n, f"wrong_type: {where}: a value does not fit the column types {schema}", _row_json(row))
            )
            continue
        good.append(row)
        good_numbers.append(n)
    numbered = [{**row, SOURCE_ROW: n} for row, n in zip(good, good_numbers)]  # rows of {} count too
    return pa.Table.from_pylist(numbered, schema=schema.append(pa.field(SOURCE_ROW, pa.int64()))), bad
