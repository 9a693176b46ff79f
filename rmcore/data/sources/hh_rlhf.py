"""Anthropic/hh-rlhf: whole "\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts -> message pairs.

Rules, in order (the first that applies names the row's fate):
- chosen and rejected texts identical -> dropped ``chosen_equals_rejected``;
- a transcript without Human/Assistant markers, with text before the first marker or
  starting with an Assistant turn -> quarantined ``unparseable_transcript``;
- a turn that holds a turn marker in its text ("Human:"/"Assistant:" at its start or after
  whitespace, not after the blank line that separates turns) -> quarantined
  ``turn_marker_inside_turn``. In the real test splits this is either a lost separator (an
  inline "  Human: ..." that merged a human turn into an assistant turn, so two assistant
  turns follow each other) or a model turn that starts with or quotes "Human: ..." (it wrote
  the human's part): from the text alone the two cannot be told apart, and either reading
  would teach wrong turn boundaries, so both go to quarantine under one name;
- two turns of one role in a row (a marker lost some other way, e.g. "Humans:") ->
  quarantined ``consecutive_same_role``;
- a transcript ending with a Human turn -> quarantined ``not_ending_with_assistant``;
- chosen and rejected differ before their last assistant turn -> quarantined
  ``prompt_mismatch`` (the pair does not compare two answers to one prompt);
- identical after parsing (whitespace-only difference) -> dropped ``chosen_equals_rejected``;
- an empty final assistant answer on either side -> dropped ``empty_final_answer``;
- an empty turn inside the shared prompt -> dropped ``empty_prompt_turn``.
Turn contents are stripped of surrounding whitespace. No scores (both null).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rmcore.data.sources.base import SINGLE_PAIR_OPTIONS, CleanOptions, CleanResult
from rmcore.data.sources.tables import Drop, Message, Quarantine, clean_rows, require_str

SUBSETS = ("helpful-base", "helpful-rejection-sampled", "helpful-online", "harmless-base")
HUB_ID = "Anthropic/hh-rlhf"
REVISION = "09be8c5bbc57cb3887f3a9732ad6aa7ec602a1fa"
"""main since 2023-05-26 (files ``<subset>/{train,test}.jsonl.gz``); pinned by stanford-crfm/helm's
``anthropic_hh_rlhf_scenario.py`` and seen in public ``datasets`` cache snapshot paths."""
RULES = ("chosen_equals_rejected", "empty_final_answer", "empty_prompt_turn")

_MARKER = re.compile(r"(?:^|\n\n)(Human|Assistant):")
_INLINE_MARKER = re.compile(r"(?:^|\s)(Human|Assistant):")
"""A turn marker inside a turn's text (the separator proper is a blank line before it)."""
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str, side: str = "transcript") -> list[Message]:
    """Split a transcript into alternating user/assistant messages ending with the assistant.

    Raises Quarantine naming the defect; ``side`` (chosen/rejected) goes into the reason.
    """
    parts = _MARKER.split(text)
    if len(parts) < 3:
        raise Quarantine("unparseable_transcript", f"{side} has no 'Human:'/'Assistant:' turns")
    if parts[0].strip():
        raise Quarantine("unparseable_transcript", f"{side} has text before its first turn marker")
    messages = [{"role": _ROLE[parts[k]], "content": parts[k + 1].strip()} for k in range(1, len(parts), 2)]
    if messages[0]["role"] != "user":
        raise Quarantine("unparseable_transcript", f"{side} starts with an Assistant turn")
    for i, message in enumerate(messages):
        if found := _INLINE_MARKER.search(message["content"]):
            raise Quarantine(
                "turn_marker_inside_turn",
                f"{side} turn {i} ({message['role']}) holds {found.group(1)!r}: inside its text",
            )
    for i in range(1, len(messages)):
        if messages[i]["role"] == messages[i - 1]["role"]:
            raise Quarantine(
                "consecutive_same_role", f"{side} turns {i - 1} and {i} are both {messages[i]['role']}"
            )
    if messages[-1]["role"] != "assistant":
        raise Quarantine("not_ending_with_assistant", f"{side} ends with a Human turn")
    return messages


def pair_from_transcripts(row: dict[str, Any]) -> dict[str, Any]:
    """One raw hh-rlhf row -> prompt/chosen/rejected messages, or Drop/Quarantine."""
    chosen_text = require_str(row, "chosen")
    rejected_text = require_str(row, "rejected")
    if chosen_text == rejected_text:
        raise Drop("chosen_equals_rejected")
    chosen = parse_transcript(chosen_text, "chosen")
    rejected = parse_transcript(rejected_text, "rejected")
    if chosen[:-1] != rejected[:-1]:
        diff = next(
            (i for i, (a, b) in enumerate(zip(chosen, rejected)) if a != b), min(len(chosen), len(rejected))
        )
        raise Quarantine(
            "prompt_mismatch",
            f"chosen ({len(chosen)} turns) and rejected ({len(rejected)} turns) differ at turn {diff}, before the answer",
        )
    if chosen == rejected:
        raise Drop("chosen_equals_rejected")
    if not chosen[-1]["content"] or not rejected[-1]["content"]:
        raise Drop("empty_final_answer")
    if any(not m["content"] for m in chosen[:-1]):
        raise Drop("empty_prompt_turn")
    return {
        "prompt": chosen[:-1],
        "chosen": chosen,
        "rejected": rejected,
        "chosen_score": None,
        "rejected_score": None,
    }


@dataclass(frozen=True)
class HHRLHF:
    """One hh-rlhf subset (a folder of the hub repo)."""

    subset: str
    hub_id: str = HUB_ID
    revision: str = REVISION
    splits: tuple[str, ...] = ("train", "test")
    options: frozenset[str] = SINGLE_PAIR_OPTIONS
    streams: bool = False
    columns: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return f"hh-rlhf/{self.subset}"

    def file_patterns(self, split: str) -> list[str]:
        return [f"{self.subset}/{split}.jsonl.gz"]

    def clean(self, raw: pa.Table, options: CleanOptions, *, split: str) -> CleanResult:
        return clean_rows(self.name, split, raw, pair_from_transcripts, rules=RULES, options=options)
