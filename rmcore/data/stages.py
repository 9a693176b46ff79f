"""File-level data stages: download (raw Parquet + manifest) and clean (pairs + quarantine + stats).

These are the functions the Prefect tasks and the CLI call: paths in, paths and digests out.
"""

from __future__ import annotations

import glob
import hashlib
import logging
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa

from data_contracts import PAIRS, QUARANTINE, RAW_MANIFEST, validate
from rmcore import io
from rmcore.config import ConfigError
from rmcore.data.sources.base import CleanOptions, CleanResult
from rmcore.data.stats import rules_text, stats_row

log = logging.getLogger(__name__)


class SourceFilesError(ConfigError):
    """A recipe entry's ``files`` that cannot be read: no data dir, a path escaping it, a glob
    matching nothing. Permanent: a retry fails the same way."""


def listed_files(files: Sequence[str], data_dir: Path | None, *, where: str) -> list[Path]:
    """The files a recipe entry lists (globs relative to the data dir): sorted, each once.

    Every path must stay inside the data dir (``..``, absolute paths and symlinks followed
    included) and every glob must match at least one file; else SourceFilesError naming
    ``where`` (the recipe entry), the path and the data dir.
    """
    if data_dir is None:
        raise SourceFilesError(
            f"{where}: files {list(files)} are read from a local data dir, and this run reads the hub. "
            "Fix: pass --data-dir (or set RMFLOW_DATA_DIR) to the folder holding them."
        )
    root = Path(data_dir).expanduser().resolve()

    def escaping(pattern: str, resolved: Path | str) -> SourceFilesError:
        return SourceFilesError(
            f"{where}: files entry {pattern!r} resolves to {resolved}, outside the data dir {root}. "
            "Fix: list paths relative to the data dir that stay inside it (copy the file there if need be)."
        )

    found: set[Path] = set()
    for pattern in files:
        literal = Path(os.path.normpath(root / pattern))  # '..' and absolute paths, before any glob
        if not literal.is_relative_to(root):
            raise escaping(pattern, literal)
        relative = str(literal.relative_to(root))
        matches = [root / m for m in glob.glob(relative, root_dir=root, recursive=True)]
        matches = [m for m in matches if m.is_file()]
        if not matches:
            raise SourceFilesError(
                f"{where}: files entry {pattern!r} matches no file under the data dir {root} "
                f"(looked for {literal}). Fix: correct the path (relative to the data dir) or --data-dir."
            )
        for match in matches:
            if not match.resolve().is_relative_to(root):
                raise escaping(pattern, f"{match.resolve()} (through a symlink)")
        found.update(matches)
    return sorted(found)


def source_files(
    source: str, split: str, data_dir: Path | None, files: Sequence[str] | None = None, *, where: str = ""
) -> list[Path]:
    """The input files of one source split: ``files`` (``listed_files``) if given, else the
    mirror's (``<data_dir>/<hub id>/<pattern>``, [] if absent)."""
    from rmcore.data.sources.catalog import get_adapter
    from rmcore.data.sources.mirror import SourceNotFound, find_mirror_files

    if files is not None:
        return listed_files(files, data_dir, where=where or f"{source} [{split}]")
    try:
        return find_mirror_files(get_adapter(source), split, Path(data_dir))
    except SourceNotFound:
        return []


def source_fingerprint(
    source: str, split: str, data_dir: Path | None, files: Sequence[str] | None = None, *, where: str = ""
) -> str:
    """Content digest of a source split's input: the bytes (and names) of its mirror files or of
    its listed ``files``, or hub id @ revision. Listed files never share a digest with the mirror."""
    from rmcore.data.sources.catalog import get_adapter

    adapter = get_adapter(source)
    if data_dir is None and files is None:
        return f"hub:{adapter.hub_id}@{adapter.revision}"
    paths = source_files(source, split, data_dir, files, where=where)
    root = Path(data_dir).expanduser().resolve() if files is not None else Path(data_dir)
    h = hashlib.sha256(b"listed-files\0" if files is not None else b"")
    for path in paths:
        h.update(str(path.relative_to(root)).encode())
        h.update(io.file_sha256(path).encode())
    return h.hexdigest() if paths else "missing"


def download_source(
    source: str,
    split: str,
    data_dir: Path | None,
    out_dir: Path,
    *,
    files: Sequence[str] | None = None,
    publish_dir: Path | None = None,
) -> dict:
    """Read one source split from the mirror, its listed ``files`` or the hub; write raw.parquet,
    bad_rows.parquet and the manifest (which names the files read).

    ``files``: paths (globs) relative to ``data_dir`` read instead of the mirror layout (``listed_files``).
    ``publish_dir``: the folder ``out_dir`` (a temp build folder) is renamed to once complete; the
    manifest's ``output`` names the raw.parquet there, not in the temp folder. Default ``out_dir``.
    """
    from rmcore.data.sources.catalog import get_adapter
    from rmcore.data.sources.mirror import read_raw

    adapter = get_adapter(source)
    paths = None if files is None else listed_files(files, data_dir, where=f"{source} [{split}]")
    raw = read_raw(adapter, split, data_dir, paths=paths)
    out_dir.mkdir(parents=True, exist_ok=True)
    sha = io.write_table(raw.table, out_dir / "raw.parquet", None)
    bad = quarantine_table(source, raw.bad_rows)
    io.write_table(bad, out_dir / "bad_rows.parquet", QUARANTINE)
    manifest = {
        "source": source,
        "subset": source,
        "split": split,
        "origin": raw.origin,
        "revision": raw.revision,
        "rows": raw.table.num_rows + bad.num_rows,
        "sha256": sha,
        "output": str(Path(publish_dir or out_dir) / "raw.parquet"),
        "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    io.write_table(
        pa.Table.from_pylist([manifest], schema=RAW_MANIFEST.schema),
        out_dir / "manifest.parquet",
        RAW_MANIFEST,
    )
    listed = {"listed_files": list(files)} if files is not None else {}
    io.write_json({**manifest, "files": [str(f) for f in raw.files], **listed}, out_dir / "manifest.json")
    log.info(
        "downloaded %s/%s: %d rows (%d unreadable) from %s",
        source,
        split,
        manifest["rows"],
        bad.num_rows,
        raw.origin,
    )
    return manifest


class ChecksumMismatch(ValueError):
    """A downloaded raw.parquet whose bytes no longer match the sha256 in its manifest."""


def verify_download(raw_dir: Path) -> dict:
    """The download manifest of ``raw_dir``, after checking raw.parquet still has its recorded sha256.

    A file changed after download (disk fault, truncated copy, hand edit) is refused, never read.
    """
    raw_dir = Path(raw_dir)
    manifest = io.read_json(raw_dir / "manifest.json")
    raw = raw_dir / "raw.parquet"
    actual = io.file_sha256(raw)
    if actual != manifest["sha256"]:
        raise ChecksumMismatch(
            f"{raw}: sha256 {actual} does not match {manifest['sha256']} recorded in "
            f"{raw_dir / 'manifest.json'}; the file changed after download and is not used. "
            f"Fix: delete {raw_dir} and run the download stage again (the pipeline refetches it)."
        )
    return manifest


def download_intact(raw_dir: Path) -> bool:
    """True if ``raw_dir`` holds a manifest and a raw.parquet matching its sha256 (the cache check)."""
    try:
        verify_download(raw_dir)
    except (OSError, ValueError, KeyError) as e:
        log.warning("%s: download not intact, refetching: %s", raw_dir, e)
        return False
    return True


def retry_can_help(error: BaseException) -> bool:
    """False for a download error that fails the same way on every attempt, so retrying only delays it.

    Permanent: a corrupt or truncated mirror file (CorruptSourceFile), a raw.parquet whose bytes
    differ from its manifest (ChecksumMismatch), a source split with no files (a SourceNotFound
    raised by itself), listed files that are missing or outside the data dir (SourceFilesError). A SourceNotFound wrapping another error (the hub loader's connection reset,
    a truncated transfer) and every other error are treated as transient.
    """
    from rmcore.data.sources.mirror import CorruptSourceFile, SourceNotFound

    if isinstance(error, (CorruptSourceFile, ChecksumMismatch, SourceFilesError)):
        return False
    return not (isinstance(error, SourceNotFound) and error.__cause__ is None)


def read_download(raw_dir: Path) -> tuple[pa.Table, pa.Table]:
    """A download folder's raw table and its unreadable rows (QUARANTINE), read only after
    raw.parquet is checked against its manifest's sha256."""
    raw_dir = Path(raw_dir)
    verify_download(raw_dir)
    return io.read_table(raw_dir / "raw.parquet"), io.read_table(raw_dir / "bad_rows.parquet", QUARANTINE)


def quarantine_table(source: str, bad_rows: list) -> pa.Table:
    """Rows that could not even be read (bad JSON, bad encoding) as quarantine rows."""
    rows = [
        {"source": source, "source_row": int(r), "reason": reason, "raw": raw} for r, reason, raw in bad_rows
    ]
    return pa.Table.from_pylist(rows, schema=QUARANTINE.schema)


def clean_downloaded(
    source: str,
    split: str,
    raw_dir: Path,
    options: CleanOptions,
    out_dir: Path,
    *,
    publish_dir: Path | None = None,
) -> dict:
    """Clean one downloaded source split; every raw row is kept, dropped by a rule or quarantined.

    ``publish_dir`` as in ``download_source``: the summary names the files where they will be read.
    """
    from rmcore.data.sources.catalog import get_adapter

    adapter = get_adapter(source)
    raw, unreadable = read_download(raw_dir)
    result: CleanResult = adapter.clean(raw, options, split=split)
    result.rows_in += unreadable.num_rows
    if result.raw_rows is not None:
        result.raw_rows += unreadable.num_rows
    if unreadable.num_rows:
        own = validate(result.quarantine, QUARANTINE, where=f"{source} quarantine")
        result.quarantine = pa.concat_tables([own, unreadable])
    result.check_accounting()
    out_dir.mkdir(parents=True, exist_ok=True)
    io.write_table(result.pairs, out_dir / "pairs.parquet", PAIRS)
    io.write_table(result.quarantine, out_dir / "quarantine.parquet", QUARANTINE)
    raw_rows = result.raw_rows if result.raw_rows is not None else result.rows_in
    stats = stats_row(
        source,
        result.pairs,
        rows_in=result.rows_in,
        dropped=result.dropped,
        quarantined=result.quarantined,
        raw_rows=raw_rows,
        unit=result.unit,
    )
    summary = {
        "source": source,
        "split": split,
        "rows_in": result.rows_in,
        "unit": result.unit,
        "raw_rows": raw_rows,
        "kept": result.kept,
        "dropped": dict(sorted(result.dropped.items())),
        "quarantined": result.quarantined,
        "output": str(Path(publish_dir or out_dir) / "pairs.parquet"),
        "quarantine": str(Path(publish_dir or out_dir) / "quarantine.parquet"),
        "digest": io.table_digest(io.read_table(out_dir / "pairs.parquet")),
        "stats": stats,
    }
    io.write_json(summary, out_dir / "summary.json")
    log.info(
        "cleaned %s/%s: %s in, %s kept, %s quarantined; dropped by rule: %s",
        source,
        split,
        f"{result.rows_in:,}",
        f"{result.kept:,}",
        f"{result.quarantined:,}",
        rules_text(dict(sorted(result.dropped.items()))),
    )
    return summary
