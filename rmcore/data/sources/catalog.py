"""Every source rmflow knows, by its command-line name (SPEC section 9), and ``clean_source``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow as pa

from rmcore.data.sources.base import CleanOptions, CleanResult, SourceAdapter, check_options
from rmcore.data.sources.capybara import Capybara
from rmcore.data.sources.helpsteer import HelpSteer
from rmcore.data.sources.hh_rlhf import HHRLHF, SUBSETS
from rmcore.data.sources.mirror import (
    find_mirror_files,
    full_rows_json,
    iter_parquet_batches,
    parquet_rows,
    read_raw,
)
from rmcore.data.sources.orca import Orca
from rmcore.data.sources.pku_saferlhf import PKU_SAFERLHF, PKU_SAFERLHF_30K
from rmcore.data.sources.shp import SHP
from rmcore.data.sources.tables import quarantine_table
from rmcore.data.sources.ultrafeedback import UltraFeedback

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


class SourceSchemaError(ValueError):
    """A source's files do not have the columns its adapter needs; the message names the files."""


@contextmanager
def _naming(files: list[str]) -> Iterator[None]:
    """An adapter's file-level error (a required column missing or mistyped) names the files it read."""
    try:
        yield
    except ValueError as e:
        if isinstance(e, pa.ArrowException):
            raise
        raise SourceSchemaError(f"{', '.join(files)}: {e}") from e


def _with_full_raw_rows(quarantine: pa.Table, files: list[str]) -> pa.Table:
    """Replace the (column-projected) raw JSON of quarantined rows by the complete rows."""
    rows = quarantine.column("source_row").to_pylist()
    full = full_rows_json(files, set(rows))
    raw = pa.array([full[r] for r in rows], pa.string())
    return quarantine.set_column(quarantine.schema.get_field_index("raw"), "raw", raw)


def _clean_streamed(
    adapter: SourceAdapter, split: str, options: CleanOptions, data_dir: Path
) -> CleanResult | None:
    """Clean a Parquet-only mirror split batch by batch, if the adapter can; else None."""
    if not adapter.streams:
        return None
    paths = find_mirror_files(adapter, split, Path(data_dir))
    if not all(p.suffix == ".parquet" for p in paths):
        return None
    columns = list(adapter.columns) if adapter.columns else None
    batches = iter_parquet_batches(paths, columns)
    with _naming([str(p) for p in paths]):
        result = adapter.clean_batches(batches, parquet_rows(paths), options, split=split)
    if columns and result.quarantined:
        result.quarantine = _with_full_raw_rows(result.quarantine, [str(p) for p in paths])
    log.info("%s/%s: streamed %d Parquet file(s)", adapter.name, split, len(paths))
    return result


def clean_source(name: str, split: str, options: CleanOptions, data_dir: Path | None) -> CleanResult:
    """Read one split of a source, clean + pair it, quarantine unreadable rows, check accounting.

    Adapters that clean batch by batch (UltraFeedback) stream Parquet mirrors instead of
    materialising the raw table; the result is the same.
    """
    adapter = get_adapter(name)
    check_options(adapter, options)
    result = _clean_streamed(adapter, split, options, data_dir) if data_dir is not None else None
    if result is None:
        result = _clean_read(adapter, split, options, data_dir)
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


def _clean_read(
    adapter: SourceAdapter, split: str, options: CleanOptions, data_dir: Path | None
) -> CleanResult:
    """Read the whole raw table (mirror or hub), clean it, quarantine the unreadable rows."""
    columns = adapter.columns  # the Parquet columns its rules read, if it says
    raw = read_raw(adapter, split, data_dir, columns=list(columns) if columns else None)
    with _naming(raw.files):
        result = adapter.clean(raw.table, options, split=split)
    if columns and result.quarantined and all(f.endswith(".parquet") for f in raw.files):
        result.quarantine = _with_full_raw_rows(result.quarantine, raw.files)
    if raw.bad_rows:
        rows, reasons, texts = zip(*raw.bad_rows)
        extra = quarantine_table(adapter.name, list(rows), list(reasons), list(texts))
        result.quarantine = pa.concat_tables([result.quarantine, extra]).sort_by("source_row")
        result.rows_in += len(raw.bad_rows)
        if result.raw_rows is not None:
            result.raw_rows += len(raw.bad_rows)
    return result
