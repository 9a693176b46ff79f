"""Temp leftovers of killed runs are removed by the next write; a live run's temps never are.

rmcore.io names every temp after its writer (``.<name>.<random>.p<pid>-h<host>.tmp``). Once a
write of ``<name>`` publishes, temps of ``<name>`` whose writer ran on this host and no longer
exists are removed. Writers here are real child processes, killed with SIGKILL or paused
mid-write; the live one is released afterwards and must still publish its file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rmcore import io
from rmcore.liveness import HOST_DIGEST

ROOT = Path(__file__).resolve().parents[1]

WRITERS = {
    # A file being written by atomic_path (what write_table/write_json use).
    "file": "with io.atomic_path(dest) as tmp:\n    tmp.write_text('half')\n    {then}\n",
    # A stage folder being built by atomic_dir (build_once), one file already in it.
    "folder": "with io.atomic_dir(dest) as tmp:\n    (tmp / 'part').write_text('half')\n    {then}\n",
}
KILL = "os.kill(os.getpid(), 9)"
PAUSE = "(dest.parent / 'reached').touch()\n    wait(dest.parent / 'go')\n    tmp.write_text('child') if tmp.is_file() else None"


def start_writer(kind: str, dest: Path, then: str) -> subprocess.Popen:
    """A child process writing ``dest`` the way ``kind`` does; ``then`` runs mid-write."""
    code = (
        "import os, sys, time\nfrom pathlib import Path\nfrom rmcore import io\n"
        "def wait(p):\n    while not p.exists():\n        time.sleep(0.02)\n"
        "dest = Path(sys.argv[1])\n" + WRITERS[kind].format(then=then)
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, str(dest)], cwd=ROOT, env=env)


def temps(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.parent.iterdir() if p.name.startswith(f".{dest.name}."))


def wait_for(path: Path, proc: subprocess.Popen) -> None:
    while not path.exists():
        assert proc.poll() is None, f"writer ended ({proc.returncode}) before {path.name}"
        time.sleep(0.02)


@pytest.mark.parametrize("kind", list(WRITERS))
def test_the_temp_of_a_killed_writer_is_removed_once_the_next_write_publishes(kind: str, tmp_path: Path):
    dest = tmp_path / "out.json"
    assert start_writer(kind, dest, KILL).wait(timeout=120) == -9
    [left] = temps(dest)
    assert left.endswith(".tmp") and f"-h{HOST_DIGEST}" in left

    if kind == "file":
        io.write_json({"run": 2}, dest)
    else:
        with io.atomic_dir(dest) as tmp:
            (tmp / "part").write_text("whole")
    assert temps(dest) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


@pytest.mark.parametrize("kind", list(WRITERS))
def test_a_live_writers_temp_is_never_removed_and_it_still_publishes(kind: str, tmp_path: Path):
    dest = tmp_path / "out.json"
    writer = start_writer(kind, dest, PAUSE)
    try:
        wait_for(tmp_path / "reached", writer)
        [live] = temps(dest)
        assert io.remove_dead_temps(dest) == []
        if kind == "file":
            io.write_json({"run": "parent"}, dest)  # publishes, then sweeps
        else:
            with io.atomic_dir(dest) as tmp:
                (tmp / "part").write_text("parent")
        assert temps(dest) == [live]
        (tmp_path / "go").touch()
        assert writer.wait(timeout=120) == 0
    finally:
        if writer.poll() is None:
            writer.kill()
    assert temps(dest) == []
    if kind == "file":
        assert dest.read_text() == "child"  # the live writer's rename still found its temp
    else:
        assert (dest / "part").read_text() == "parent"  # the first folder published wins


def test_temps_of_other_hosts_and_unknown_writers_are_left_alone(tmp_path: Path):
    dest = tmp_path / "out.json"
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], check=True, capture_output=True, text=True
    )
    pid = int(gone.stdout)  # a process that has ended
    other_host = "0" * 8 if HOST_DIGEST != "0" * 8 else "1" * 8
    kept = [
        f".out.json.a1.p{pid}-h{other_host}.tmp",
        ".out.json.b2.tmp",
        f".other.json.c3.p{pid}-h{HOST_DIGEST}.tmp",
    ]
    dead = f".out.json.d4.p{pid}-h{HOST_DIGEST}.tmp"
    for name in (*kept, dead):
        (tmp_path / name).write_text("left over")
    io.write_json({"run": 2}, dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*kept, "out.json"])
    assert json.loads(dest.read_text()) == {"run": 2}
    os.utime(tmp_path / kept[0], (0, 0))
    assert io.remove_dead_temps(dest, min_age=3600) == []  # an old entry of another host stays too


def test_a_stage_folder_moved_aside_by_a_dead_run_is_swept_by_the_next_build(tmp_path):
    """build_once moves a damaged stage folder aside before deleting it; a run killed between
    the two leaves the moved folder, named for its process, and the next build removes it."""
    from tasks.caching import build_once, is_complete, mark_complete

    out = tmp_path / "stage" / "abc123"
    out.mkdir(parents=True)
    (out / "data").write_text("damaged")
    mark_complete(out)
    code = (
        "import os, shutil, sys\nfrom pathlib import Path\nfrom tasks.caching import build_once\n"
        "shutil.rmtree = lambda *a, **k: os.kill(os.getpid(), 9)  # die right after the move aside\n"
        "build_once(Path(sys.argv[1]), lambda tmp: None, intact=lambda p: False)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    child = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, env=env, check=False)
    assert child.returncode == -9
    [left] = temps(out)
    assert left.startswith(".abc123.stale-") and left.endswith(".tmp") and not out.exists()
    build_once(out, lambda tmp: (tmp / "data").write_text("new"))
    assert is_complete(out) and (out / "data").read_text() == "new"
    assert temps(out) == []
