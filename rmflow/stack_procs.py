"""Background processes of the local stack: start detached, record, check, stop.

Each process runs in its own session (so its process group id is its pid) with stdout
and stderr appended to ``<home>/logs/<name>.log``; its pid goes to ``<home>/pids/<name>.pid``
and its start time (from /proc) to ``<home>/pids/<name>.start`` so that ``down`` never
signals an unrelated process that reused the pid.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (index 0 = state), or None."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), None if it is gone."""
    fields = _proc_stat(pid)
    return fields[19] if fields else None


def is_alive(pid: int) -> bool:
    """True if ``pid`` runs and is not a zombie."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, grandchildren, ...), from /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        fields = _proc_stat(int(entry.name))
        if fields:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def spawn(name: str, cmd: Sequence[str], env: Mapping[str, str], cwd: Path, home: Path) -> int:
    """Start ``cmd`` detached in its own session; log to logs/<name>.log; record its pid."""
    log_path = home / "logs" / f"{name}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    (home / "pids").mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        log.write(f"\n=== rmflow: starting {name}: {' '.join(cmd)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            list(cmd),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    write_pid(home, name, proc.pid)
    return proc.pid


def write_pid(home: Path, name: str, pid: int) -> None:
    """Record ``pid`` (and its start time) as the process called ``name``."""
    (home / "pids" / f"{name}.pid").write_text(f"{pid}\n")
    (home / "pids" / f"{name}.start").write_text(f"{start_time(pid) or ''}\n")


def read_pid(home: Path, name: str) -> int | None:
    """The recorded pid of ``name``, or None if there is no readable pid file."""
    try:
        return int((home / "pids" / f"{name}.pid").read_text().strip())
    except (OSError, ValueError):
        return None


def recorded_names(home: Path) -> list[str]:
    """Names with a pid file under ``home``, sorted."""
    return sorted(p.stem for p in (home / "pids").glob("*.pid"))


def is_ours(home: Path, name: str, pid: int) -> bool:
    """True if ``pid`` still is the process we started as ``name`` (same start time)."""
    if not is_alive(pid):
        return False
    try:
        recorded = (home / "pids" / f"{name}.start").read_text().strip()
    except OSError:
        recorded = ""
    return not recorded or recorded == start_time(pid)


def remove_pid(home: Path, name: str) -> None:
    for suffix in (".pid", ".start"):
        (home / "pids" / f"{name}{suffix}").unlink(missing_ok=True)


def _signal_all(pids: Sequence[int], pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass


def _reap(pids: Sequence[int]) -> None:
    """Collect exit statuses of any of ``pids`` that are our own children (no zombies)."""
    for pid in pids:
        try:
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass


def stop(pid: int, timeout: float) -> str:
    """Stop ``pid``, its process group and its descendants: SIGTERM, then SIGKILL.

    Returns how it ended: ``"terminated"`` or ``"killed"``.
    """
    family = [pid, *descendants(pid)]
    _signal_all(family, pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _reap(family)
        if not any(is_alive(p) for p in family):
            return "terminated"
        time.sleep(0.2)
    _signal_all([p for p in family if is_alive(p)], pid, signal.SIGKILL)
    for _ in range(50):
        _reap(family)
        if not any(is_alive(p) for p in family):
            break
        time.sleep(0.1)
    return "killed"


def port_open(host: str, port: int) -> bool:
    """True if something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 3.0) -> bool:
    """True if GET ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def log_tail(path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
