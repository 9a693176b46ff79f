"""Typed training configuration: recipe YAML -> ``TrainConfig`` (``from_mapping``-loadable).

Defaults follow SPEC section 4 (AdamW, cosine with warmup, weight decay 0.001, one epoch).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rmcore.config import ConfigError, from_mapping, load_yaml


@dataclass(frozen=True)
class LossConfig:
    """Options of the Bradley-Terry loss (``rmcore.train.loss.bradley_terry_loss``)."""

    margin: Literal["none", "score_gap"] = "none"
    """``score_gap``: per-pair margin ``margin_scale * (chosen_score - rejected_score)`` (0 if unscored)."""
    margin_scale: float = 1.0
    center_coef: float = 0.0
    """Weight of the reward-centering term ``mean((r_c + r_r)^2)``."""
    hinge: bool = False


@dataclass(frozen=True)
class TrainConfig:
    """One reward-model training run. Only ``model`` is required."""

    model: str
    """HF id or local folder of the backbone (safetensors only)."""
    pooling: Literal["auto", "last", "mean", "cls"] = "auto"
    max_length: int = 512
    truncation: Literal["left", "drop"] = "left"
    trust_remote_code: bool = False
    lr: float = 5e-5
    warmup_ratio: float = 0.05
    weight_decay: float = 0.001
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    adam_eps: float = 1e-8
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    max_grad_norm: float = 1.0
    """Gradient clipping (L2 norm over all parameters); 0 disables."""
    epochs: int = 1
    max_steps: int | None = None
    """Stop after this many optimizer steps (the schedule is planned for the shorter of the two)."""
    micro_batch: int = 8
    """Pairs per forward/backward."""
    global_batch: int = 8
    """Pairs per optimizer step; a multiple of micro_batch (gradient accumulation)."""
    group_by_length: bool = True
    """Length-grouped global batches (seeded shuffle of sorted mega-batches)."""
    mega_batches: int = 32
    max_groups: int = 6
    """Split each micro-batch's 2B sequences into at most this many padded sub-batches (1 = one
    rectangle). 6: with the packed encoder pass only attention runs per group, so on the bench's
    pairs 6 groups train as fast as 4 and raise padding efficiency from 0.949 to 0.964."""
    group_overhead: int = 32
    """Tokens charged per extra sub-batch: a split is made only when it saves more padding than this."""
    seed: int = 42
    bf16: bool | Literal["auto"] = "auto"
    """Compute in bf16. "auto" (default): bf16 only where it is faster than fp32 on this device:
    on CUDA when the GPU supports it; on CPU when a one-off matmul probe of the model's layer
    shape says bf16 is at least 1.3x faster (cached per machine; rmcore/precision.py). true on
    a CPU where bf16 is slower runs as asked and warns with the two measured rates."""
    bf16_mode: Literal["auto", "autocast", "master_weights"] = "auto"
    """How bf16 is used. ``autocast``: fp32 weights, matmuls cast to bf16 per op.
    ``master_weights``: the model computes in bf16 end to end while the optimizer keeps fp32
    master weights and fp32 gradients (no per-op casts; what DeepSpeed's bf16 mode does).
    "auto": master_weights on CPU (faster there, see bench/RESULTS.md), autocast on GPU."""
    attn_implementation: Literal["auto", "eager", "sdpa"] = "auto"
    """Attention kernel while training. "auto" on CPU: eager in bf16 (torch's CPU flash-attention
    bf16 backward is slower than plain matmuls at these lengths), SDPA in fp32 (as fast as
    eager, less memory); the model's default on GPU (bench/RESULTS.md)."""
    packed_encoder: Literal["auto", "off"] = "auto"
    """"auto": the length groups of a micro-batch share one encoder pass (only attention runs
    per group; rmcore/train/packed_encoder.py) when the backbone is a BERT encoder with mean pooling
    and training runs without DeepSpeed; any other model, or "off", runs the stock forward."""
    malloc_tuning: Literal["auto", "off"] = "auto"
    """"auto": on CPU (Linux, glibc), freed memory stays in the process while training instead
    of going back to the kernel after every step (rmcore/train/cpu_memory.py); "off": glibc defaults."""
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    """"auto": on with a GPU, off on CPU."""
    dropout: bool = False
    """Keep the backbone's dropout (off by default: reward training is deterministic and resumable)."""
    eval_split: str = "validation"
    """Mixture rows with this ``split`` are the held-out set; if there are none, ``eval_fraction`` of train."""
    eval_fraction: float = 0.05
    eval_every: int = 0
    """Evaluate every N steps (0: only at the end)."""
    eval_batch: int = 32
    log_every: int = 10
    """Metrics to the sink every N optimizer steps; a progress line too (step, loss, accuracy,
    real tokens/s, ETA), or sooner when ``progress_seconds`` have passed."""
    progress_seconds: float = 15.0
    """At most this long between two progress lines (console and Prefect logs)."""
    checkpoint_every: int = 0
    """Checkpoint every N steps (0: only at the end)."""
    keep_checkpoints: int = 2
    deepspeed: str | None = None
    """Path to a DeepSpeed JSON config (deployments/deepspeed/zero{1,2,3}.json)."""
    loss: LossConfig = field(default_factory=LossConfig)

    def __post_init__(self) -> None:
        if (
            self.micro_batch < 1
            or self.global_batch < self.micro_batch
            or self.global_batch % self.micro_batch
        ):
            raise ConfigError(
                f"global_batch ({self.global_batch}) must be a positive multiple of micro_batch ({self.micro_batch})"
            )
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        if self.max_length < 8:
            raise ConfigError(f"max_length must be at least 8, got {self.max_length}")
        self._check_ranges()

    def _check_ranges(self) -> None:
        """Sizes, rates and counts that would fail (or silently do nothing) hours into a run."""
        at_least = {
            "epochs": 1, "eval_batch": 1, "log_every": 1, "keep_checkpoints": 1, "mega_batches": 1,
            "max_groups": 1, "eval_every": 0, "checkpoint_every": 0, "group_overhead": 0, "seed": 0,
        }  # fmt: skip
        for key, low in at_least.items():
            if getattr(self, key) < low:
                raise ConfigError(
                    f"{key} must be >= {low}, got {getattr(self, key)}; fix the value of {key!r}"
                )
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 (or omitted), got {self.max_steps}")
        positive = {"lr": self.lr, "adam_eps": self.adam_eps, "progress_seconds": self.progress_seconds}
        non_negative = {
            "weight_decay": self.weight_decay, "max_grad_norm": self.max_grad_norm,
            "loss.center_coef": self.loss.center_coef, "loss.margin_scale": self.loss.margin_scale,
        }  # fmt: skip
        for key, value in positive.items():
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{key} must be a positive number, got {value}; e.g. lr: 5.0e-5")
        for key, value in non_negative.items():
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{key} must be a number >= 0, got {value}")
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {list(self.adam_betas)}")


def load_train_config(path: str | Path, **overrides: Any) -> TrainConfig:
    """Read a training YAML (deployments/train/*.yaml); ``overrides`` replace top-level keys."""
    data = load_yaml(path)
    data.update({k: v for k, v in overrides.items() if v is not None})
    return from_mapping(TrainConfig, data, where=str(path))
