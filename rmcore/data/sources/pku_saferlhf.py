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
    revision: str = "240919205c45b905e7abc2f39bb035640438fba3"
    """"Resplit the train and test sets": the recipe-era release (~330K rows, the one v4 takes a 150K
    subset of) as ``round0/330k/{train,test}.jsonl.xz``, and the 30K split as
    ``round0/30k/{train,test}.jsonl.xz`` (the hub's commit and tree pages list both, with their LFS
    digests). The later ``v0`` branch (ff7ba91) moved the same 330k files to ``round0/``; today's
    main is the ~83K re-release with one folder per generator model."""
    hub_patterns: tuple[str, ...] = ("round0/330k/{split}.jsonl.xz",)
    splits: tuple[str, ...] = ("train", "test")
    options: frozenset[str] = SINGLE_PAIR_OPTIONS
    streams: bool = False
    columns: tuple[str, ...] | None = None

    def file_patterns(self, split: str) -> list[str]:
        # A mirror of today's release keeps a split sample at the repo root (../shared/data); the
        # pinned recipe-era revision keeps it under round0/ as .jsonl.xz.
        return [f"{split}.jsonl", *(p.format(split=split) for p in self.hub_patterns)]

    def clean(self, raw: pa.Table, options: CleanOptions, *, split: str) -> CleanResult:
        return clean_rows(self.name, split, raw, pair_from_safer_response, rules=RULES, options=options)


PKU_SAFERLHF = PKUSafeRLHF()
PKU_SAFERLHF_30K = PKUSafeRLHF(name="pku-saferlhf-30k", hub_patterns=("round0/30k/{split}.jsonl.xz",))
"""PKU-SafeRLHF-30K as the recipe used it: the 30k split of the same pinned PKU-SafeRLHF revision
(``round0/30k/``); the separate PKU-Alignment/PKU-SafeRLHF-30K repo has no public full commit sha."""
