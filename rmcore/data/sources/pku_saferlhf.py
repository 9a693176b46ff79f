"""PKU-Alignment/PKU-SafeRLHF and PKU-SafeRLHF-30K: chosen = the safer response.

Rows: ``prompt, response_0, response_1, safer_response_id`` (0 or 1), plus
``better_response_id``, ``is_response_{0,1}_safe`` and harm labels that the recipe
does not use. Rules: a ``safer_response_id`` other than 0/1 (or missing) and non-text
fields are quarantined; identical responses are dropped ``chosen_equals_rejected``.
No numeric score: both scores are null.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from rmcore.data.sources.base import SINGLE_PAIR_OPTIONS, CleanOptions, CleanResult
from rmcore.data.sources.tables import Drop, Quarantine, clean_rows, require_str, single_turn

RULES = ("chosen_equals_rejected",)


def pair_from_safer_response(row: dict[str, Any]) -> dict[str, Any]:
    prompt = require_str(row, "prompt")
    responses = (require_str(row, "response_0"), require_str(row, "response_1"))
    safer = row.get("safer_response_id")
    if safer is None:
        raise Quarantine("missing_field", "safer_response_id")
    if isinstance(safer, bool) or safer not in (0, 1):
        raise Quarantine("bad_label", f"safer_response_id is {safer!r}, expected 0 or 1")
    safer = int(safer)
    if responses[0] == responses[1]:
        raise Drop("chosen_equals_rejected")
    msgs, chosen = single_turn(prompt, responses[safer])
    _, rejected = single_turn(prompt, responses[1 - safer])
    return {
        "prompt": msgs,
        "chosen": chosen,
        "rejected": rejected,
        "chosen_score": None,
        "rejected_score": None,
    }


@dataclass(frozen=True)
class PKUSafeRLHF:
    name: str = "pku-saferlhf"
    hub_id: str = "PKU-Alignment/PKU-SafeRLHF"
    revision: str = "main"  # not pinned yet: no hub access here to read the commit sha
    splits: tuple[str, ...] = ("train", "test")
    options: frozenset[str] = SINGLE_PAIR_OPTIONS
    streams: bool = False
    columns: tuple[str, ...] | None = None

    def file_patterns(self, split: str) -> list[str]:
        # The mirror keeps the split at the repo root; the hub release keeps one file per generator model.
        return [f"{split}.jsonl", f"data/*/{split}.jsonl"]

    def clean(self, raw: pa.Table, options: CleanOptions, *, split: str) -> CleanResult:
        return clean_rows(self.name, split, raw, pair_from_safer_response, rules=RULES, options=options)


PKU_SAFERLHF = PKUSafeRLHF()
PKU_SAFERLHF_30K = PKUSafeRLHF(name="pku-saferlhf-30k", hub_id="PKU-Alignment/PKU-SafeRLHF-30K")
