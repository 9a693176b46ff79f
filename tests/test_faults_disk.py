"""Disk full and permission denied on the output directory.

What must hold: the write fails with an error that names the destination path (not a temp
file) and keeps the errno; the previous good output keeps its exact bytes; no temp file or
temp folder is left behind; a stage folder is published whole or not at all.

Real mechanisms, each in a child process (``python tests/test_faults_disk.py CONFIG``):

- **permission denied**: the output folder is mode 0555 and the child is unprivileged. As
  root, chmod alone does not stop writes, so a root test process drops the child to
  ``nobody`` (setgid/setuid) first; as another user the mode is enough.
- **disk full**: ``RLIMIT_FSIZE`` with SIGXFSZ ignored, so a write past the limit fails with
  EFBIG ("File too large") at the write that crosses it, like ENOSPC on a full disk. It works
  for any user, so it carries the disk-full tests. A real ENOSPC needs a small full
  filesystem: one test mounts a 256 KiB tmpfs in a private mount namespace (``unshare
  --mount``, root only) and is skipped where that is not allowed. rmcore.io treats ENOSPC,
  EFBIG and EDQUOT alike.

Covered: ``write_table`` / ``write_json`` / ``write_text``, a stage folder built by
``build_once`` (what every stage task uses) and ``rmflow clean`` end to end.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve()
ROWS = 40
LIMIT = 16 * 1024
"""File-size limit in the disk-full child: every new output below is larger, every old one smaller."""


# --- the child ---------------------------------------------------------------------------------


def _drop_privileges() -> None:
    """Become ``nobody`` when running as root (root ignores file modes); otherwise nothing."""
    if os.geteuid() != 0:
        return
    import pwd

    nobody = pwd.getpwnam("nobody")
    os.setgroups([])
    os.setgid(nobody.pw_gid)
    os.setuid(nobody.pw_uid)


def _fill_disk(limit: int) -> None:
    """Writes that would make any file larger than ``limit`` bytes fail with EFBIG."""
    import resource
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def big_table(seed: int):
    """~200 KB of incompressible text (a new output larger than LIMIT)."""
    import random

    import pyarrow as pa

    rng = random.Random(seed)
    return pa.table({"text": [f"{rng.getrandbits(256):064x}" for _ in range(3000)]})


def _act(action: str, args: dict) -> None:
    from rmcore import io

    if action == "write_table":
        io.write_table(big_table(1), args["dest"], None)
    elif action == "write_json":
        io.write_json({"text": big_table(1).column("text").to_pylist()}, args["dest"])
    elif action == "write_text":
        io.write_text("\n".join(big_table(1).column("text").to_pylist()), args["dest"])
    elif action == "cli":
        from rmflow.cli import main

        code = main(args["argv"].split("\x00"))
        if code:
            raise SystemExit(code)
    elif action == "download_stage":  # what tasks.data.download_task does, without Prefect
        from rmcore.data.stages import download_source
        from tasks.caching import build_once

        build_once(
            Path(args["dest"]), lambda tmp: download_source("helpsteer", "train", Path(args["mirror"]), tmp)
        )
    else:
        raise ValueError(action)


def _import_everything(action: str) -> None:
    """Import what the action uses while still able to: as ``nobody`` the interpreter's own
    library (under /root here) may be unreadable."""
    import importlib

    names = ["gzip", "random", "pyarrow.parquet", "rmcore.io"]
    if action == "cli":
        names += ["rmflow.cli", "rmflow.commands.clean", "rmcore.data.sources", "data_contracts.schemas"]
    if action == "download_stage":
        names += ["rmcore.data.sources.mirror", "rmcore.data.sources.catalog", "rmcore.data.stages", "tasks.caching"]
    for name in names:
        importlib.import_module(name)


def _full_tmpfs(folder: Path) -> tuple[Path, bytes]:
    """Inside a private mount namespace: a 256 KiB tmpfs at ``folder`` holding an old output,
    then filled to the last byte (a real full disk: writes fail with ENOSPC)."""
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=755", "tmpfs", str(folder)], check=True)
    dest, before = old_output(folder, "pairs.parquet")
    fd = os.open(folder / "filler", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
    finally:
        os.close(fd)
    return dest, before


def child_main(config: dict) -> int:
    _import_everything(config["action"])
    if config.get("tmpfs"):
        folder = Path(config["args"]["folder"])
        dest, before = _full_tmpfs(folder)
        config["args"]["dest"] = str(dest)
    if config.get("unprivileged"):
        _drop_privileges()
    if config.get("limit"):
        _fill_disk(config["limit"])
    try:
        _act(config["action"], config["args"])
    except SystemExit as e:
        report = {"type": "SystemExit", "errno": None, "message": str(e.code)}
    except Exception as e:  # noqa: BLE001 - reported to the test, which checks the kind
        report = {"type": type(e).__name__, "errno": getattr(e, "errno", None), "message": str(e)}
    else:
        report = {"type": None}
    if config.get("tmpfs"):  # the test cannot see this mount: report what it holds
        unchanged = dest.exists() and dest.read_bytes() == before
        report.update(unchanged=unchanged, listing=sorted(os.listdir(folder)))
    print(json.dumps(report))
    return 0 if report["type"] is None else 3


# --- the tests ----------------------------------------------------------------------------------


def run_child(
    action: str,
    *,
    unprivileged: bool = False,
    limit: int | None = None,
    tmpfs: bool = False,
    prefix: tuple[str, ...] = (),
    **args: str,
) -> dict:
    config = {"action": action, "args": args, "unprivileged": unprivileged, "limit": limit, "tmpfs": tmpfs}
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = subprocess.run(
        [*prefix, sys.executable, str(HERE), json.dumps(config)],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    lines = proc.stdout.strip().splitlines()
    assert lines, f"child printed nothing (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return {**json.loads(lines[-1]), "stderr": proc.stderr}


@pytest.fixture
def shared_tmp():
    """A temp folder every user can traverse (pytest's tmp_path is 0700 root's, not nobody's)."""
    if os.geteuid() == 0:
        try:
            import pwd

            pwd.getpwnam("nobody")
        except KeyError:
            pytest.skip("running as root and there is no 'nobody' user to drop to")
    root = Path(tempfile.mkdtemp(prefix="rmflow-disk-faults-"))
    root.chmod(0o755)
    yield root
    for p in [root, *root.rglob("*")]:
        if p.is_dir():
            p.chmod(0o755)
    shutil.rmtree(root)


def old_output(folder: Path, name: str) -> tuple[Path, bytes]:
    """A previous good output ``folder/name`` (small: fits under LIMIT) and its bytes."""
    import pyarrow as pa

    from rmcore import io

    dest = folder / name
    if name.endswith(".parquet"):
        io.write_table(pa.table({"text": ["previous good output"]}), dest, None)
    elif name.endswith(".json"):
        io.write_json({"text": ["previous good output"]}, dest)
    else:
        io.write_text("previous good output\n", dest)
    assert dest.stat().st_size < LIMIT
    return dest, dest.read_bytes()


WRITERS = [("write_table", "pairs.parquet"), ("write_json", "summary.json"), ("write_text", "stats.md")]


@pytest.mark.parametrize(("action", "name"), WRITERS)
def test_permission_denied_names_the_path_and_keeps_the_old_file(shared_tmp: Path, action: str, name: str):
    out = shared_tmp / "out"
    dest, before = old_output(out, name)
    out.chmod(0o555)

    error = run_child(action, unprivileged=True, dest=str(dest))

    assert dest.read_bytes() == before
    assert sorted(os.listdir(out)) == [name]
    assert error["type"] == "PermissionError"
    assert error["errno"] == errno.EACCES
    assert error["message"].startswith(
        f"[Errno 13] cannot write {dest}: Permission denied; the previous one is"
    )
    assert f"Fix: make {out} writable" in error["message"]


@pytest.mark.parametrize(("action", "name"), WRITERS)
def test_disk_full_names_the_path_keeps_the_old_file_and_leaves_no_temp(
    shared_tmp: Path, action: str, name: str
):
    out = shared_tmp / "out"
    dest, before = old_output(out, name)

    error = run_child(action, limit=LIMIT, dest=str(dest))

    assert dest.read_bytes() == before
    assert sorted(os.listdir(out)) == [name]
    assert error["type"] == "OSError"
    assert error["errno"] == errno.EFBIG
    assert error["message"].startswith(f"[Errno 27] cannot write {dest}: ")
    assert (
        "File too large; the previous one is unchanged. Fix: free space on the disk holding"
        in error["message"]
    )


def test_real_enospc_on_a_full_tmpfs_keeps_the_old_file(shared_tmp: Path):
    """The same write on a really full filesystem (ENOSPC), where the machine allows a private
    tmpfs mount (root with unshare); the rlimit test above covers every other machine."""
    folder = shared_tmp / "tmpfs"
    folder.mkdir()
    unshare = ("unshare", "--mount", "--propagation", "private")
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("needs root and unshare to mount a private tmpfs (disk full is covered by RLIMIT_FSIZE)")
    probe = subprocess.run(
        [*unshare, "mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(folder)],
        check=False,
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs in a private mount namespace here: {probe.stderr.strip()}")

    error = run_child("write_table", tmpfs=True, prefix=unshare, folder=str(folder))

    assert error["unchanged"] is True
    assert error["listing"] == ["filler", "pairs.parquet"]
    assert error["errno"] == errno.ENOSPC
    assert error["message"].startswith(f"[Errno 28] cannot write {folder / 'pairs.parquet'}: ")
    assert "No space left on device; the previous one is unchanged. Fix: free space" in error["message"]
    assert list(folder.iterdir()) == []  # the mount was private to the child


def helpsteer_mirror(root: Path) -> Path:
    from rmcore.data.sample_data import write_sample_mirror

    generated = write_sample_mirror(root / "generated", rows_per_source=ROWS, seed=3)
    mirror = root / "mirror"
    rel = "nvidia/HelpSteer/train.jsonl.gz"
    (mirror / rel).parent.mkdir(parents=True)
    shutil.copy(generated / rel, mirror / rel)
    return mirror


def tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_disk_full_during_a_stage_publishes_no_folder_and_keeps_the_previous_one(shared_tmp: Path):
    from rmcore.data.stages import download_source
    from tasks.caching import build_once

    mirror = helpsteer_mirror(shared_tmp)
    stages = shared_tmp / "work" / "raw" / "helpsteer" / "train"
    previous = stages / "key-of-the-previous-run"
    build_once(previous, lambda tmp: download_source("helpsteer", "train", mirror, tmp))
    before = tree(stages)
    assert set(before) == {
        f"key-of-the-previous-run/{f}"
        for f in ("_CONTENTS.json", "_SUCCESS", "bad_rows.parquet", "manifest.json", "manifest.parquet", "raw.parquet")
    }
    raw_size = (previous / "raw.parquet").stat().st_size

    new = stages / "key-of-this-run"
    error = run_child("download_stage", limit=raw_size // 2, dest=str(new), mirror=str(mirror))

    assert not new.exists()
    assert tree(stages) == before  # the previous stage folder byte for byte, no temp folder
    assert sorted(os.listdir(stages)) == ["key-of-the-previous-run"]
    assert error["errno"] == errno.EFBIG
    assert error["message"].startswith(f"[Errno 27] cannot write {stages}/.key-of-this-run.")
    assert "/raw.parquet: " in error["message"]
    assert "File too large" in error["message"]


def test_rmflow_clean_on_a_full_disk_exits_1_naming_the_file_and_keeps_the_last_outputs(shared_tmp: Path):
    from rmcore.data.sample_data import write_sample_mirror
    from rmflow.cli import main

    mirror, out = helpsteer_mirror(shared_tmp), shared_tmp / "clean"
    argv = ["clean", "helpsteer", "--data-dir", str(mirror), "--out", str(out), "--json"]
    assert main(argv) == 0
    folder = out / "helpsteer" / "train"
    before = tree(folder)
    assert set(before) == {"_SUCCESS", "pairs.parquet", "quarantine.parquet"}
    # new input (another seed), so the rerun would write different pairs
    rel = "nvidia/HelpSteer/train.jsonl.gz"
    shutil.copy(write_sample_mirror(shared_tmp / "other", rows_per_source=ROWS, seed=4) / rel, mirror / rel)
    limit = len(before["pairs.parquet"]) // 2

    result = run_child("cli", limit=limit, argv="\x00".join(argv))

    assert tree(folder) == before
    assert result["type"] == "SystemExit"
    assert result["message"] == "1"
    last = result["stderr"].strip().splitlines()[-1]
    assert last.startswith(f"rmflow clean: error: [Errno 27] cannot write {folder / 'pairs.parquet'}: ")
    assert "File too large; the previous one is unchanged. Fix: free space on the disk holding" in last


def test_unwritable_work_dir_fails_the_stage_naming_its_folder(shared_tmp: Path):
    mirror = helpsteer_mirror(shared_tmp)
    work = shared_tmp / "work"
    work.mkdir(mode=0o555)
    work.chmod(0o555)
    new = work / "raw" / "helpsteer" / "train" / "key-of-this-run"

    error = run_child("download_stage", unprivileged=True, dest=str(new), mirror=str(mirror))

    assert error["type"] == "PermissionError"
    assert error["message"].startswith(
        f"[Errno 13] cannot write {new}: Permission denied. Fix: make {new.parent}"
    )
    assert list(work.iterdir()) == []
    assert stat.S_IMODE(work.stat().st_mode) == 0o555


if __name__ == "__main__":
    sys.exit(child_main(json.loads(sys.argv[1])))
