"""Every device of the node: training in N processes started by the torch elastic launcher.

``launch_torchrun`` runs ``python -m torch.distributed.run --standalone --nproc-per-node N
-m rmflow.cli train CONFIG ...``: each rank runs the same entry point as ``rmflow train`` (so
the same ``train_reward_model``, DeepSpeed engine and checkpoints), with the run's config
written to ``OUT/launch/train.yaml``. Every rank's stdout/stderr goes to a file under
``OUT/launch/logs/``; rank 0's lines are also streamed to ``on_line`` (the Prefect logger in
the training task). A non-zero exit of any rank raises ``LaunchError`` with that rank's last
lines. Rerun into the same OUT, every rank resumes from the last checkpoint all ranks wrote
(``train_reward_model(resume=True)``), which is what the task's retry does.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from rmcore import io
from rmcore.config import ALLOWED_ROOTS_ENV, PROJECT_ROOT, to_dict
from rmcore.train.config import TrainConfig

LAUNCH_DIR = "launch"
RESULT_FILE = "result.json"
_RANK_PREFIX = re.compile(r"^\[\w*?(\d+)\]:")
_FAILED_RANK = re.compile(r"^\s*rank\s*:\s*(\d+)")


class LaunchError(RuntimeError):
    """A launched training run failed; the message names the rank and quotes its last lines."""


def visible_devices() -> int:
    """CUDA devices this process sees (0 on a CPU-only machine)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def resolve_processes(config: TrainConfig, devices: int | None = None) -> int:
    """How many training processes: ``processes`` as set, or for ``auto`` one per visible CUDA
    device when a DeepSpeed config is given (it averages the gradients), else 1."""
    if config.processes != "auto":
        return int(config.processes)
    devices = visible_devices() if devices is None else devices
    return max(1, devices) if config.deepspeed else 1


def write_rank_config(config: TrainConfig, path: Path) -> Path:
    """The YAML every rank loads (``rmflow train`` reads it): the config without its placement."""
    data = to_dict(config, keyed=True)
    io.write_text(yaml.safe_dump(data, sort_keys=False), path)
    return path


def rank_command(
    config_path: Path,
    mixture_path: Path,
    output_dir: Path,
    result_path: Path,
    *,
    resume: bool = True,
    mlflow_run_id: str | None = None,
    rated_path: Path | None = None,
) -> list[str]:
    """The per-rank entry point: exactly ``rmflow train`` (as a module, so no script shim is needed)."""
    cmd = ["-m", "rmflow.cli", "train", str(config_path), "--mixture", str(mixture_path)]
    if rated_path is not None:
        cmd += ["--rated", str(rated_path)]
    cmd += ["--out", str(output_dir), "--result-json", str(result_path)]
    if not resume:
        cmd.append("--no-resume")
    if mlflow_run_id:
        cmd += ["--mlflow-run-id", mlflow_run_id]
    return cmd


def rank_env(config: TrainConfig, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of the launcher and its ranks: this project importable, output unbuffered
    (lines reach the logs as they are printed), the DeepSpeed config's folder allowed (the recipe
    that named it was checked already), and no RANK/WORLD_SIZE left over from a parent launch."""
    env = dict(os.environ if base is None else base)
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    if config.deepspeed:
        extra = str(Path(config.deepspeed).expanduser().resolve().parent)
        env[ALLOWED_ROOTS_ENV] = os.pathsep.join(p for p in (env.get(ALLOWED_ROOTS_ENV, ""), extra) if p)
    return env


WITH_PARENT = (
    "import ctypes, os, runpy, signal, sys\n"
    "try:\n"
    "    ctypes.CDLL('libc.so.6', use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG\n"
    "except (OSError, AttributeError):\n"
    "    pass\n"
    "if os.getppid() != int(sys.argv[1]):\n"
    "    sys.exit('rmflow: the process that started this one ended before it started')\n"
    "module, sys.argv = sys.argv[2], sys.argv[2:]\n"
    "runpy.run_module(module, run_name='__main__', alter_sys=True)\n"
)
"""``python -c`` prefix: on Linux the child gets SIGTERM when its parent dies, then runs
``-m MODULE ARGS`` as usual (``with_parent``)."""


def with_parent(command: list[str]) -> list[str]:
    """``python -m MODULE ARGS`` as a child that ends with its parent (a launcher whose task was
    killed, a rank whose Ray worker died), set in the child itself: ``preexec_fn`` is unsafe in a
    threaded process (a Prefect worker, a Ray worker)."""
    if command[0] != "-m":
        raise ValueError(f"expected a `-m MODULE ...` command, got {command[:2]}")
    return [sys.executable, "-c", WITH_PARENT, str(os.getpid()), *command[1:]]


def prepare_launch(config: TrainConfig, output_dir: Path) -> tuple[Path, Path, Path]:
    """``OUT/launch/``, the rank config written in it and where rank 0 will write its result (an
    earlier attempt's result removed first, so it is never read): what every launcher needs."""
    launch_dir = output_dir / LAUNCH_DIR
    launch_dir.mkdir(parents=True, exist_ok=True)
    result_path = launch_dir / RESULT_FILE
    result_path.unlink(missing_ok=True)
    return launch_dir, write_rank_config(config, launch_dir / "train.yaml"), result_path


def read_result(result_path: Path, missing: str) -> dict:
    """Rank 0's result object; LaunchError saying ``missing`` when it wrote none."""
    if not result_path.exists():
        raise LaunchError(f"{missing}: rank 0 wrote no result at {result_path}")
    return io.read_json(result_path)


def launch_torchrun(
    config: TrainConfig,
    mixture_path: str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    processes: int,
    on_line: Callable[[str], Any] | None = None,
    resume: bool = True,
    mlflow_run_id: str | None = None,
    tail_lines: int = 40,
    rated_path: str | os.PathLike[str] | None = None,
) -> dict:
    """Train in ``processes`` ranks on this node; returns rank 0's result (``rmflow train --json``'s
    object: model_dir, steps, metrics, precision, ...). Raises LaunchError if any rank fails."""
    out = Path(output_dir)
    launch_dir, config_path, result_path = prepare_launch(config, out)
    logs = launch_dir / "logs"
    cmd = with_parent([
        "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(processes),
        "--log-dir", str(logs), "--tee", "3", "--local-ranks-filter", "0",
        *rank_command(config_path, Path(mixture_path), out, result_path, resume=resume,
                      mlflow_run_id=mlflow_run_id, rated_path=Path(rated_path) if rated_path else None),
    ])  # fmt: skip
    emit = on_line or (lambda line: print(line, flush=True))
    emit(f"launching {processes} training processes (torchrun, {'DeepSpeed' if config.deepspeed else 'plain'}); "
         f"rank logs in {logs}")  # fmt: skip
    tail: collections.deque[str] = collections.deque(maxlen=400)
    proc = subprocess.Popen(
        cmd, cwd=str(PROJECT_ROOT), env=rank_env(config), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, bufsize=1,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = _RANK_PREFIX.sub("", raw.rstrip("\n"), count=1)
            tail.append(line)
            if line.strip():
                emit(line)
        code = proc.wait()
    except BaseException:  # cancelled, interrupted, timed out: no rank may outlive the task
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        raise
    if code != 0:
        raise LaunchError(failure_message(code, list(tail), logs, tail_lines))
    return read_result(result_path, "torchrun exited 0")


def failure_message(code: int, console: list[str], logs: Path, tail_lines: int = 40) -> str:
    """Which rank failed and its last lines (from its log file), else the launcher's last lines."""
    ranks = sorted({int(m.group(1)) for line in console if (m := _FAILED_RANK.match(line))})
    parts = [f"training launch failed (torchrun exit code {code})"]
    for r in ranks or []:
        lines = rank_log_tail(logs, r, tail_lines)
        parts.append(f"rank {r} failed; its last lines:\n" + ("\n".join(lines) or "(no output)"))
    if not ranks:
        parts.append("launcher output:\n" + "\n".join(console[-tail_lines:]))
    return "\n".join(parts)


def rank_log_tail(logs: Path, local_rank: int, n: int = 40) -> list[str]:
    """The last ``n`` lines a rank wrote (its newest attempt's stderr, else stdout) under ``logs``."""
    found = sorted(
        logs.glob(f"*/attempt_*/{local_rank}/*.log"),
        key=lambda p: (p.stat().st_mtime, p.name == "stderr.log"),
    )
    lines: list[str] = []
    for path in found[-2:]:
        lines += path.read_text(errors="replace").splitlines()
    return [line for line in lines if line.strip()][-n:]
