"""Property-based fuzzing of the RewardBench loader (``load_rewardbench`` on JSONL and Parquet files).

Generated files in the hub schema (``prompt, chosen, chosen_model, rejected,
rejected_model, subset, id``), many rows damaged: texts empty, huge, of the wrong type
or null, ids missing / fractional / infinite / huge, subsets unknown, lines that are not
JSON or not UTF-8. What must hold for every file:

- either the loader refuses the file with a ``RewardBenchDataError`` naming it (the
  benchmark is never scored from a file it had to guess at), or
- every row is scored or excluded with a reason (``rows_in == scored + excluded``), every
  scored row has non-empty text prompt and answers, a known subset and a unique
  (subset, id) key, and the per-row scores table validates against its contract and
  aggregates without error.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fuzz_strategies import (  # noqa: F401 (websockets_own_random: fixture, used by name)
    BAD_LINES,
    FUZZ_SETTINGS,
    JUNK,
    SHORT,
    TEXT,
    encode_row,
    websockets_own_random,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from data_contracts import REWARDBENCH_SCORES, validate
from rmcore.evaluate.config import EvalConfig
from rmcore.evaluate.official import KNOWN_SUBSETS
from rmcore.evaluate.rewardbench import scores_table, summarize_rewardbench
from rmcore.evaluate.rewardbench_data import RewardBenchDataError, load_rewardbench

pytestmark = pytest.mark.usefixtures("websockets_own_random")

SUBSETS = ("alpacaeval-easy", "hep-go", "donotanswer", "math-prm")
FIELDS = ("prompt", "chosen", "chosen_model", "rejected", "rejected_model", "subset", "id")
TEXT_FIELDS = ("prompt", "chosen", "rejected")


@st.composite
def rewardbench_rows(draw: st.DrawFn) -> list[dict]:
    """Rows with unique ids; about one in six damaged in one field (a file-level refusal is often right)."""
    n = draw(st.integers(5, 30))
    rows = []
    for i in range(n):
        row = {
            "prompt": draw(st.one_of(SHORT, TEXT)),
            "chosen": draw(st.one_of(SHORT, TEXT)),
            "chosen_model": "m1",
            "rejected": draw(st.one_of(SHORT, TEXT)),
            "rejected_model": "m2",
            "subset": draw(st.sampled_from(SUBSETS)),
            "id": i,
        }
        if draw(st.integers(0, 5)) == 0:
            field = draw(st.sampled_from(FIELDS + TEXT_FIELDS * 3))  # texts damaged most often
            if draw(st.integers(0, 3)) == 0:
                del row[field]
            else:
                row[field] = draw(
                    st.one_of(JUNK, st.sampled_from((1.5, float("inf"), 2**70, "7", "unknown-subset")))
                )
        rows.append(row)
    return rows


def _column(values: list) -> pa.Array:
    """The values as Parquet would hold them; a column pyarrow cannot type becomes JSON text."""
    try:
        return pa.array(values)
    except (pa.ArrowException, OverflowError, UnicodeError):
        return pa.array([json.dumps(v) for v in values])


def check_loaded(path: Path, rows_in: int) -> str:
    """Load ``path``; check the properties; return the outcome ("scored" or "refused")."""
    try:
        rows = load_rewardbench(path)
    except RewardBenchDataError as e:
        assert str(path) in str(e), f"error does not name the file: {e}"
        return "refused"
    frame = rows.frame
    assert rows.rows_in == rows_in == len(frame) + len(rows.exclusions)
    for ex in rows.exclusions:
        assert ex["reason"] and 0 <= ex["row"] < rows_in
    for column in ("prompt", "chosen", "rejected"):
        assert all(isinstance(v, str) and v.strip() for v in frame[column]), column
    assert set(frame["subset"]) <= set(KNOWN_SUBSETS)
    assert not frame.duplicated(["subset", "id"]).any()
    rng = np.random.default_rng(0)
    c, r = rng.normal(size=len(frame)), rng.normal(size=len(frame))
    validate(scores_table(frame, c, r), REWARDBENCH_SCORES)
    if len(frame):
        summary = summarize_rewardbench(rows, c, r, EvalConfig(allow_missing_subsets=True, plots=False))
        assert summary["rows_scored"] == len(frame) and not summary["complete"]
    return "scored"


def test_jsonl_files_are_scored_row_by_row_or_refused_naming_the_file() -> None:
    seen = Counter()

    @settings(FUZZ_SETTINGS, max_examples=80)
    @given(rows=rewardbench_rows(), bad=st.lists(st.sampled_from(BAD_LINES), max_size=1))
    def check(rows: list[dict], bad: list[bytes]) -> None:
        lines = [encode_row(r) for r in rows] + bad
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "filtered.jsonl"
            path.write_bytes(b"\n".join(lines) + b"\n")
            seen[check_loaded(path, len(lines))] += 1
            seen["rows"] += len(lines)

    check()
    assert seen["rows"] >= 1000 and seen["scored"] >= 5 and seen["refused"] >= 5, seen


def test_parquet_files_are_scored_row_by_row_or_refused_naming_the_file() -> None:
    seen = Counter()

    @settings(FUZZ_SETTINGS, max_examples=60)
    @given(rows=rewardbench_rows())
    def check(rows: list[dict]) -> None:
        table = pa.table({k: _column([r.get(k) for r in rows]) for k in FIELDS})
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "filtered.parquet"
            pq.write_table(table, path)
            seen[check_loaded(path, table.num_rows)] += 1
            seen["rows"] += table.num_rows

    check()
    assert seen["rows"] >= 600 and seen["scored"] >= 10, seen


# ---------------------------------------------------------------- regressions: rows the fuzzer found

GOOD = {"prompt": "p", "chosen": "c", "chosen_model": "a", "rejected": "r", "rejected_model": "b"}


def _jsonl(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "rb.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_a_non_text_answer_is_excluded_not_scored_as_its_repr(tmp_path: Path) -> None:
    # Was: str(["x"]) == "['x']" was scored as if it were the answer.
    rows = [{**GOOD, "subset": "hep-go", "id": 1}, {**GOOD, "chosen": ["x"], "subset": "hep-go", "id": 2}]
    loaded = load_rewardbench(_jsonl(tmp_path, rows))
    assert loaded.frame["id"].tolist() == [1]
    assert [(e["id"], e["reason"]) for e in loaded.exclusions] == [(2, "chosen is not text (list)")]


@pytest.mark.parametrize("bad_id", [float("inf"), 1e30])
def test_an_infinite_or_huge_id_is_an_error_naming_the_rows(tmp_path: Path, bad_id: float) -> None:
    # Was: pandas IntCastingNaNError (inf) or a silently wrapped int64 (1e30) as the row key.
    path = tmp_path / "rb.parquet"
    pq.write_table(
        pa.table({**{k: [v, v] for k, v in GOOD.items()}, "subset": ["hep-go"] * 2, "id": [1.0, bad_id]}),
        path,
    )
    with pytest.raises(
        RewardBenchDataError, match=re.escape(str(path)) + ".*non-integer id, e.g. rows \\[1\\]"
    ):
        load_rewardbench(path)


@pytest.mark.parametrize(
    "blob",
    [b'{"prompt": "\xc3(", "id": 1}\n', b"{not json\n", b'{"id": 1}\n[1, 2]\n'],
    ids=["utf8", "json", "mixed"],
)
def test_an_unreadable_jsonl_file_is_an_error_naming_it(tmp_path: Path, blob: bytes) -> None:
    # Was: UnicodeDecodeError / pandas ValueError("Expected object or value") without the file name.
    path = tmp_path / "rb.jsonl"
    path.write_bytes(blob)
    with pytest.raises(RewardBenchDataError, match=re.escape(str(path))):
        load_rewardbench(path)


def test_pandas_frame_of_a_good_file_is_unchanged(tmp_path: Path) -> None:
    rows = [{**GOOD, "subset": s, "id": i} for i, s in enumerate(SUBSETS)]
    loaded = load_rewardbench(_jsonl(tmp_path, rows))
    assert loaded.exclusions == [] and loaded.frame["subset"].tolist() == list(SUBSETS)
    assert isinstance(loaded.frame, pd.DataFrame) and loaded.rows_in == 4
