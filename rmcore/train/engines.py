"""Engines: who runs backward, the optimizer step and checkpoints (plain PyTorch or DeepSpeed).

bf16 compute with fp32 master weights is ``rmcore.train.master_weights.MasterWeightsEngine``,
a ``TorchEngine`` subclass; ``rmcore.train.setup.make_engine`` picks one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from rmcore.config import ConfigError
from rmcore.model import RewardModel
from rmcore.train.backbone import load_model
from rmcore.train.checkpoint import (
    load_checkpoint,
    load_deepspeed_checkpoint,
    save_checkpoint,
    save_deepspeed_checkpoint,
)
from rmcore.train.config import TrainConfig
from rmcore.train.optim import make_optimizer, make_scheduler


class TorchEngine:
    """Plain PyTorch: AdamW, LambdaLR warmup/cosine, clip_grad_norm_."""

    autocast = True  # with bf16: fp32 weights, bf16 autocast

    def __init__(self, config: TrainConfig, model: RewardModel, total: int) -> None:
        self.config, self.model, self.module = config, model, model
        self.optimizer = make_optimizer(config, model)
        self.scheduler = make_scheduler(config, self.optimizer, total)

    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def step(self) -> float:
        """Clip, step optimizer and schedule, zero grads; return the pre-clip grad norm."""
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        max_norm = self.config.optim.max_grad_norm if self.config.optim.max_grad_norm > 0 else float("inf")
        norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm))
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return norm

    def save(self, root: Path, step: int, state: dict[str, Any]) -> Path:
        return save_checkpoint(
            root,
            step,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            state=state,
            keep=self.config.checkpoints.keep,
        )

    def restore(self, path: Path) -> dict[str, Any]:
        return load_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler)

    def export(self, root: Path, checkpoint: Path | None) -> RewardModel:
        return self.model


class DeepSpeedEngine:
    """``deepspeed.initialize`` around the same model, optimizer (torch AdamW, a client
    optimizer: no compiled ops) and schedule; ZeRO stage from the JSON config.

    Under a launcher (torchrun, deepspeed, accelerate) it joins the launcher's process group;
    alone it runs in one CPU process with gloo: the env vars a launcher would set (RANK,
    WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) get single-process defaults when absent.
    ``micro_steps``: backward calls per optimizer step on each rank (the accumulation steps).
    """

    autocast = True

    def __init__(self, config: TrainConfig, model: RewardModel, total: int, bf16: bool) -> None:
        import deepspeed

        _single_process_env()
        if not torch.distributed.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        self.config, self.model = config, model
        optimizer = make_optimizer(config, model, fused=False)  # ZeRO re-partitions the parameters
        scheduler = make_scheduler(config, optimizer, total)
        ds_config = deepspeed_config(config, bf16, world_size=torch.distributed.get_world_size())
        self.stage = ds_config.get("zero_optimization", {}).get("stage", 0)
        self.micro_steps = ds_config["gradient_accumulation_steps"]
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config
        )
        self.module = self.engine

    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def backward(self, loss: torch.Tensor) -> None:
        # The engine divides by its accumulation steps (per rank); our loss is already weighted.
        self.engine.backward(loss * self.micro_steps)
        self.engine.step()  # steps the optimizer only at the accumulation boundary

    def step(self) -> float:
        norm = self.engine.get_global_grad_norm()
        return float(norm) if norm is not None else float("nan")

    def save(self, root: Path, step: int, state: dict[str, Any]) -> Path:
        return save_deepspeed_checkpoint(
            root, step, engine=self.engine, state=state, keep=self.config.checkpoints.keep
        )

    def restore(self, path: Path) -> dict[str, Any]:
        return load_deepspeed_checkpoint(path, engine=self.engine)

    def export(self, root: Path, checkpoint: Path | None) -> RewardModel:
        """A plain fp32 model from the final ZeRO checkpoint (works for every stage)."""
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        if checkpoint is None:
            raise RuntimeError(f"no DeepSpeed checkpoint under {root} to export the model from")
        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag="ds")
        fresh = load_model(self.config)
        fresh.load_state_dict(state, strict=False)
        missing = set(fresh.state_dict()) - set(state)
        if missing:
            raise RuntimeError(f"{checkpoint}: the ZeRO checkpoint lacks {sorted(missing)[:5]}")
        fresh.norm_stats = self.model.norm_stats
        return fresh


def _single_process_env() -> None:
    import os
    import socket

    if "MASTER_PORT" not in os.environ:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
    for key, value in {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1"}.items():
        os.environ.setdefault(key, value)


def deepspeed_config(config: TrainConfig, bf16: bool, *, world_size: int = 1) -> dict[str, Any]:
    """The JSON config with its "auto" values filled from the training config.

    ``global_batch`` pairs per optimizer step are shared by ``world_size`` ranks, so each rank
    accumulates ``global_batch / (micro_batch * world_size)`` micro-batches.
    """
    per_step = config.batching.micro_batch * world_size
    if config.batching.global_batch % per_step:
        raise ConfigError(
            f"global_batch ({config.batching.global_batch}) must be a multiple of micro_batch * world size "
            f"({config.batching.micro_batch} * {world_size} = {per_step}); set global_batch to a multiple of {per_step}"
        )
    ds = json.loads(Path(config.deepspeed).read_text())
    filled = {
        "train_micro_batch_size_per_gpu": config.batching.micro_batch,
        "gradient_accumulation_steps": config.batching.global_batch // per_step,
        "train_batch_size": config.batching.global_batch,
        "gradient_clipping": config.optim.max_grad_norm,
    }
    for key, value in filled.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    for key in ("bf16", "fp16"):
        if ds.get(key, {}).get("enabled") == "auto":
            ds[key]["enabled"] = bf16 if key == "bf16" else False
    ds.setdefault("zero_allow_untested_optimizer", True)
    return ds
