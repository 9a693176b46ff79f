"""Data-parallel training across processes: who this process is, its shard, global sums.

A launcher (``torchrun``, ``deepspeed``, ``accelerate launch``) starts one process per
device and sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT. Every process
plans the same global batches (the plan is a pure function of the seed), cuts each into the
same micro-batches, and trains on its own share of them: rank r takes micro-batches r, r+W,
r+2W, ... DeepSpeed averages the gradients over the W ranks, so the loss of each micro-batch
is weighted by ``len(micro) * W / len(global batch)``: the all-reduced gradient is then the
single-process gradient of the mean loss over the global batch.

Metrics are summed over ranks (``all_reduce_sum``) so every rank holds the global values;
only rank 0 logs them and writes shared outputs (``is_main``), between ``barrier`` calls.
Without an initialised process group all of this is the single-process no-op.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch


def _group_ready() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return torch.distributed.get_rank() if _group_ready() else 0


def world_size() -> int:
    """Number of data-parallel processes (1 without a process group)."""
    return torch.distributed.get_world_size() if _group_ready() else 1


def launched_world_size() -> int:
    """WORLD_SIZE as a launcher set it (1 when not launched), before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def is_main() -> bool:
    """Rank 0: the process that logs metrics and writes shared outputs."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank (no-op in one process)."""
    if _group_ready() and world_size() > 1:
        torch.distributed.barrier()


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64; identity in one process)."""
    if not (_group_ready() and world_size() > 1):
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
    return t.tolist()


def shard_micro_batches(
    micros: Sequence[list[int]], rank: int, world: int, *, pad_to: int | None = None
) -> list[tuple[list[int], bool]]:
    """This rank's micro-batches of one global batch as (pair indices, real?) tuples.

    Rank ``rank`` takes ``micros[rank::world]``. With ``pad_to`` every rank returns exactly
    that many entries: a short (last) global batch is padded with copies of ``micros[0]``
    marked not real (the loop gives them weight 0). DeepSpeed needs this: its gradient
    reduction and accumulation boundary count backward calls, which must match on all ranks
    and equal the configured accumulation steps.
    """
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} outside world of size {world}")
    mine = [(list(m), True) for m in micros[rank::world]]
    if pad_to is not None:
        if len(mine) > pad_to:
            raise ValueError(
                f"rank {rank} got {len(mine)} micro-batches, more than the {pad_to} accumulation steps; "
                "global_batch must be micro_batch * accumulation steps * world size"
            )
        mine += [(list(micros[0]), False)] * (pad_to - len(mine))
    return mine


class NullSink:
    """Drops metrics (ranks other than 0: rank 0 logs the global values)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        return None
