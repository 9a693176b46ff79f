"""Training on the nodes of a Ray cluster: Ray Train's ``TorchTrainer`` places the ranks.

``launch_ray`` mirrors ``launch_torchrun``: ``processes`` Ray Train workers (``ScalingConfig``:
one CPU set, or one GPU, each) on any nodes of the cluster, and each worker runs one rank of
the same entry point as ``rmflow train`` (``rank_command``: the same ``train_reward_model``,
DeepSpeed engine, checkpoints, MLflow sink and ``--result-json``) as a child process whose
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT come from Ray Train's context.

Why a child process rather than training inside the worker: the rank is then exactly a torchrun
rank (one code path, one set of tests for the loop), the MLflow run is logged by the entry point
that owns the tracking layer (rmcore imports no MLflow), and a crash of DeepSpeed or torch in a
rank ends that rank's process, not the Ray worker that reports it. Ray Train's own (gloo)
process group only carries rank 0's address and a free port to the other workers.

Each rank's output goes to ``OUT/launch/logs/rank-<r>.log``; the driver streams rank 0's file to
``on_line``. A failing rank raises ``LaunchError`` naming its rank and node and quoting its last
lines. ``OUT`` must be on storage every node shares (checkpoints are collective, rank 0 writes
the model and the result), as must the project and the DeepSpeed config (same paths on every
node). Ray's own run folder is ``OUT/launch/ray``, never ``~/ray_results``.
"""

from __future__ import annotations

import collections
import os
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rmcore.config import PROJECT_ROOT
from rmcore.train.config import TrainConfig
from rmcore.train.launch import (
    LaunchError,
    prepare_launch,
    rank_command,
    rank_env,
    read_result,
    visible_devices,
    with_parent,
)

FORWARDED_ENV_PREFIXES = ("MLFLOW_", "RMFLOW_", "HF_", "TORCH_EXTENSIONS_DIR")
"""Driver environment variables every rank gets too (tracking URI, allowed roots, caches): on a
local Ray the workers inherit them anyway, on a remote cluster they would not."""


def resolve_ray_processes(config: TrainConfig, cluster_gpus: float) -> int:
    """``processes: auto`` under Ray: one worker per GPU of the cluster with ``ray.use_gpu``
    (at least 1), else 1; a number is taken as set."""
    if config.processes != "auto":
        return int(config.processes)
    return max(1, int(cluster_gpus)) if config.ray.use_gpu else 1


def launch_ray(
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
    """Train in ``processes`` Ray Train workers; returns rank 0's result (the same dict as
    ``launch_torchrun``). With ``processes: auto`` in the config the count is re-resolved
    against the cluster (``resolve_ray_processes``). Raises LaunchError if any rank fails."""
    _require_ray()
    out = Path(output_dir).resolve()
    launch_dir, config_path, result_path = prepare_launch(config, out)
    (launch_dir / "logs").mkdir(exist_ok=True)
    emit = on_line or (lambda line: print(line, flush=True))

    if config.processes == "auto" and not config.ray.address:  # a local Ray: this machine's GPUs
        processes = resolve_ray_processes(config, visible_devices())
    started = _connect(config, processes)
    try:
        import ray

        if config.processes == "auto":
            processes = resolve_ray_processes(config, ray.cluster_resources().get("GPU", 0))
        job = {
            "command": rank_command(config_path, Path(mixture_path).resolve(), out, result_path,
                                    resume=resume, mlflow_run_id=mlflow_run_id,
                                    rated_path=Path(rated_path).resolve() if rated_path else None),
            "config": config,
            "logs": str(launch_dir / "logs"),
            "env": {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES)},
            "tail_lines": tail_lines,
        }  # fmt: skip
        where = f"the Ray cluster at {config.ray.address}" if config.ray.address else "a local Ray"
        short = _short_of(ray.cluster_resources(), processes, config)
        if short:
            emit(f"the Ray cluster has {short}: the workers wait until it has (or an autoscaler adds nodes)")
        emit(f"launching {processes} training processes (Ray Train on {where}, "
             f"{'DeepSpeed' if config.deepspeed else 'plain'}); rank logs in {launch_dir / 'logs'}")  # fmt: skip
        with _streaming(launch_dir / "logs" / "rank-0.log", emit):
            _fit(config, job, processes, launch_dir)
    finally:
        if started:
            import ray

            ray.shutdown()
    return read_result(
        result_path, f"Ray Train finished (is {out} on storage that every node and this driver share?)"
    )


def _require_ray() -> None:
    try:
        import ray.train.torch  # noqa: F401
    except ImportError as e:
        raise LaunchError(
            f"train.launcher: ray needs Ray Train ({e}); install it with `pip install 'rmflow[ray]'`"
        ) from e


def _connect(config: TrainConfig, processes: int) -> bool:
    """Join ``config.ray.address``, or start a Ray limited to this machine; True if this call
    connected (so it disconnects, which also ends a local Ray), False if Ray was already up."""
    import ray

    if ray.is_initialized():
        return False
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report from the driver's Ray
    common = {"log_to_driver": False, "configure_logging": True, "logging_level": "WARNING"}
    if config.ray.address:
        ray.init(address=config.ray.address, **common)
    else:
        ray.init(
            num_cpus=processes * config.ray.cpus_per_worker + 1,  # + Ray Train's controller
            include_dashboard=False,
            object_store_memory=256 * 1024**2,  # only addresses and small results travel through it
            **common,
        )
    return True


def _short_of(cluster: dict[str, float], processes: int, config: TrainConfig) -> str:
    """What the cluster lacks for the workers (empty if nothing), e.g. ``2 of the 4 GPUs``."""
    need = {"CPU": processes * config.ray.cpus_per_worker, "GPU": processes if config.ray.use_gpu else 0}
    return ", ".join(
        f"{cluster.get(k, 0):g} of the {n} {k}s {processes} workers need"
        for k, n in need.items()
        if n and cluster.get(k, 0) < n
    )


def _fit(config: TrainConfig, job: dict, processes: int, launch_dir: Path) -> None:
    """Run the workers to the end; a worker's failure becomes LaunchError naming its rank."""
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer

    trainer = TorchTrainer(
        _rank_worker,
        train_loop_config=job,
        # Ray's own group only passes rank 0's address: gloo on CPU, no CUDA context in the worker
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ray.train.ScalingConfig(
            num_workers=processes,
            use_gpu=config.ray.use_gpu,
            resources_per_worker={"CPU": config.ray.cpus_per_worker},  # + 1 GPU with use_gpu
        ),
        run_config=ray.train.RunConfig(
            name=f"train-{time.strftime('%Y%m%d-%H%M%S')}",
            storage_path=str(launch_dir / "ray"),
            failure_config=ray.train.FailureConfig(max_failures=0),  # the task's retry resumes
        ),
    )
    try:
        trainer.fit()
    except ray.train.WorkerGroupError as e:
        raise LaunchError(_failure_message(e.worker_failures)) from e
    except ray.train.TrainingFailedError as e:
        raise LaunchError(f"training launch failed (Ray Train): {e}") from e


def _failure_message(failures: dict[int, BaseException]) -> str:
    parts = ["training launch failed (Ray Train)"]
    for r, err in sorted(failures.items()):
        parts.append(f"rank {r} failed: {err}")
    return "\n".join(parts)


def _rank_worker(job: dict) -> None:  # pragma: no cover - runs inside a Ray Train worker
    """One rank: learn rank 0's address, run the rank's entry point as a child, fail with its tail."""
    import ray.train
    import torch.distributed as tdist

    ctx = ray.train.get_context()
    rank = ctx.get_world_rank()
    node = ray.util.get_node_ip_address()
    master = [(node, _free_port()) if rank == 0 else None]
    tdist.broadcast_object_list(master, src=0)  # over Ray Train's gloo group
    addr, port = master[0]
    env = rank_env(job["config"])
    env.update(job["env"])
    env.update({
        "RANK": str(rank), "WORLD_SIZE": str(ctx.get_world_size()), "LOCAL_RANK": str(ctx.get_local_rank()),
        "LOCAL_WORLD_SIZE": str(ctx.get_local_world_size()), "NODE_RANK": str(ctx.get_node_rank()),
        "MASTER_ADDR": addr, "MASTER_PORT": str(port),
    })  # fmt: skip
    log = Path(job["logs"]) / f"rank-{rank}.log"
    tail: collections.deque[str] = collections.deque(maxlen=job["tail_lines"])
    with log.open("w", buffering=1) as sink:
        proc = subprocess.Popen(
            with_parent(job["command"]), cwd=str(PROJECT_ROOT), env=env, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, text=True, bufsize=1,
        )  # fmt: skip
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                sink.write(line)
                if line.strip():
                    tail.append(line.rstrip("\n"))
            code = proc.wait()
        finally:
            if proc.poll() is None:  # the worker is being torn down: no rank outlives it
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
    if code != 0:
        raise RuntimeError(
            f"exited with code {code} on node {node}; its log is {log}; its last lines:\n"
            + ("\n".join(tail) or "(no output)")
        )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


class _streaming:
    """While the block runs, send each new line of ``path`` (rank 0's log) to ``emit``."""

    def __init__(self, path: Path, emit: Callable[[str], Any]) -> None:
        self.path, self.emit = path, emit
        self.path.unlink(missing_ok=True)
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._follow, name="rank-0-log", daemon=True)

    def __enter__(self) -> None:
        self.thread.start()

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=10)

    def _follow(self) -> None:
        while not self.path.exists():
            if self.done.wait(0.2):
                return
        with self.path.open(errors="replace") as f:
            partial = ""
            while True:
                chunk = f.readline()
                if chunk:
                    partial += chunk
                    if partial.endswith("\n"):
                        if partial.strip():
                            self.emit(partial.rstrip("\n"))
                        partial = ""
                    continue
                if self.done.is_set():  # drained after the workers ended
                    if partial.strip():
                        self.emit(partial)
                    return
                time.sleep(0.2)
