"""hh-rlhf transcripts: every quirk rule on hand-written rows, then the real test splits."""

from __future__ import annotations

import gzip
import itertools
import json
import re
from pathlib import Path

import pyarrow as pa
import pytest

from rmcore.data.pairing import pair_id
from rmcore.data.sources import CleanOptions
from rmcore.data.sources.catalog import clean_source
from rmcore.data.sources.hh_rlhf import HHRLHF, SUBSETS, pair_from_transcripts, parse_transcript
from rmcore.data.sources.tables import Quarantine

H, A = "\n\nHuman: ", "\n\nAssistant: "

ROWS = [
    {"chosen": f"{H}Hi{A}Hello", "rejected": f"{H}Hi{A}Go away"},  # 0 kept
    {"chosen": f"{H}Hi{A}Same", "rejected": f"{H}Hi{A}Same"},  # 1 chosen_equals_rejected (raw)
    {"chosen": f"{H}Hi{A}Hello", "rejected": f"{H}Hi{A} Hello  "},  # 2 chosen_equals_rejected (parsed)
    {"chosen": f"{H}Hi{A}Hello", "rejected": f"{H}Hi{A}"},  # 3 empty_final_answer
    {"chosen": f"{H}Hi{A}{H}Again?{A}Yes", "rejected": f"{H}Hi{A}{H}Again?{A}No"},  # 4 empty_prompt_turn
    {"chosen": f"{H}Hi{H}there{A}A", "rejected": f"{H}Hi{H}there{A}B"},  # 5 consecutive_same_role
    {"chosen": f"{H}Hi{A}A{H}thanks", "rejected": f"{H}Hi{A}B"},  # 6 not_ending_with_assistant
    {"chosen": f"{H}Hi{A}A", "rejected": f"{H}Bye{A}B"},  # 7 prompt_mismatch
    {"chosen": "just some text", "rejected": f"{H}Hi{A}B"},  # 8 unparseable (no markers)
    {"chosen": f"Preamble{H}Hi{A}A", "rejected": f"{H}Hi{A}B"},  # 9 unparseable (text before)
    {"chosen": f"{A}A{H}Hi{A}B", "rejected": f"{A}A{H}Hi{A}C"},  # 10 unparseable (starts with Assistant)
    {"chosen": None, "rejected": f"{H}Hi{A}B"},  # 11 missing_field
    # 12: a human turn merged into an assistant turn (an inline "  Human:"), as harmless-base
    # test row 1254: "...called drag kings.  Human: Then how do they come to be called ..."
    {"chosen": f"{H}Hi{A}A.  Human: And?{A}B", "rejected": f"{H}Hi{A}A.  Human: And?{A}C"},
    # 13: an assistant answer that starts with the human's part (the model wrote "Human: ...")
    {"chosen": f"{H}Hi{A}Human: So you like rap?", "rejected": f"{H}Hi{A}Yes"},
    # 14: a marker quoted without whitespace before it is text, not a turn: kept
    {"chosen": f"{H}Hi{A}He said “Assistant: hello”", "rejected": f"{H}Hi{A}No"},
]


def test_each_quirk_has_its_rule() -> None:
    result = HHRLHF("helpful-base").clean(pa.Table.from_pylist(ROWS), CleanOptions(), split="test")
    assert result.rows_in == 15
    assert result.kept == 2
    assert result.dropped == {"chosen_equals_rejected": 2, "empty_final_answer": 1, "empty_prompt_turn": 1}
    reasons = dict(zip(result.quarantine["source_row"].to_pylist(), result.quarantine["reason"].to_pylist()))
    assert {r: reason.split(":")[0] for r, reason in reasons.items()} == {
        5: "consecutive_same_role",
        6: "not_ending_with_assistant",
        7: "prompt_mismatch",
        8: "unparseable_transcript",
        9: "unparseable_transcript",
        10: "unparseable_transcript",
        11: "missing_field",
        12: "turn_marker_inside_turn",
        13: "turn_marker_inside_turn",
    }
    assert json.loads(result.quarantine["raw"][0].as_py()) == ROWS[5]
    result.check_accounting()


def test_kept_pair_is_the_message_contract() -> None:
    result = HHRLHF("harmless-base").clean(pa.Table.from_pylist(ROWS[:1]), CleanOptions(), split="train")
    (pair,) = result.pairs.to_pylist()
    user = {"role": "user", "content": "Hi"}
    assert pair["prompt"] == [user]
    assert pair["chosen"] == [user, {"role": "assistant", "content": "Hello"}]
    assert pair["rejected"] == [user, {"role": "assistant", "content": "Go away"}]
    assert pair["pair_id"] == pair_id("hh-rlhf/harmless-base", pair["chosen"], pair["rejected"])
    assert (pair["source"], pair["split"], pair["source_row"]) == ("hh-rlhf/harmless-base", "train", 0)
    assert pair["chosen_score"] is None and pair["rejected_score"] is None


def test_parse_multi_turn_and_wrong_type() -> None:
    msgs = parse_transcript(f"{H}a{A}b{H}c{A}d")
    assert [m["role"] for m in msgs] == ["user", "assistant", "user", "assistant"]
    assert [m["content"] for m in msgs] == ["a", "b", "c", "d"]
    with pytest.raises(Quarantine, match="wrong_type"):
        pair_from_transcripts({"chosen": 5, "rejected": "x"})


def _rows(path: Path) -> list[dict]:
    with gzip.open(path, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def _expected_fate(row: dict) -> str:
    """A second, independent reading of one real row: its fate under the documented rule order."""
    c, r = row["chosen"], row["rejected"]
    if c == r:
        return "chosen_equals_rejected"
    sides = []
    for t in (c, r):
        roles = re.findall(r"\n\n(Human|Assistant):", t)
        turns = [x.strip() for x in re.split(r"\n\n(?:Human|Assistant):", t)[1:]]
        if any(re.search(r"(?:^|\s)(?:Human|Assistant):", x) for x in turns):
            return "q:turn_marker_inside_turn"
        if any(x == y for x, y in itertools.pairwise(roles)):
            return "q:consecutive_same_role"
        if roles[-1] != "Assistant":
            return "q:not_ending_with_assistant"
        sides.append(t)
    head_c, head_r = (t[: t.rindex("\n\nAssistant:")] for t in sides)
    if [s.strip() for s in re.split(r"\n\n(?:Human|Assistant):", head_c)] != [
        s.strip() for s in re.split(r"\n\n(?:Human|Assistant):", head_r)
    ]:
        return "q:prompt_mismatch"
    tails = [t[t.rindex("\n\nAssistant:") + len("\n\nAssistant:") :].strip() for t in sides]
    if tails[0] == tails[1]:
        return "chosen_equals_rejected"
    if not tails[0] or not tails[1]:
        return "empty_final_answer"
    if any(not s.strip() for s in re.split(r"\n\n(?:Human|Assistant):", head_c)[1:]):
        return "empty_prompt_turn"
    return "kept"


# Counts worked out once by reading the rows (and equal to the independent reading below).
REAL = {
    "helpful-base": (2354, 2301, {"chosen_equals_rejected": 2, "empty_final_answer": 4, "empty_prompt_turn": 0}, 47),
    "helpful-rejection-sampled": (2749, 2683, {"chosen_equals_rejected": 32, "empty_final_answer": 0, "empty_prompt_turn": 0}, 34),
    "helpful-online": (1137, 1126, {"chosen_equals_rejected": 2, "empty_final_answer": 3, "empty_prompt_turn": 1}, 5),
    "harmless-base": (2312, 2255, {"chosen_equals_rejected": 0, "empty_final_answer": 4, "empty_prompt_turn": 0}, 53),
}  # fmt: skip


@pytest.mark.parametrize("subset", SUBSETS)
def test_real_test_split_matches_an_independent_reading(shared_data: Path, subset: str) -> None:
    rows = _rows(shared_data / "Anthropic/hh-rlhf" / subset / "test.jsonl.gz")
    fates = [_expected_fate(r) for r in rows]
    result = clean_source(f"hh-rlhf/{subset}", "test", CleanOptions(), shared_data)
    rows_in, kept, dropped, quarantined = REAL[subset]
    assert (result.rows_in, result.kept, result.dropped, result.quarantined) == (
        rows_in,
        kept,
        dropped,
        quarantined,
    )
    assert result.rows_in == len(rows)
    assert result.dropped["chosen_equals_rejected"] == sum(r["chosen"] == r["rejected"] for r in rows)
    assert result.kept == fates.count("kept")
    for rule, n in result.dropped.items():
        assert n == fates.count(rule), rule
    q = {
        r: reason.split(":")[0]
        for r, reason in zip(
            result.quarantine["source_row"].to_pylist(), result.quarantine["reason"].to_pylist()
        )
    }
    assert q == {i: f[2:] for i, f in enumerate(fates) if f.startswith("q:")}
    assert sorted(result.pairs["source_row"].to_pylist()) == [i for i, f in enumerate(fates) if f == "kept"]
