"""Read a source's raw rows: from a local hub mirror directory or from the hub.

A mirror is laid out as ``<data_dir>/<hub id>/<path in the dataset repo>`` (e.g.
``Anthropic/hh-rlhf/helpful-base/test.jsonl.gz``). Each adapter names its files by
glob patterns relative to the repo root; here every pattern is tried with the
extensions a mirror may hold (.jsonl, .jsonl.gz, .jsonl.xz, .json, .json.gz, .json.xz,
.parquet), the first pattern that matches wins; then the two Parquet layouts the hub has for
any dataset: ``data/{split}-*.parquet`` (what ``push_to_hub`` writes) and
``default/{split}/*.parquet`` (the dataset viewer's conversion on the ``refs/convert/parquet``
branch, ``<config>/<split>/0000.parquet``). Rows keep their native nested Arrow types, and each gets
its row number in the raw input (``__source_row__``, files in sorted order). JSON lines
that do not parse, are not objects, or whose types disagree with the other rows are
returned as ``bad_rows`` for the cleaner to quarantine, never dropped silently.
"""

from __future__ import annotations

import logging
import lzma
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rmcore.data.sources.base import SourceAdapter
from rmcore.data.sources.json_rows import _json_rows, rows_to_table
from rmcore.data.sources.tables import SOURCE_ROW

log = logging.getLogger(__name__)

EXTENSIONS = (".jsonl", ".jsonl.gz", ".jsonl.xz", ".json", ".json.gz", ".json.xz", ".parquet")
PUSH_TO_HUB_LAYOUT = "data/{split}-*.parquet"
"""Where ``datasets``' ``push_to_hub`` writes a split (``data/train-00000-of-00001.parquet``)."""
PARQUET_CONVERTED_LAYOUT = "default/{split}/*.parquet"
"""The hub's Parquet conversion of a dataset's default config (branch ``refs/convert/parquet``,
``<config>/<split>/0000.parquet``)."""
PARQUET_LAYOUTS = (PUSH_TO_HUB_LAYOUT, PARQUET_CONVERTED_LAYOUT)
"""Accepted in a mirror for every source and split, after the adapter's own patterns."""


class SourceNotFound(FileNotFoundError):
    """No files for a source/split; the message names every path looked at."""


class CorruptSourceFile(ValueError):
    """A mirror file that cannot be decoded (truncated transfer, bad gzip, not Parquet); names the file."""


class EmptySourceFile(CorruptSourceFile):
    """A source file that holds no rows (0 bytes, an empty array, a Parquet file of 0 rows): never
    read as a source of 0 pairs, which the mixture would take without reporting it missing."""


def _require_rows(path: Path | str, rows: int) -> None:
    if rows == 0:
        raise EmptySourceFile(
            f"{path}: holds no rows (an empty file); a source with no data is an error, not 0 pairs. "
            "Fix: fetch this file into the mirror again, or take its entry out of the recipe."
        )


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Decode errors of ``path`` (truncated transfer, bad gzip, not Parquet) as CorruptSourceFile naming it."""
    try:
        yield
    except (FileNotFoundError, PermissionError):
        raise
    except (EOFError, OSError, zlib.error, lzma.LZMAError, pa.ArrowInvalid) as e:
        raise CorruptSourceFile(
            f"{path}: cannot be read, the file is truncated or corrupt ({type(e).__name__}: {e}). "
            "Nothing was taken from it. Fix: fetch this file into the mirror again."
        ) from e


def _parquet_file(path: Path) -> pq.ParquetFile:
    with _decoding(path):
        return pq.ParquetFile(path)


@dataclass
class RawData:
    table: pa.Table
    """Raw rows in native Arrow types, plus ``__source_row__``."""
    files: list[str]
    """Files read (local paths) or hub references (``hf://datasets/<id>@<rev>/<pattern>``)."""
    origin: str
    """The mirror directory of this source, or ``<hub id>@<revision>``."""
    revision: str
    bad_rows: list[tuple[int, str, str]] = field(default_factory=list)
    """(row number, reason, raw text) for rows that could not be read as a table row."""

    @property
    def rows(self) -> int:
        return self.table.num_rows + len(self.bad_rows)


def _stem(pattern: str) -> str:
    for ext in sorted(EXTENSIONS, key=len, reverse=True):
        if pattern.endswith(ext):
            return pattern[: -len(ext)]
    return pattern


def mirror_patterns(adapter: SourceAdapter, split: str) -> list[str]:
    """The adapter's hub patterns, then the push_to_hub and the parquet-converted layouts."""
    patterns = list(adapter.file_patterns(split))
    return patterns + [p for p in (lay.format(split=split) for lay in PARQUET_LAYOUTS) if p not in patterns]


def why_missing(adapter: SourceAdapter, split: str, data_dir: Path) -> str:
    """Why a split is not in a mirror, in one line: the folder and the files looked for."""
    patterns = ", ".join(mirror_patterns(adapter, split))
    return f"no {patterns} under {Path(data_dir) / adapter.hub_id}"


def find_mirror_files(adapter: SourceAdapter, split: str, data_dir: Path) -> list[Path]:
    """The files of one split in a mirror; SourceNotFound names every glob tried."""
    root = Path(data_dir) / adapter.hub_id
    looked = []
    for pattern in mirror_patterns(adapter, split):
        for ext in EXTENSIONS:
            glob = _stem(pattern) + ext
            looked.append(str(root / glob))
            matches = sorted(p for p in root.glob(glob) if p.is_file())
            if matches:
                return matches
    raise SourceNotFound(
        f"{adapter.name}: no files for split {split!r} (known splits: {', '.join(adapter.splits)}); looked at "
        + ", ".join(looked)
        + ". Fix: point --data-dir/RMFLOW_DATA_DIR at a hub mirror holding them, or run online without one."
    )


def _present(pf: pq.ParquetFile, columns: list[str] | None) -> list[str] | None:
    """``columns`` if the file has every one of them (as a leaf path or its prefix), else None (read all)."""
    if not columns:
        return None
    paths = [pf.schema.column(i).path for i in range(len(pf.schema))]
    ok = all(any(p == c or p.startswith(c + ".") for p in paths) for c in columns)
    if not ok:
        log.debug("%s: not every column of %s is present; reading all columns", pf, columns)
    return columns if ok else None


def read_files(
    paths: list[Path], columns: list[str] | None = None
) -> tuple[pa.Table, list[tuple[int, str, str]]]:
    """Concatenate the rows of several files (numbered across files) and collect bad rows.

    ``columns`` (Parquet column paths, e.g. ``completions.list.element.response``) limits
    what Parquet files decode; JSON files are always read whole.
    """
    tables, bad = [], []
    next_row = 0
    for path in paths:
        if path.suffix == ".parquet":
            # One thread: sources are cleaned in parallel by the flows, so a threaded
            # reader only oversubscribes the cores (2x slower measured on 2 busy cores).
            pf = _parquet_file(path)
            with _decoding(path):
                t = pf.read(columns=_present(pf, columns), use_threads=False)
            _require_rows(path, t.num_rows)
            t = t.append_column(SOURCE_ROW, pa.array(range(next_row, next_row + t.num_rows), pa.int64()))
            next_row += t.num_rows
        else:
            with _decoding(path):  # a truncated or damaged .gz: never a partial read
                rows, numbers, file_bad = _json_rows(path, next_row)
            _require_rows(path, len(rows) + len(file_bad))
            next_row += len(rows) + len(file_bad)
            t, type_bad = rows_to_table(rows, numbers, str(path))
            bad += file_bad + type_bad
        tables.append(t)
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise ValueError(f"files disagree on column types ({', '.join(map(str, paths))}): {e}") from None
    return table, sorted(bad)


def iter_parquet_batches(
    paths: list[Path], columns: list[str] | None = None, batch_rows: int = 100_000
) -> Iterator[pa.RecordBatch]:
    """Stream the rows of Parquet files (in order, projected to ``columns`` where present)."""
    for path in paths:
        pf = _parquet_file(path)
        with _decoding(path):
            yield from pf.iter_batches(
                batch_size=batch_rows, columns=_present(pf, columns), use_threads=False
            )


def parquet_rows(paths: list[Path]) -> int:
    """Rows of Parquet files; EmptySourceFile for one of 0 rows."""
    total = 0
    for path in paths:
        rows = _parquet_file(path).metadata.num_rows
        _require_rows(path, rows)
        total += rows
    return total


def full_rows_json(files: list[str], rows: set[int]) -> dict[int, str]:
    """The complete raw rows (as JSON text) of some Parquet row numbers, reading only their row groups.

    Used after a projected read, so quarantined rows still carry every original field.
    """
    from rmcore.data.sources.tables import raw_json

    found: dict[int, str] = {}
    start = 0
    for name in files:
        if not name.endswith(".parquet"):
            raise ValueError(f"{name}: only Parquet files are read by column")
        pf = pq.ParquetFile(name)
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            wanted = sorted(r for r in rows if start <= r < start + n)
            if wanted:
                group = pf.read_row_group(g, use_threads=False)
                for r in wanted:
                    found[r] = raw_json(group.slice(r - start, 1).to_pylist()[0])
            start += n
    return found


def _read_hub(adapter: SourceAdapter, split: str) -> RawData:
    """``datasets.load_dataset`` at the adapter's pinned revision (needs network or a cache).

    The adapter's patterns are alternatives: the first that loads is used.
    """
    import datasets

    patterns = adapter.file_patterns(split)
    errors = []
    for pattern in patterns:
        try:
            ds = datasets.load_dataset(
                adapter.hub_id, data_files={split: pattern}, split=split, revision=adapter.revision
            )
        except FileNotFoundError as e:
            errors.append(f"{pattern}: {e}")
            continue
        except Exception as e:  # re-raised naming what was asked for
            raise SourceNotFound(
                f"{adapter.name}: could not load {adapter.hub_id}@{adapter.revision} {pattern}: {e}. "
                "Fix: pass --data-dir with a local mirror when offline."
            ) from e
        table = ds.data.table
        _require_rows(f"hf://datasets/{adapter.hub_id}@{adapter.revision}/{pattern}", table.num_rows)
        table = table.append_column(SOURCE_ROW, pa.array(range(table.num_rows), pa.int64()))
        ref = f"hf://datasets/{adapter.hub_id}@{adapter.revision}/{pattern}"
        return RawData(table, [ref], f"{adapter.hub_id}@{adapter.revision}", adapter.revision)
    raise SourceNotFound(
        f"{adapter.name}: no files for split {split!r} on the hub at {adapter.hub_id}@{adapter.revision} "
        f"(tried {patterns or 'no pattern: the hub has no such split'}); {'; '.join(errors)}"
    )


def read_raw(
    adapter: SourceAdapter,
    split: str,
    data_dir: Path | None,
    *,
    columns: list[str] | None = None,
    paths: list[Path] | None = None,
) -> RawData:
    """One split of one source: from ``data_dir`` (a hub mirror) if given, else from the hub.

    ``columns`` limits what Parquet files decode (see ``read_files``); default: everything.
    ``paths``: files holding the split outside the mirror layout (a recipe's ``files``, resolved
    and confined by ``rmcore.data.stages.listed_files``), read instead of the mirror's.
    """
    if data_dir is None and paths is None:
        return _read_hub(adapter, split)
    origin, revision = str(data_dir), "listed files"
    if paths is None:
        paths = find_mirror_files(adapter, split, Path(data_dir))
        origin, revision = str(Path(data_dir) / adapter.hub_id), "local mirror"
    table, bad = read_files(paths, columns)
    rows, n = table.num_rows + len(bad), len(paths)
    log.info("%s/%s: %d rows (%d unreadable) from %d file(s)", adapter.name, split, rows, len(bad), n)
    return RawData(table, [str(p) for p in paths], origin, revision, bad)
