"""The only Parquet read/write in rmflow: validates the contract, writes atomically.

Every write goes to a temporary file in the destination directory and is renamed
into place, so a killed stage never leaves a partial file under the final name.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_contracts import Contract, validate

_CHUNK = 1 << 20
_UMASK = os.umask(0)
os.umask(_UMASK)


_NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_NO_ACCESS = {errno.EACCES, errno.EPERM, errno.EROFS}


def _write_error(dest: Path, e: OSError) -> OSError:
    """A disk-full / permission error re-raised as the same OSError kind, naming ``dest`` (not a temp
    file) and the fix; other errors unchanged. The previous ``dest``, if any, is untouched."""
    if e.errno in _NO_SPACE:
        fix = f"free space on the disk holding {dest.parent} (or raise the file-size limit), then rerun"
    elif e.errno in _NO_ACCESS:
        fix = f"make {dest.parent} writable for this user or choose another output folder, then rerun"
    else:
        return e
    kept = "; the previous one is unchanged" if dest.exists() else ""
    return OSError(e.errno, f"cannot write {dest}: {e.strerror or e}{kept}. Fix: {fix}")


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it onto ``path`` only if the block succeeds.

    On failure the temp file is removed and ``path`` keeps its previous content; a disk-full
    or permission error names ``path``.
    """
    dest = Path(path)
    tmp_path: Path | None = None
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared files
        os.replace(tmp_path, dest)
    except OSError as e:
        named = _write_error(dest, e)
        if named is e:
            raise
        raise named from e
    finally:
        if tmp_path is not None and tmp_path.exists():
            tmp_path.unlink()


def write_table(table: pa.Table, path: str | os.PathLike[str], contract: Contract | str | None) -> str:
    """Validate ``table`` against ``contract``, write it atomically; return the file's sha256.

    ``contract=None`` is only for raw source tables, whose schema is the hub's and is
    checked row by row by the source's adapter.
    """
    checked = validate(table, contract, where=str(path)) if contract is not None else table
    with atomic_path(path) as tmp:
        pq.write_table(checked, tmp, compression="zstd")
    return file_sha256(path)


def read_table(path: str | os.PathLike[str], contract: Contract | str | None = None) -> pa.Table:
    """Read a Parquet file; with a contract, validate it (error names the file)."""
    table = pq.read_table(path)
    return validate(table, contract, where=str(path)) if contract is not None else table


def write_json(obj: Any, path: str | os.PathLike[str]) -> str:
    """Write JSON atomically (sorted keys, so equal content gives equal bytes); return sha256."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return file_sha256(path)


def write_text(text: str, path: str | os.PathLike[str]) -> str:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return file_sha256(path)


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text())


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def table_digest(table: pa.Table) -> str:
    """Content digest of a table independent of Parquet encoding: sha256 over its IPC stream."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table.combine_chunks())
    return hashlib.sha256(sink.getvalue().to_pybytes()).hexdigest()


def digest_strings(*parts: str) -> str:
    """A stable sha256 of several strings (cache keys, pair ids)."""
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    return h.hexdigest()


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp directory beside ``path``; publish it as ``path`` by one rename.

    Content-addressed outputs: if ``path`` appeared meanwhile (a concurrent run with the
    same inputs), the existing one wins and the temp copy is discarded; both are equal.
    """
    import shutil

    dest = Path(path)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent))
    except OSError as e:
        named = _write_error(dest, e)
        if named is e:
            raise
        raise named from e
    try:
        yield tmp
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
