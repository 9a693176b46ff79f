"""Property-based fuzzing of every source parser, through the entry points the pipeline uses.

Rows in each source's hub schema, many of them damaged (tests/fuzz_strategies.py), are
written as mirror files and cleaned by ``clean_source`` (read_raw + adapter.clean +
quarantine of unreadable lines), or handed to ``adapter.clean`` as a typed Arrow table.
What must hold for every generated file:

- every raw row is kept, dropped by a named rule or quarantined with a reason code:
  ``rows_in == kept + sum(dropped) + quarantined`` and the row numbers add up;
- the pairs and quarantine tables validate against their contracts, and every pair is a
  real comparison (one prompt, two different answers, finite or null scores);
- the only exception allowed is a clear ValueError naming the file, for a file whose
  columns do not match the source's schema.

Regression tests at the end pin the exact rows the fuzzer found breaking the parsers.
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import tempfile
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fuzz_strategies import (
    FUZZ_SETTINGS,
    TEXT,
    VALID_ROWS,
    encode_row,
    file_lines,
    mirror_file,
    mutated,
    rows_for,
    websockets_own_random,  # noqa: F401 (fixture, used by name)
    write_mirror,
)
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.errors import HypothesisDeprecationWarning

from data_contracts import PAIRS, QUARANTINE, validate
from rmcore.data.sources import CleanOptions, CleanResult, clean_source, get_adapter

pytestmark = pytest.mark.usefixtures("websockets_own_random")

SOURCES = tuple(VALID_ROWS)
"""One adapter per parser (the hh-rlhf subsets and the two PKU datasets share theirs)."""
ROW_WISE = ("hh-rlhf/helpful-base", "shp", "capybara", "orca", "pku-saferlhf")
"""Sources where one raw row is one candidate pair (accounting unit ``row``)."""
REASON = re.compile(r"^[a-z][a-z0-9_]*(: .+)?$", re.DOTALL)
RULE = re.compile(r"^[a-z][a-z0-9_]*$")
def options_for(source: str):
    """Clean options the source takes (``pairing`` only where it draws pairs from several responses)."""
    pairings = (None, "best-vs-random", "all-pairs") if "pairing" in get_adapter(source).options else (None,)
    return st.builds(
        CleanOptions,
        pairing=st.sampled_from(pairings),
        per_prompt=st.sampled_from((None, None, 1, 2)),
        seed=st.integers(0, 3),
    )


def check_result(result: CleanResult, rows: int) -> None:
    """The properties every cleaning of ``rows`` raw rows must have."""
    result.check_accounting()
    pairs = validate(result.pairs, PAIRS, where="pairs")
    quarantine = validate(result.quarantine, QUARANTINE, where="quarantine")
    raw_rows = result.rows_in if result.unit == "row" else result.raw_rows
    assert raw_rows == rows, f"{rows} rows in the files, {raw_rows} read"
    q_rows = quarantine["source_row"].to_pylist()
    assert len(set(q_rows)) == len(q_rows) and all(0 <= r < rows for r in q_rows)
    for reason in quarantine["reason"].to_pylist():
        assert REASON.match(reason), f"quarantine reason without a code: {reason!r}"
    for rule, count in result.dropped.items():
        assert RULE.match(rule) and count >= 0, (rule, count)
    p_rows = pairs["source_row"].to_pylist()
    assert all(0 <= r < rows for r in p_rows) and not set(p_rows) & set(q_rows)
    if result.unit == "row":
        assert len(set(p_rows)) == len(p_rows)
    for p in pairs.select(["prompt", "chosen", "rejected", "chosen_score", "rejected_score"]).to_pylist():
        check_pair(p)


def check_pair(p: dict) -> None:
    chosen, rejected, prompt = p["chosen"], p["rejected"], p["prompt"]
    assert chosen != rejected and chosen[:-1] == prompt == rejected[:-1]
    assert chosen[-1]["role"] == rejected[-1]["role"] == "assistant"
    assert all(isinstance(m["content"], str) for m in chosen + rejected)
    for s in (p["chosen_score"], p["rejected_score"]):
        assert s is None or math.isfinite(s)


def clean_or_clear_error(source: str, data_dir: Path, options: CleanOptions, split: str = "train"):
    """clean_source's result, or None after a clear file-level error (a ValueError naming the file)."""
    try:
        return clean_source(source, split, options, data_dir)
    except ValueError as e:
        if isinstance(e, (pa.ArrowException, UnicodeError)) or str(data_dir) not in str(e):
            raise
        return None


# ---------------------------------------------------------------- JSON-lines mirrors


@pytest.mark.parametrize("source", SOURCES)
def test_jsonl_mirror_every_row_accounted_for(source: str) -> None:
    seen = Counter()

    @settings(FUZZ_SETTINGS, max_examples=50)
    @given(files=st.lists(file_lines(source), min_size=1, max_size=2), gz=st.booleans(), options=options_for(source))
    def check(files: list[list[bytes]], gz: bool, options: CleanOptions) -> None:
        if "*" not in get_adapter(source).file_patterns("train")[0]:
            files = files[:1]  # the source keeps one file per split
        with tempfile.TemporaryDirectory() as tmp:
            rows = write_mirror(source, "train", Path(tmp), files, gz=gz)
            result = clean_or_clear_error(source, Path(tmp), options)
            seen["rows"] += rows
            if result is None:
                seen["file_errors"] += 1
                return
            check_result(result, rows)
            seen["kept"] += result.kept
            seen["quarantined"] += result.quarantined

    check()
    # The fuzzing reached every fate, on thousands of rows per parser.
    assert seen["rows"] >= 600 and seen["kept"] > 20 and seen["quarantined"] > 50, seen
    assert seen["file_errors"] <= seen["rows"] / 100, seen


@pytest.mark.parametrize("source", ROW_WISE)
def test_damaged_rows_do_not_change_the_fate_of_valid_rows(source: str) -> None:
    """A valid row is kept or not whatever damaged rows (fewer than the valid ones) sit beside it."""
    base = VALID_ROWS[source]
    options = CleanOptions(per_prompt=10**6)  # no cap: every row's fate is its own

    @settings(FUZZ_SETTINGS, max_examples=25)
    @given(valid=st.lists(base, min_size=2, max_size=12), data=st.data())
    def check(valid: list[dict], data: st.DataObject) -> None:
        damaged = data.draw(st.lists(mutated(base), min_size=1, max_size=len(valid) - 1))
        order = data.draw(st.permutations(range(len(valid) + len(damaged))))
        rows = [(valid + damaged)[i] for i in order]
        with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
            write_mirror(source, "train", Path(a), [[encode_row(r) for r in valid]])
            alone = clean_source(source, "train", options, Path(a))
            write_mirror(source, "train", Path(b), [[encode_row(r) for r in rows]])
            mixed = clean_source(source, "train", options, Path(b))
        position = {i: k for k, i in enumerate(order)}  # valid row i sits at line position[i]
        kept_alone = {position[p["source_row"]]: _content(p) for p in alone.pairs.to_pylist()}
        kept_mixed = {
            p["source_row"]: _content(p)
            for p in mixed.pairs.to_pylist()
            if order[p["source_row"]] < len(valid)
        }
        assert kept_mixed == kept_alone  # same rows kept, with the same texts and scores

    check()


def _content(pair: dict) -> tuple:
    return pair["pair_id"], pair["chosen_score"], pair["rejected_score"]


# ---------------------------------------------------------------- typed tables and Parquet mirrors


def fits(value: object, t: pa.DataType) -> bool:
    """Whether a column of type ``t`` holds ``value`` as it is: this test's own type rules, written
    from the Arrow types (not from rmcore's reader, so the two can disagree)."""
    if value is None:
        return True
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return isinstance(value, str) and _utf8(value)  # a lone surrogate cannot be stored
    if pa.types.is_boolean(t):
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False  # a bool in a numeric column would be read back as 0/1
    if pa.types.is_integer(t):
        return isinstance(value, int) and -(2**63) <= value < 2**63
    if pa.types.is_floating(t):
        return isinstance(value, float) or (isinstance(value, int) and abs(value) <= 2**53)
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return isinstance(value, list) and all(fits(v, t.value_type) for v in value)
    if pa.types.is_struct(t):
        names = {t.field(i).name for i in range(t.num_fields)}
        return (
            isinstance(value, dict)
            and set(value) <= names
            and all(fits(value.get(t.field(i).name), t.field(i).type) for i in range(t.num_fields))
        )
    return False


def _utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def typed_table(rows: list[dict], schema: pa.Schema) -> pa.Table:
    """Rows as a table of the source's own schema; values that do not fit it become null."""
    fixed = [{f.name: row.get(f.name) if fits(row.get(f.name), f.type) else None for f in schema} for row in rows]
    return pa.Table.from_pylist(fixed, schema=schema)


@pytest.mark.parametrize("source", SOURCES)
def test_typed_tables_with_nulls_nan_and_huge_values(source: str) -> None:
    """adapter.clean on a table in the hub's types (as Parquet holds it), nulls anywhere."""
    adapter = get_adapter(source)
    schema = _hub_schema(source)
    seen = Counter()

    @settings(FUZZ_SETTINGS, max_examples=20)
    @given(rows=rows_for(source), options=options_for(source))
    def check(rows: list[dict], options: CleanOptions) -> None:
        table = typed_table(rows, schema)
        result = adapter.clean(table, options, split="train")
        check_result(result, table.num_rows)
        seen["rows"] += table.num_rows
        seen["quarantined"] += result.quarantined

    check()
    assert seen["rows"] >= 250 and seen["quarantined"] > 20, seen


def _hub_schema(source: str) -> pa.Schema:
    """The Arrow schema of the source's valid rows (what a Parquet file of real rows holds)."""
    from hypothesis import find

    rows = find(
        st.lists(VALID_ROWS[source], min_size=3, max_size=3),
        lambda rows: not _has_null_type(pa.Table.from_pylist(rows).schema),
        settings=FUZZ_SETTINGS,
    )
    return pa.Table.from_pylist(rows).schema


def _has_null_type(schema: pa.Schema) -> bool:
    def null(t: pa.DataType) -> bool:
        if pa.types.is_null(t):
            return True
        if pa.types.is_list(t) or pa.types.is_large_list(t):
            return null(t.value_type)
        if pa.types.is_struct(t):
            return any(null(t.field(i).type) for i in range(t.num_fields))
        return False

    return any(null(f.type) for f in schema)


@pytest.mark.parametrize("source", ("capybara", "orca", "ultrafeedback"))
def test_parquet_mirror_every_row_accounted_for(source: str) -> None:
    """The Parquet path (projected columns, streamed batches for UltraFeedback, whole rows re-read)."""
    schema = _hub_schema(source)
    seen = Counter()

    @settings(FUZZ_SETTINGS, max_examples=20)
    @given(rows=rows_for(source), options=options_for(source))
    def check(rows: list[dict], options: CleanOptions) -> None:
        table = typed_table(rows, schema)
        with tempfile.TemporaryDirectory() as tmp:
            path = mirror_file(source, "train", Path(tmp), 0, ".parquet")
            path.parent.mkdir(parents=True)
            pq.write_table(table, path, row_group_size=7)
            result = clean_source(source, "train", options, Path(tmp))
        check_result(result, table.num_rows)
        for raw in result.quarantine["raw"].to_pylist():
            assert set(json.loads(raw)) == set(schema.names)  # the whole row, not the projection
        seen["rows"] += table.num_rows

    check()
    assert seen["rows"] >= 200, seen  # enough rows exercised (247 seen on a heavily loaded CI machine)


# ---------------------------------------------------------------- the strategies and the random module


@contextmanager
def websocket_pinger() -> Iterator[Callable[[], None]]:
    """A real websockets client connected to a real server on 127.0.0.1, both on an event loop in
    their own thread; yields ``ping()``, which sends one keepalive ping from that thread and waits
    for the pong, as Prefect's events client does every 20 s while a test session runs."""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import serve

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="pinger", daemon=True)
    thread.start()

    def run(coro):
        return asyncio.run_coroutine_threadsafe(coro, loop).result(timeout=60)

    async def drain(ws) -> None:
        async for _ in ws:
            pass

    async def open_pair():
        server = await serve(drain, "127.0.0.1", 0)
        port = next(iter(server.sockets)).getsockname()[1]
        return server, await connect(f"ws://127.0.0.1:{port}", ping_interval=None)

    async def ping_and_wait() -> None:
        await (await client.ping())

    async def close() -> None:
        await client.close()
        server.close()
        await server.wait_closed()

    server, client = run(open_pair())
    try:
        yield lambda: run(ping_and_wait())
    finally:
        run(close())
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=60)
        loop.close()


def test_a_keepalive_ping_in_another_thread_is_not_reported_as_random_use_by_a_strategy() -> None:
    """Each draw waits for a real websocket ping sent from another thread (the CI warning's cause)."""
    pings = Counter()
    with websocket_pinger() as ping:

        @st.composite
        def text_during_a_ping(draw: st.DrawFn) -> str:
            text = draw(TEXT)
            ping()
            pings["sent"] += 1
            return text

        @settings(FUZZ_SETTINGS, max_examples=5)
        @given(text=text_during_a_ping())
        def check(text: str) -> None:
            assert isinstance(text, str)

        with warnings.catch_warnings():
            warnings.simplefilter("error", HypothesisDeprecationWarning)
            check()
    assert pings["sent"] >= 5


# ---------------------------------------------------------------- regressions: rows the fuzzer found

HH = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: No"}


def _clean_lines(tmp_path: Path, source: str, lines: list[bytes], **options) -> CleanResult:
    rows = write_mirror(source, "train", tmp_path, [lines])
    result = clean_source(source, "train", CleanOptions(**options), tmp_path)
    check_result(result, rows)
    return result


def _codes(result: CleanResult) -> list[tuple[int, str]]:
    return [(r, why.split(":")[0]) for r, why in zip(result.quarantine["source_row"].to_pylist(), result.quarantine["reason"].to_pylist())]  # fmt: skip


def test_invalid_utf8_line_is_one_quarantined_row_not_a_crash(tmp_path: Path) -> None:
    # Was: UnicodeDecodeError for the whole file (nothing cleaned).
    result = _clean_lines(
        tmp_path, "hh-rlhf/helpful-base", [b'{"chosen": "\xc3( invalid utf-8"}', encode_row(HH)]
    )
    assert (result.rows_in, result.kept, _codes(result)) == (2, 1, [(0, "invalid_utf8")])
    assert "\\xc3(" in result.quarantine["raw"][0].as_py()  # the bytes kept visible


def test_first_line_holding_an_array_does_not_swallow_the_file(tmp_path: Path) -> None:
    # Was: the file read as one JSON document: 2 rows became 1 quarantined row (a row lost).
    result = _clean_lines(tmp_path, "hh-rlhf/helpful-base", [b"[1, 2]", encode_row(HH)])
    assert (result.rows_in, result.kept, _codes(result)) == (2, 1, [(0, "not_an_object")])


def test_line_separator_inside_a_string_is_not_a_line_break(tmp_path: Path) -> None:
    # Was: str.splitlines() split the row at U+2028: 1 valid row became 2 invalid_json rows.
    row = {
        "chosen": "\n\nHuman: a\u2028b\x85c\n\nAssistant: yes",
        "rejected": "\n\nHuman: a\u2028b\x85c\n\nAssistant: no",
    }
    result = _clean_lines(tmp_path, "hh-rlhf/helpful-base", [encode_row(row)])
    assert (result.rows_in, result.kept) == (1, 1)
    assert result.pairs["prompt"][0].as_py() == [{"role": "user", "content": "a\u2028b\x85c"}]


def test_columns_missing_from_the_first_row_are_still_read(tmp_path: Path) -> None:
    # Was: pyarrow took the columns from the first row only: every row lost 'rejected'.
    lines = [encode_row({"chosen": HH["chosen"]}), encode_row(HH), encode_row(HH)]
    result = _clean_lines(tmp_path, "hh-rlhf/helpful-base", lines)
    assert (result.kept, _codes(result)) == (2, [(0, "missing_field")])


def test_a_float_rating_beside_integer_ratings_survives_a_junk_row(tmp_path: Path) -> None:
    # Was: the junk row forced a per-column vote; int64 won and pyarrow silently truncated 4.5 to 4.
    def row(c: float, r: float) -> dict:
        return {"chosen": [{"role": "user", "content": "q"}, {"role": "assistant", "content": f"a{c}"}],
                "rejected": [{"role": "user", "content": "q"}, {"role": "assistant", "content": f"b{r}"}],
                "rating_chosen": c, "rating_rejected": r}  # fmt: skip

    junk = {**row(5, 1), "rating_chosen": "five"}
    lines = [encode_row(x) for x in (row(5, 1), row(4, 2), row(4.5, 1), junk)]
    result = _clean_lines(tmp_path, "capybara", lines)
    scores = dict(zip(result.pairs["source_row"].to_pylist(), result.pairs["chosen_score"].to_pylist()))
    assert scores == {0: 5.0, 1: 4.0, 2: 4.5}
    assert _codes(result) == [(3, "wrong_type")]


def test_empty_string_where_a_struct_belongs_is_quarantined_not_read_as_nulls(tmp_path: Path) -> None:
    # Was: a crash (ArrowTypeError), since pyarrow reads "" alone as a struct of nulls but not in a list.
    ratings = {a: {"Rating": "4", "Rationale": "r"} for a in ("instruction_following", "honesty", "truthfulness", "helpfulness")}  # fmt: skip
    comp = {"model": "m", "response": "a", "annotations": ratings}
    bad = {"model": "m", "response": "b", "annotations": {**ratings, "truthfulness": ""}}
    lines = [encode_row({"instruction": "q", "completions": []})] * 3 + [
        encode_row({"instruction": "q", "completions": [comp, comp]}),
        encode_row({"instruction": "q", "completions": [comp, bad]}),
    ]
    result = _clean_lines(tmp_path, "ultrafeedback", lines)
    assert _codes(result) == [(4, "wrong_type")] and result.raw_rows == 5


def test_only_empty_completion_lists_is_not_a_schema_error(tmp_path: Path) -> None:
    # Was: ValueError "'completions' must be a list of structs" (type list<null>).
    result = _clean_lines(
        tmp_path, "ultrafeedback", [encode_row({"instruction": "q", "completions": []})] * 3
    )
    assert (result.rows_in, result.kept, result.dropped["fewer_than_two_completions"]) == (3, 0, 3)


def test_helpsteer_text_column_of_lists_is_quarantined_row_by_row(tmp_path: Path) -> None:
    # Was: ArrowNotImplementedError (no string kernel for list<null>) for the whole file.
    scores = {"helpfulness": 3, "correctness": 2, "coherence": 4, "complexity": 1, "verbosity": 1}
    lines = [encode_row({"prompt": "q", "response": [], **scores}), encode_row({"prompt": "q", **scores})]
    result = _clean_lines(tmp_path, "helpsteer", lines)
    assert _codes(result) == [(0, "wrong_type"), (1, "missing_field")]


def test_lone_surrogate_escape_and_empty_object_are_quarantined(tmp_path: Path) -> None:
    # Was: UnicodeEncodeError from pyarrow for "\ud800" (valid JSON, not encodable text).
    lines = [b'{"chosen": "lone \\ud800", "rejected": "x"}', b"{}", encode_row(HH)]
    result = _clean_lines(tmp_path, "hh-rlhf/helpful-base", lines)
    assert (result.kept, _codes(result)) == (1, [(0, "wrong_type"), (1, "missing_field")])
    json.loads(result.quarantine["raw"][0].as_py())  # stored ASCII-escaped, still the same JSON


@pytest.mark.parametrize(
    ("source", "row", "column"),
    [
        ("helpsteer", {"prompt": "q", "helpfulness": 1, "correctness": 1}, "response"),
        ("ultrafeedback", {"source": "s", "completions": []}, "instruction"),
    ],
)
def test_file_without_a_required_column_is_a_clear_error_naming_file_and_column(
    tmp_path: Path, source: str, row: dict, column: str
) -> None:
    path = mirror_file(source, "train", tmp_path)
    write_mirror(source, "train", tmp_path, [[encode_row(row)] * 2])
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*" + column) as info:
        clean_source(source, "train", CleanOptions(), tmp_path)
    assert not isinstance(info.value, pa.ArrowException)
