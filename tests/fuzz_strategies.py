"""Hypothesis strategies for the bad-input suite: raw source rows, junk values, mirror files.

Each source gets a strategy of *plausible* rows in its hub schema (small vocabularies, so
ties, duplicates and shared prompts happen often) and ``mutated`` damages some of them:
a field deleted, or replaced by junk (wrong types, NaN/inf, huge ints, nested nulls,
lists where strings are expected, broken transcripts). ``write_mirror`` writes rows as
JSON-lines files in the hub-mirror layout, with undecodable lines (invalid JSON, invalid
UTF-8, non-objects) mixed in; it returns how many rows the files hold.

The strategies draw only through hypothesis (never the ``random`` module); the fuzz modules
use ``websockets_own_random`` so another thread's use of ``random`` is not blamed on them.
"""

from __future__ import annotations

import gzip
import importlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from rmcore.data.sources import get_adapter
from rmcore.data.sources.mirror import _stem

FUZZ_SETTINGS = settings(
    derandomize=True,  # the same examples on every machine: CI is reproducible
    deadline=None,
    database=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)

WEBSOCKETS_USING_RANDOM = (
    "websockets.asyncio.connection",
    "websockets.legacy.protocol",
    "websockets.sync.connection",
)
"""websockets modules that draw ping payloads from the module-level ``random`` generator."""


@pytest.fixture
def websockets_own_random(monkeypatch: pytest.MonkeyPatch) -> None:
    """Give websockets a private generator while fuzzing.

    Prefect's events client (left connected by earlier flow tests in the same session) sends a
    keepalive ping every 20 s from its own thread, with a payload from ``random.getrandbits``.
    Hypothesis reports any change of the global ``random`` state during a draw as "Do not use
    the `random` module inside strategies", naming whichever strategy was being drawn then
    (``file_lines('orca')`` in CI). With the pings on their own generator the check stays on and
    still catches a strategy that really uses ``random``.
    """
    for name in WEBSOCKETS_USING_RANDOM:
        module = importlib.import_module(name)
        monkeypatch.setattr(module, "random", random.Random())


HUGE = "x" * 100_000
SPECIAL_TEXTS = (
    "",
    " ",
    "\n",
    "hi",
    "Hello there",
    "a\n\nb",
    "\n\nHuman: hi",
    "\n\nAssistant: ok",
    "Human:",
    "N/A",
    "NaN",
    "null",
    "日本語のテキスト",
    "emoji 🤖",
    "line\u2028separator",  # json.dumps(ensure_ascii=False) writes it raw: must not split a JSON line
    "next\x85line",
    "para\u2029graph",
    "nul\x00byte",
    "lone surrogate \ud800",  # written escaped by json.dumps; not valid UTF-8 once decoded
    HUGE,
)
TEXT = st.one_of(st.sampled_from(SPECIAL_TEXTS), st.text(max_size=12))
SHORT = st.sampled_from(("a", "b", "c", "Hello", "Sure.", "No.", " ", ""))
NUMBER = st.one_of(
    st.integers(-3, 10), st.sampled_from((0.5, 2.5, 4.0, float("nan"), float("inf"), -float("inf")))
)
SCALAR_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    TEXT,
)
JUNK = st.recursive(
    SCALAR_JUNK,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(("role", "content", "Rating", "response", "x")), inner, max_size=3),
    ),
    max_leaves=6,
)
BAD_LINES = (
    b"{not json",
    b"[1, 2]",
    b'"a string"',
    b"42",
    b"null",
    b'{"chosen": "\xc3\x28 invalid utf-8"}',
    b"\xff\xfe\x00 binary",
    b'{"a": 1}{"b": 2}',
    b'{"chosen": NaN, "rejected": Infinity}',
    b'{"chosen": "lone \\ud800 surrogate escape", "rejected": "x"}',
    b"{}",
)


# ---------------------------------------------------------------- rows per source

ROLE_MARKERS = {
    "user": ("\n\nHuman: ", "\n\nHuman:", "\n\nHumans: ", " Human: ", "\n\nhuman: ", "\n\n\nHuman: "),
    "assistant": ("\n\nAssistant: ", "\n\nAssistant:", "\n\nAssistant : ", "\nAssistant: ", "\n\nAI: "),
}


@st.composite
def transcript_pair(draw: st.DrawFn) -> dict[str, Any]:
    """hh-rlhf chosen/rejected transcripts sharing a prompt; markers sometimes mangled."""
    turns = draw(st.integers(0, 2))
    roles = ["user", "assistant"] * turns + ["user"]
    if draw(st.integers(0, 9)) == 0:
        roles = draw(st.lists(st.sampled_from(("user", "assistant")), min_size=1, max_size=4))
    good = draw(st.integers(0, 5)) > 0  # most transcripts use the real markers

    def marker(role: str) -> str:
        return ROLE_MARKERS[role][0] if good else draw(st.sampled_from(ROLE_MARKERS[role]))

    prompt = "".join(marker(r) + draw(st.one_of(SHORT, TEXT)) for r in roles)
    lead = "" if draw(st.integers(0, 9)) else draw(TEXT)
    ending = "" if draw(st.integers(0, 9)) else marker("user") + "more?"
    chosen = lead + prompt + marker("assistant") + draw(SHORT) + ending
    rejected = lead + prompt + marker("assistant") + draw(SHORT)
    return {"chosen": chosen, "rejected": rejected}


def _messages(prompt: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]


@st.composite
def shp_row(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "post_id": draw(st.sampled_from(("p1", "p2", "p3"))),
        "domain": "askx_train",
        "upvote_ratio": 0.9,
        "history": draw(st.one_of(SHORT, TEXT)),
        "c_root_id_A": "a",
        "c_root_id_B": "b",
        "created_at_utc_A": 1,
        "created_at_utc_B": 2,
        "score_A": draw(st.integers(0, 50)),
        "score_B": draw(st.integers(0, 50)),
        "human_ref_A": draw(SHORT),
        "human_ref_B": draw(SHORT),
        "labels": draw(st.sampled_from((0, 1))),
        "seconds_difference": 3.0,
        "score_ratio": draw(st.sampled_from((1.0, 2.0, 2.5, 3.0, 10.0))),
    }


@st.composite
def ultrafeedback_row(draw: st.DrawFn) -> dict[str, Any]:
    def completion() -> dict[str, Any]:
        rating = st.sampled_from(("1", "2", "3", "4", "5", "N/A", " 3 "))
        return {
            "model": draw(st.sampled_from(("m1", "m2", "m3"))),
            "principle": "helpfulness",
            "custom_system_prompt": "",
            "response": draw(SHORT),
            "critique": "",
            "overall_score": 5.0,
            "fine-grained_score": 3.5,
            "annotations": {a: {"Rating": draw(rating), "Rationale": "r"} for a in ASPECTS},
        }

    n = draw(st.integers(0, 4))
    return {
        "source": "evol",
        "instruction": draw(st.one_of(SHORT, TEXT)),
        "models": ["m1"],
        "completions": [completion() for _ in range(n)],
    }


ASPECTS = ("instruction_following", "honesty", "truthfulness", "helpfulness")


@st.composite
def helpsteer_row(draw: st.DrawFn) -> dict[str, Any]:
    score = st.integers(0, 4)
    return {
        "prompt": draw(st.sampled_from(("q1", "q2", "q3", "q4"))),
        "response": draw(SHORT),
        **{k: draw(score) for k in ("helpfulness", "correctness", "coherence", "complexity", "verbosity")},
    }


RATING = st.one_of(st.integers(1, 5), st.sampled_from((1.5, 4.5)))  # real files mix 4 and 4.5


@st.composite
def capybara_row(draw: st.DrawFn) -> dict[str, Any]:
    prompt = draw(st.one_of(SHORT, TEXT))
    return {
        "source": "x",
        "prompt": prompt,
        "chosen": _messages(prompt, draw(SHORT)),
        "rejected": _messages(prompt, draw(SHORT)),
        "rating_chosen": draw(RATING),
        "rating_rejected": draw(RATING),
        "chosen_model": "m",
        "rejected_model": "n",
    }


@st.composite
def orca_row(draw: st.DrawFn) -> dict[str, Any]:
    chosen, rejected = draw(SHORT), draw(SHORT)
    r1, r2 = draw(st.sampled_from((1.0, 5.0, 8.0, 10.0))), draw(st.sampled_from((1.0, 5.0, 8.0, 10.0)))
    swapped = draw(st.booleans())
    return {
        "system": draw(st.one_of(st.none(), SHORT)),
        "input": draw(st.one_of(SHORT, TEXT)),
        "chosen": chosen,
        "rejected": rejected,
        "generations": [rejected, chosen] if swapped else [chosen, rejected],
        "order": ["a", "b"],
        "labelling_model": "gpt-4",
        "labelling_prompt": [{"content": "c", "role": "user"}],
        "raw_labelling_response": "r",
        "rating": [r2, r1] if swapped else [r1, r2],
        "rationale": "r",
        "status": draw(st.sampled_from(("tie", "unchanged", "swapped"))),
        "original_chosen": chosen,
        "original_rejected": rejected,
        "chosen_score": r1,
        "in_gsm8k_train": False,
    }


@st.composite
def pku_row(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "prompt": draw(st.one_of(SHORT, TEXT)),
        "response_0": draw(SHORT),
        "response_1": draw(SHORT),
        "prompt_source": "s",
        "is_response_0_safe": draw(st.booleans()),
        "is_response_1_safe": draw(st.booleans()),
        "better_response_id": draw(st.sampled_from((0, 1))),
        "safer_response_id": draw(st.sampled_from((0, 1))),
    }


VALID_ROWS = {
    "hh-rlhf/helpful-base": transcript_pair(),
    "shp": shp_row(),
    "ultrafeedback": ultrafeedback_row(),
    "helpsteer": helpsteer_row(),
    "capybara": capybara_row(),
    "orca": orca_row(),
    "pku-saferlhf": pku_row(),
}


# ---------------------------------------------------------------- damage


def _paths(value: Any, prefix: tuple = ()) -> list[tuple]:
    """Every key/index path inside a row (containers and leaves)."""
    out = [prefix] if prefix else []
    if isinstance(value, dict):
        for k, v in value.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            out += _paths(v, prefix + (i,))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[dict[str, Any]]) -> dict[str, Any]:
    """A row of ``base`` with 1-3 fields deleted or replaced by junk."""
    row = draw(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(row)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = row
        for k in path[:-1]:
            parent = parent[k]
        if draw(st.booleans()) and isinstance(parent, dict):
            del parent[path[-1]]
        else:
            parent[path[-1]] = draw(JUNK)
    return row


def rows_for(source: str, *, max_rows: int = 40) -> st.SearchStrategy[list[dict[str, Any]]]:
    """A batch of rows: valid ones and damaged ones, in any order."""
    base = VALID_ROWS[source]
    return st.lists(st.one_of(base, mutated(base)), min_size=min(10, max_rows), max_size=max_rows)


def encode_row(row: dict[str, Any]) -> bytes:
    """One JSON line as a producer writing UTF-8 without ASCII escaping would write it."""
    return json.dumps(row, ensure_ascii=False).encode("utf-8", "surrogatepass")


@st.composite
def file_lines(draw: st.DrawFn, source: str, *, max_rows: int = 40) -> list[bytes]:
    """Encoded rows with undecodable lines and blank lines mixed in."""
    lines = [encode_row(r) for r in draw(rows_for(source, max_rows=max_rows))]
    for _ in range(draw(st.integers(0, 3))):
        at = draw(st.integers(0, len(lines)))
        lines.insert(at, draw(st.sampled_from(BAD_LINES)))
    if draw(st.integers(0, 4)) == 0:
        lines.insert(draw(st.integers(0, len(lines))), b"   ")  # blank: not a row
    return lines


# ---------------------------------------------------------------- mirror files


def mirror_file(source: str, split: str, data_dir: Path, part: int = 0, ext: str = ".jsonl") -> Path:
    """Where the mirror keeps one file of ``source``/``split`` (the adapter's first pattern)."""
    adapter = get_adapter(source)
    pattern = adapter.file_patterns(split)[0].replace("*", f"part{part}")
    return Path(data_dir) / adapter.hub_id / (_stem(pattern) + ext)


def write_mirror(
    source: str, split: str, data_dir: Path, files: list[list[bytes]], *, gz: bool = False
) -> int:
    """Write one JSON-lines file per list of lines; return the rows they hold (non-blank lines)."""
    rows = 0
    for part, lines in enumerate(files):
        path = mirror_file(source, split, data_dir, part, ".jsonl.gz" if gz else ".jsonl")
        path.parent.mkdir(parents=True, exist_ok=True)
        blob = b"\n".join(lines) + b"\n"
        path.write_bytes(gzip.compress(blob, mtime=0) if gz else blob)
        rows += sum(1 for line in lines if line.strip())
    return rows
