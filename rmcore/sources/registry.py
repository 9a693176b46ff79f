"""Every source rmflow knows, by its command-line name (SPEC section 9), and ``clean_source``."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa

from rmcore.sources.base import CleanOptions, CleanResult, SourceAdapter
from rmcore.sources.capybara import Capybara
from rmcore.sources.helpsteer import HelpSteer
from rmcore.sources.hh_rlhf import HHRLHF, SUBSETS
from rmcore.sources.mirror import full_rows_json, read_raw
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


def _with_full_raw_rows(quarantine: pa.Table, files: list[str]) -> pa.Table:
    """Replace the (column-projected) raw JSON of quarantined rows by the complete rows."""
    rows = quarantine.column("source_row").to_pylist()
    full = full_rows_json(files, set(rows))
    raw = pa.array([full[r] for r in rows], pa.string())
    return quarantine.set_column(quarantine.schema.get_field_index("raw"), "raw", raw)


def clean_source(name: str, split: str, options: CleanOptions, data_dir: Path | None) -> CleanResult:
    """Read one split of a source, clean + pair it, quarantine unreadable rows, check accounting."""
    adapter = get_adapter(name)
    columns = getattr(adapter, "columns", None)  # the Parquet columns its rules read, if it says
    raw = read_raw(adapter, split, data_dir, columns=list(columns) if columns else None)
    result = adapter.clean(raw.table, options, split=split)
    if columns and result.quarantined and all(f.endswith(".parquet") for f in raw.files):
        result.quarantine = _with_full_raw_rows(result.quarantine, raw.files)
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
