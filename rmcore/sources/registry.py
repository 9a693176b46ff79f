"""Every source rmflow knows, by its command-line name (SPEC section 9), and ``clean_source``."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa

from rmcore.sources.base import CleanOptions, CleanResult, SourceAdapter
from rmcore.sources.capybara import Capybara
from rmcore.sources.helpsteer import HelpSteer
from rmcore.sources.hh_rlhf import HHRLHF, SUBSETS
from rmcore.sources.mirror import read_raw
from rmcore.sources.orca import Orca
from rmcore.sources.pku_saferlhf import PKU_SAFERLHF, PKU_SAFERLHF_30K
from rmcore.sources.shp import SHP
from rmcore.sources.tables import quarantine_table
from rmcore.sources.ultrafeedback import UltraFeedback

log = logging.getLogger(__name__)

_ADAPTERS: dict[str, SourceAdapter] = {
    a.name: a
    for a in (
        *(HHRLHF(s) for s in SUBSETS),
        SHP(),
        UltraFeedback(),
        HelpSteer(),
        Capybara(),
        Orca(),
        PKU_SAFERLHF,
        PKU_SAFERLHF_30K,
    )
}
SOURCE_NAMES: tuple[str, ...] = tuple(_ADAPTERS)


class UnknownSource(ValueError):
    """A source name rmflow does not know; the message lists the valid names."""


def get_adapter(name: str) -> SourceAdapter:
    try:
        return _ADAPTERS[name]
    except KeyError:
        raise UnknownSource(f"unknown source {name!r}; valid names: {', '.join(SOURCE_NAMES)}") from None


def clean_source(name: str, split: str, options: CleanOptions, data_dir: Path | None) -> CleanResult:
    """Read one split of a source, clean + pair it, quarantine unreadable rows, check accounting."""
    adapter = get_adapter(name)
    raw = read_raw(adapter, split, data_dir)
    result = adapter.clean(raw.table, options, split=split)
    if raw.bad_rows:
        rows, reasons, texts = zip(*raw.bad_rows)
        extra = quarantine_table(name, list(rows), list(reasons), list(texts))
        result.quarantine = pa.concat_tables([result.quarantine, extra]).sort_by("source_row")
        result.rows_in += len(raw.bad_rows)
        if result.raw_rows is not None:
            result.raw_rows += len(raw.bad_rows)
    result.check_accounting()
    log.info(
        "%s/%s: rows_in=%d kept=%d dropped=%s quarantined=%d",
        name,
        split,
        result.rows_in,
        result.kept,
        result.dropped,
        result.quarantined,
    )
    return result
