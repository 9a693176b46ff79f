"""The only Parquet read/write in rmflow: validates the contract, writes atomically.

Every write goes to a temporary file in the destination directory and is renamed
into place, so a killed stage never leaves a partial file under the final name.
Temp names carry the writer (``.<name>.<random>.p<pid>-h<host digest>.tmp``): once a write
publishes, temps of the same name left by writers on this host that no longer run (a killed
run) are removed; a live writer's temp is never touched (see ``remove_dead_temps``).
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from data_contracts import Contract, validate
from rmcore.liveness import HOST_DIGEST, process_gone

log = logging.getLogger(__name__)

_CHUNK = 1 << 20
_UMASK = os.umask(0)
os.umask(_UMASK)


_TEMP_TAG = re.compile(r"\.p(\d+)-h([0-9a-f]{8})\.tmp$")


def _temp_suffix() -> str:
    """``.p<pid>-h<host digest>.tmp``: who writes this temp (the pid is read at each call: forks)."""
    return f".p{os.getpid()}-h{HOST_DIGEST}.tmp"


def owned_temp_name(dest: str | os.PathLike[str], label: str) -> Path:
    """``.<name>.<label>.p<pid>-h<host>.tmp`` beside ``dest``: a temporary name that
    :func:`remove_dead_temps` sweeps once this process is gone (e.g. a folder moved aside)."""
    dest = Path(dest)
    return dest.with_name(f".{dest.name}.{label}{_temp_suffix()}")


def remove_dead_temps(path: str | os.PathLike[str], *, min_age: float = 0.0) -> list[Path]:
    """Remove temps of ``path`` (``.<name>.*.p<pid>-h<host>.tmp`` beside it, files or folders) whose
    writer ran on this host and is gone; return what was removed.

    Never a live run's temp: its pid exists. Temps of other hosts (a shared disk), of unknown
    writers (older names) and younger than ``min_age`` seconds are left alone.
    """
    import time

    dest = Path(path)
    prefix, removed, now = f".{dest.name}.", [], time.time()
    try:
        entries = list(os.scandir(dest.parent))
    except OSError:
        return []
    for entry in entries:
        tag = _TEMP_TAG.search(entry.name)
        if not entry.name.startswith(prefix) or tag is None or tag.group(2) != HOST_DIGEST:
            continue
        try:
            young = now - entry.stat(follow_symlinks=False).st_mtime < min_age
        except OSError:
            continue  # removed meanwhile, or not ours to look at
        if young or not process_gone(int(tag.group(1))):
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        except FileNotFoundError:
            continue  # a concurrent sweep removed it first
        except OSError as e:  # cleaning up is best effort: the write itself succeeded
            log.warning("%s: leftover of a dead run not removed: %s", entry.path, e)
            continue
        removed.append(Path(entry.path))
        log.info("removed %s, left by a run that no longer exists", entry.path)
    return removed


_NO_SPACE = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}
_NO_ACCESS = {errno.EACCES, errno.EPERM, errno.EROFS}


_REPLACING: dict[Path, Path] = {}
"""Temp folder of an open ``replace_dir`` -> the folder it will replace (errors name the latter)."""


def _write_error(dest: Path, e: OSError) -> OSError:
    """A disk-full / permission error re-raised as the same OSError kind, naming ``dest`` (not a temp
    file) and the fix; other errors unchanged. The previous ``dest``, if any, is untouched."""
    dest = _REPLACING.get(dest.parent, dest.parent) / dest.name
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
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=_temp_suffix(), dir=dest.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are shared files
        os.replace(tmp_path, dest)
        remove_dead_temps(dest)
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


def _temp_dir_beside(dest: Path) -> Path:
    """A new empty ``.<name>.*.tmp`` directory beside ``dest``; a disk/permission error names ``dest``."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=_temp_suffix(), dir=dest.parent))
    except OSError as e:
        named = _write_error(dest, e)
        if named is e:
            raise
        raise named from e


@contextmanager
def exclusive(lock_path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (one process at a time, on this host); the lock
    is released when the block ends or the process dies."""
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp directory beside ``path``; publish it as ``path`` by one rename.

    Content-addressed outputs: if ``path`` appeared meanwhile (a concurrent run with the
    same inputs), the existing one wins and the temp copy is discarded; both are equal.
    """
    dest = Path(path)
    tmp = _temp_dir_beside(dest)
    try:
        yield tmp
        try:
            os.rename(tmp, dest)
        except OSError:
            if not dest.is_dir():
                raise
        remove_dead_temps(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False where the
    system or filesystem cannot."""
    import ctypes
    import sys

    if not sys.platform.startswith("linux"):
        return False
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


@contextmanager
def replace_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp directory beside ``path``; if the block succeeds it replaces ``path`` whole.

    For a folder of files that belong together (e.g. pairs + quarantine) and is rewritten in
    place: a reader or a kill sees the previous folder or the new one, never files of both.
    The swap is one atomic exchange on Linux; elsewhere the old folder is first renamed aside
    (``.<name>.*.tmp``), so a kill between the two renames leaves no folder, never a mix.
    On failure ``path`` is left as it was; a disk-full / permission error names the file under
    ``path``, not under the temp folder.
    """
    import uuid

    dest = Path(path)
    tmp = building = _temp_dir_beside(dest)
    _REPLACING[building] = dest
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)  # mkdtemp makes 0700; outputs are shared folders
        if not dest.exists():
            os.rename(tmp, dest)
        elif not _exchange(tmp, dest):
            aside = owned_temp_name(dest, uuid.uuid4().hex[:8])
            os.rename(dest, aside)
            os.rename(tmp, dest)
            tmp = aside
        # after the exchange ``tmp`` holds the previous folder: removed below
        remove_dead_temps(dest)
    finally:
        _REPLACING.pop(building, None)
        shutil.rmtree(tmp, ignore_errors=True)
