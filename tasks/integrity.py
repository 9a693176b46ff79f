"""Trust nothing on disk: what a stage published, and whether its inputs are what was recorded.

Every stage folder holds ``_CONTENTS.json`` (each file's relative path, size and sha256), written
just before its ``_SUCCESS`` marker. A cache hit is served only while the folder still matches it
(``intact``): a deleted, truncated, flipped or added file is logged and the stage rebuilt, never
served. A task also checks each input it reads against the digest the upstream stage recorded
(``check_file``, ``check_table``, ``check_model``); a mismatch raises ``InputChanged``, naming the
file and the command that rebuilds it (that stage's own ``intact`` check rebuilds its folder).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from rmcore import io

log = logging.getLogger(__name__)

CONTENTS = "_CONTENTS.json"
SUCCESS = "_SUCCESS"
MARKERS = frozenset({CONTENTS, SUCCESS})


class InputChanged(ValueError):
    """A task's input no longer has the digest recorded for it (changed, truncated or unreadable)."""


def retry_unless_input_changed(task: object, task_run: object, state: object) -> bool:
    """Prefect ``retry_condition_fn``: retry a failure, except a changed input (it stays changed;
    the error names the command that rebuilds it). A persisted failure holds its exception in a
    result record's ``result``."""
    data = getattr(state, "data", None)
    return not isinstance(getattr(data, "result", data), InputChanged)


def _files(folder: Path) -> list[str]:
    """Every file under ``folder`` (relative, '/'-separated, sorted), the markers left out."""
    out = []
    for root, _dirs, names in os.walk(folder):
        for name in names:
            rel = Path(root, name).relative_to(folder).as_posix()
            if rel not in MARKERS:
                out.append(rel)
    return sorted(out)


def write_contents(folder: Path) -> dict[str, dict]:
    """Record every file of a finished stage folder (path -> size, sha256) in ``_CONTENTS.json``."""
    files = {
        rel: {"size": (folder / rel).stat().st_size, "sha256": io.file_sha256(folder / rel)}
        for rel in _files(folder)
    }
    io.write_json({"version": 1, "files": files}, folder / CONTENTS)
    return files


def contents_problems(folder: Path, *, shallow: tuple[str, ...] = ()) -> list[str]:
    """How ``folder`` differs from its ``_CONTENTS.json`` (empty: intact). Files under a ``shallow``
    prefix are checked for presence and size only (resume state too large to hash on every hit)."""
    try:
        recorded = io.read_json(folder / CONTENTS)["files"]
    except FileNotFoundError:
        return [f"no {CONTENTS} (made before rmflow recorded stage contents, or damaged)"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        return [f"{CONTENTS} unreadable: {e}"]
    problems = []
    present = set(_files(folder))
    problems += [f"{rel}: not in what was published" for rel in sorted(present - recorded.keys())]
    for rel, entry in sorted(recorded.items()):
        path = folder / rel
        if rel not in present:
            problems.append(f"{rel}: missing")
        elif (size := path.stat().st_size) != entry["size"]:
            problems.append(f"{rel}: {size} bytes, published {entry['size']}")
        elif not (shallow and rel.startswith(shallow)) and io.file_sha256(path) != entry["sha256"]:
            problems.append(f"{rel}: sha256 differs from the published one")
    return problems


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The Prefect run logger inside a run (the line shows in the UI), else this module's."""
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        return get_run_logger()
    except MissingContextError:
        return log


def intact(folder: Path, *, shallow: tuple[str, ...] = ()) -> bool:
    """The default ``Stage.intact``: the folder still holds exactly what it published. A mismatch
    is logged; the caller then rebuilds the stage."""
    problems = contents_problems(folder, shallow=shallow)
    if problems:
        more = f" (+{len(problems) - 5} more)" if len(problems) > 5 else ""
        run_logger().warning("%s: not as published, rebuilding it: %s%s", folder, "; ".join(problems[:5]), more)
    return not problems


def intact_except_deep(shallow: tuple[str, ...]) -> Callable[[Path], bool]:
    """``intact`` with files under ``shallow`` prefixes checked by presence and size only."""

    def check(folder: Path) -> bool:
        return intact(folder, shallow=shallow)

    return check


def _changed(path: Path, what: str, actual: str, recorded: str, fix: str) -> InputChanged:
    return InputChanged(
        f"{path}: {what} {actual[:16]}... does not match {recorded[:16]}... recorded when it was written: "
        f"the file changed since. Fix: {fix}"
    )


def rebuild_fix(path: Path, command: str) -> str:
    """The fix line of an input error: rerun the stage that wrote ``path`` (its content check then
    rebuilds the damaged folder), or delete that folder by hand."""
    return f"rerun `{command}` (the stage that wrote it checks its folder and rebuilds it), or delete {path.parent} and rerun"


def check_file(path: str | os.PathLike[str], sha256: str, *, command: str) -> None:
    """``path`` still has the sha256 recorded for it; else ``InputChanged`` naming the rebuild."""
    path = Path(path)
    try:
        actual = io.file_sha256(path)
    except OSError as e:
        raise InputChanged(f"{path}: cannot be read ({e}). Fix: {rebuild_fix(path, command)}") from e
    if actual != sha256:
        raise _changed(path, "sha256", actual, sha256, rebuild_fix(path, command))


def check_table(path: str | os.PathLike[str], digest: str, *, command: str, contract: str | None = None) -> None:
    """The Parquet table at ``path`` still has the content digest recorded for it (``io.table_digest``
    of the table read as its writer read it: with its data ``contract`` where the writer digested
    the validated table); a file that no longer reads as Parquet is named with the same fix."""
    path = Path(path)
    try:
        actual = io.table_digest(io.read_table(path, contract))
    except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ...: all mean unreadable
        raise InputChanged(
            f"{path}: cannot be read as the Parquet table recorded for it ({type(e).__name__}: {str(e)[:200]}). "
            f"Fix: {rebuild_fix(path, command)}"
        ) from e
    if actual != digest:
        raise _changed(path, "table digest", actual, digest, rebuild_fix(path, command))


def check_model(model_dir: str | os.PathLike[str], digest: str, *, command: str) -> None:
    """The model folder still has the content digest it was trained (and evaluated) with."""
    from tracking.registry import model_dir_digest

    model_dir = Path(model_dir)
    actual = model_dir_digest(model_dir) if model_dir.is_dir() else "missing"
    if actual != digest:
        raise _changed(model_dir, "model folder digest", actual, digest, rebuild_fix(model_dir, command))
