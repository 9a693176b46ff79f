"""Bradley-Terry reward-model training: one loop, plain PyTorch or DeepSpeed underneath.

``train_reward_model(config, mixture_path=..., output_dir=...)`` reads a mixture Parquet
(MIXTURE contract), encodes the pairs, trains with AdamW + warmup/cosine + gradient
accumulation + clipping, logs metrics through a ``MetricsSink``, checkpoints, and writes
the final reward model as a plain HF folder under ``output_dir/model``.

Layout of ``output_dir``: ``model/`` (final), ``checkpoints/step-N/``, ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterator
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from rmcore import distributed as dist
from rmcore.batching import pair_rewards, plan_global_batches, split_micro_batches
from rmcore.checkpoint import (
    latest_checkpoint,
    load_checkpoint,
    load_deepspeed_checkpoint,
    save_checkpoint,
    save_deepspeed_checkpoint,
)
from rmcore.config import ConfigError, config_hash
from rmcore.cpu_memory import retain_freed_memory
from rmcore.data import EncodedPairs, PairBatch, collate_pairs, encode_pairs
from rmcore.evaluate.intervals import wilson_interval
from rmcore.io import read_table, write_json
from rmcore.loss import bradley_terry_loss, split_rewards
from rmcore.model import RewardModel, load_reward_model
from rmcore.packed_encoder import unsupported_reason
from rmcore.precision import Precision, Probe, resolve_precision
from rmcore.progress import Progress
from rmcore.train_config import TrainConfig

log = logging.getLogger(__name__)


class MetricsSink(Protocol):
    """Where metrics go (the task layer sends them to MLflow)."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None: ...


class LoggingSink:
    """Metrics as log lines."""

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        log.info("step %d: %s", step, " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))


class ListSink:
    """Metrics kept in memory as (step, metrics) tuples (tests)."""

    def __init__(self) -> None:
        self.records: list[tuple[int, dict[str, float]]] = []

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.records.append((step, dict(metrics)))

    def series(self, key: str) -> list[float]:
        return [m[key] for _, m in self.records if key in m]


@dataclass
class TrainResult:
    model_dir: Path
    metrics: dict[str, float]
    steps: int
    checkpoints_dir: Path
    tokens_per_s: float
    padding_efficiency: float
    data: dict[str, int] = field(default_factory=dict)
    """Pair counts: train/eval pairs, truncated sequences, dropped pairs."""
    real_tokens: int = 0
    """Real tokens trained on, summed over all ranks."""
    seen_pairs: list[int] = field(default_factory=list)
    """Train-pair indices this process trained on, in order (its data shard when W > 1)."""
    step_seconds: float = 0.0
    """Wall time of the optimizer steps (what tokens_per_s divides by)."""
    step_cpu_seconds: float = 0.0
    """Process CPU time of the same steps (all threads)."""
    precision: dict[str, Any] = field(default_factory=dict)
    """The dtype the run computed in and why (``rmcore.precision.Precision.to_dict``)."""


# --- data ---------------------------------------------------------------------------------


def load_mixture_pairs(
    config: TrainConfig, mixture_path: Path, tokenizer: Any
) -> tuple[EncodedPairs, EncodedPairs]:
    """Encode the mixture's train rows and held-out rows (split == eval_split, else a seeded share)."""
    table = read_table(mixture_path, "mixture")
    rows = table.select(["chosen", "rejected", "chosen_score", "rejected_score", "split"]).to_pylist()
    train = [r for r in rows if r["split"] == "train"]
    held = [r for r in rows if r["split"] == config.eval_split]
    other = len(rows) - len(train) - len(held)
    if other:
        log.info("%s: %d rows with another split ignored", mixture_path, other)
    if not held and config.eval_fraction > 0 and len(train) > 1:
        order = list(range(len(train)))
        random.Random(config.seed).shuffle(order)
        n_eval = max(1, round(config.eval_fraction * len(train)))
        held = [train[i] for i in order[:n_eval]]
        train = [train[i] for i in sorted(order[n_eval:])]
    if not train:
        raise ValueError(
            f"{mixture_path}: no rows with split == 'train'; rebuild the mixture or check its recipe"
        )
    return _encode(config, tokenizer, train), _encode(config, tokenizer, held)


def _encode(config: TrainConfig, tokenizer: Any, rows: list[dict[str, Any]]) -> EncodedPairs:
    margins = None
    if config.loss.margin == "score_gap":
        margins = [
            config.loss.margin_scale * (r["chosen_score"] - r["rejected_score"])
            if r["chosen_score"] is not None and r["rejected_score"] is not None
            else 0.0
            for r in rows
        ]
    return encode_pairs(
        tokenizer,
        [r["chosen"] for r in rows],
        [r["rejected"] for r in rows],
        max_length=config.max_length,
        truncation=config.truncation,
        margins=margins,
    )


def _batch(
    pairs: EncodedPairs, idx: list[int], pad_id: int, max_groups: int, overhead: int = 32
) -> PairBatch:
    """Collate pairs ``idx`` into at most ``max_groups`` padded length groups; a split is made only
    when it saves more than ``overhead`` padded tokens (TrainConfig.group_overhead's default)."""
    return collate_pairs(
        [pairs.chosen[i] for i in idx],
        [pairs.rejected[i] for i in idx],
        pad_id=pad_id,
        margins=[pairs.margins[i] for i in idx] if pairs.margins is not None else None,
        max_groups=max_groups,
        group_overhead=overhead,
    )


# --- optimisation -------------------------------------------------------------------------


def make_optimizer(config: TrainConfig, model: torch.nn.Module, *, fused: bool = True) -> torch.optim.AdamW:
    """AdamW; no weight decay on biases and norm weights (1-D parameters)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [
        {"params": decay, "weight_decay": config.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    # fused: one kernel over all tensors (about 30x less optimizer time than the per-tensor loop on CPU)
    return torch.optim.AdamW(
        groups, lr=config.lr, betas=tuple(config.adam_betas), eps=config.adam_eps, fused=fused
    )


def lr_factor(step: int, *, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak lr at optimizer step ``step``: linear warmup, then cosine/linear/constant."""
    if step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, total: int
) -> torch.optim.lr_scheduler.LambdaLR:
    warmup = math.ceil(config.warmup_ratio * total)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total=total, warmup=warmup, kind=config.scheduler)
    )


def training_precision(
    config: TrainConfig, model: RewardModel, device: torch.device, probe: Probe | None = None
) -> Precision:
    """bf16 or fp32 for this model on this device (``bf16: auto`` measures; rmcore.precision)."""
    hf_config = model.hf.config
    text = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
    hidden = int(getattr(text, "hidden_size", 0) or 768)
    precision = resolve_precision(
        config.bf16, device, hidden=hidden, intermediate=getattr(text, "intermediate_size", None), probe=probe
    )
    log.info("precision: %s (%s)", precision.name, precision.reason)
    return precision


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


def disable_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0


# --- evaluation ---------------------------------------------------------------------------


@torch.no_grad()
def evaluate_pairs(
    model: torch.nn.Module,
    pairs: EncodedPairs,
    *,
    pad_id: int,
    batch: int,
    device: torch.device,
    bf16: bool,
    config,
) -> tuple[dict[str, float], dict[str, float] | None]:
    """Held-out loss/accuracy (with a Wilson 95% interval) beside the length-only rule; norm stats."""
    if not len(pairs):
        return {}, None
    was_training = model.training
    model.eval()
    lengths = [max(len(c), len(r)) for c, r in zip(pairs.chosen, pairs.rejected)]
    order = sorted(range(len(pairs)), key=lambda i: -lengths[i])
    r_c, r_r = torch.empty(len(pairs)), torch.empty(len(pairs))
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        # Evaluation has no gradient: 4 length groups already keep its padding low, and fewer
        # groups mean fewer attention calls; the result does not depend on the grouping.
        b = _batch(pairs, idx, pad_id, 4)
        with _autocast(device, bf16):
            rc, rr = split_rewards(pair_rewards(model, _to(b, device)).float().cpu())
        r_c[idx], r_r[idx] = rc, rr
    model.train(was_training)
    margins = torch.as_tensor(pairs.margins) if pairs.margins is not None else None
    _, m = bradley_terry_loss(
        r_c, r_r, margin=margins, center_coef=config.loss.center_coef, hinge=config.loss.hinge
    )
    n = len(pairs)
    low, high = wilson_interval(round(m["accuracy"] * n), n)  # the count of pairs ranked right
    longer = sum(len(c) > len(r) for c, r in zip(pairs.chosen, pairs.rejected)) / n
    metrics = {f"eval/{k}": v for k, v in m.items()}
    metrics |= {
        "eval/accuracy_low": low,
        "eval/accuracy_high": high,
        "eval/length_baseline": longer,
        "eval/pairs": n,
    }
    rewards = torch.cat([r_c, r_r])
    return metrics, {"mean": float(rewards.mean()), "std": float(rewards.std(unbiased=False))}


def _to(batch: PairBatch, device: torch.device) -> PairBatch:
    if device.type == "cpu":
        return batch
    for g in batch.groups:
        g.input_ids, g.attention_mask = g.input_ids.to(device), g.attention_mask.to(device)
    if batch.margins is not None:
        batch.margins = batch.margins.to(device)
    return batch


# --- the loop -----------------------------------------------------------------------------


class _Window:
    """Running sums of per-step metrics between two log points."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.steps = 0
        self.real = self.processed = 0
        self.seconds = 0.0

    def add(self, metrics: dict[str, float], *, real: int, processed: int, seconds: float) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.steps += 1
        self.real, self.processed, self.seconds = (
            self.real + real,
            self.processed + processed,
            self.seconds + seconds,
        )

    def peek(self) -> dict[str, float]:
        """Means and rates over the window so far (``flush`` without the reset)."""
        out = {f"train/{k}": v / max(self.steps, 1) for k, v in self.sums.items()}
        out["train/tokens_per_s"] = self.real / max(self.seconds, 1e-9)
        out["train/padding_efficiency"] = self.real / max(self.processed, 1)
        return out

    def flush(self) -> dict[str, float]:
        out = self.peek()
        self.__init__()
        return out


def _schedule(config: TrainConfig, lengths: list[int]) -> Iterator[tuple[int, list[int]]]:
    """(step, pair indices of its global batch) for every step of every epoch."""
    step = 0
    for epoch in range(config.epochs):
        plan = plan_global_batches(
            lengths,
            config.global_batch,
            seed=config.seed,
            epoch=epoch,
            mega_batches=config.mega_batches,
            group_by_length=config.group_by_length,
        )
        for batch in plan:
            yield step, batch
            step += 1


def train_reward_model(
    config: TrainConfig,
    *,
    mixture_path: Path,
    output_dir: Path,
    sink: MetricsSink | None = None,
    resume: bool = True,
    precision_probe: Probe | None = None,
) -> TrainResult:
    """Train a Bradley-Terry reward model on a mixture; return where the model is and how it did.

    With ``config.deepspeed`` the same loop runs through ``deepspeed.initialize`` (ZeRO
    1/2/3); otherwise plain PyTorch. ``resume`` continues from the newest checkpoint under
    ``output_dir/checkpoints`` made with the same config. ``precision_probe`` replaces the
    CPU's bf16-vs-fp32 measurement behind ``bf16: auto`` (tests).

    Under a launcher with WORLD_SIZE > 1 (DeepSpeed only) each rank trains on its share of
    every global batch (``rmcore.distributed``); metrics are global, only rank 0 logs them
    to ``sink`` and writes the model and metrics.json; every rank returns the same paths.
    """
    if dist.launched_world_size() > 1 and not config.deepspeed:
        raise ConfigError(
            f"launched with WORLD_SIZE={dist.launched_world_size()} but the config sets no `deepspeed:`; "
            "multi-process training runs through DeepSpeed: set deepspeed: deployments/deepspeed/zero2.json"
        )
    linear = torch.nn.functional.linear
    on_cpu = config.malloc_tuning == "auto" and not torch.cuda.is_available()
    try:
        with retain_freed_memory(on_cpu):
            return _train(config, mixture_path, output_dir, sink, resume, precision_probe)
    finally:
        # DeepSpeed ZeRO-3 replaces torch.nn.functional.linear process-wide ("this will persist
        # unless manually reset"); put it back so later work in this process (another training
        # in a Prefect worker, scoring) runs stock torch and gives the same numbers.
        torch.nn.functional.linear = linear


def _train(
    config: TrainConfig,
    mixture_path: Path,
    output_dir: Path,
    sink: MetricsSink | None,
    resume: bool,
    probe: Probe | None = None,
) -> TrainResult:
    output_dir, sink = Path(output_dir), sink or LoggingSink()
    torch.manual_seed(config.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model = _load_model(config)
    precision = training_precision(config, model, device, probe)
    bf16 = precision.bf16
    _set_attention(model, config, device, bf16)
    train_pairs, eval_pairs = load_mixture_pairs(config, Path(mixture_path), model.tokenizer)
    if not config.dropout:
        disable_dropout(model)
    if config.gradient_checkpointing is True or (
        config.gradient_checkpointing == "auto" and device.type == "cuda"
    ):
        enable = getattr(model.hf, "activation_checkpointing_enable", None)  # transformers >= 5.x name
        (enable or model.hf.gradient_checkpointing_enable)()
    model.to(device).train()
    per_epoch = math.ceil(len(train_pairs) / config.global_batch)
    total = (
        per_epoch * config.epochs
        if config.max_steps is None
        else min(config.max_steps, per_epoch * config.epochs)
    )
    _set_packing(model, config)
    engine = _make_engine(config, model, total, bf16, device)
    if not dist.is_main():
        sink = dist.NullSink()  # rank 0 logs the global (all-reduced) metrics
    loop = _Loop(config, engine, train_pairs, eval_pairs, sink, device, total, bf16)
    ckpt_root = output_dir / "checkpoints"
    found = latest_checkpoint(ckpt_root, config_hash=loop.hash) if resume else None
    state = engine.restore(found) if found is not None else {"step": 0}
    loop.last_checkpoint, loop.last_train = found, state.get("train_metrics", {})
    start = state["step"]
    loop.run(start, ckpt_root)
    eval_metrics, norm = loop.evaluate()  # every rank (ZeRO-3 forwards are collective), same result
    metrics = {**loop.last_train, **eval_metrics}
    model_dir = output_dir / "model"
    if dist.is_main():
        final = engine.export(ckpt_root, loop.last_checkpoint)
        model_dir = final.save(model_dir, norm_stats=norm)
        write_json(
            {"metrics": metrics, "data": loop.data_stats, "steps": total, "precision": precision.to_dict()},
            output_dir / "metrics.json",
        )
    dist.barrier()  # the model folder exists for every rank once this returns
    return TrainResult(
        model_dir=model_dir,
        metrics=metrics,
        steps=total,
        checkpoints_dir=ckpt_root,
        tokens_per_s=loop.totals.real / max(loop.totals.seconds, 1e-9),
        padding_efficiency=loop.totals.real / max(loop.totals.processed, 1),
        data=loop.data_stats,
        real_tokens=loop.totals.real,
        seen_pairs=loop.seen_pairs,
        step_seconds=loop.totals.seconds,
        step_cpu_seconds=loop.cpu_seconds,
        precision=precision.to_dict(),
    )


def _make_engine(config: TrainConfig, model: RewardModel, total: int, bf16: bool, device: torch.device):
    """DeepSpeed when configured; else bf16 with fp32 master weights or plain PyTorch (+ autocast)."""
    if config.deepspeed:
        return DeepSpeedEngine(config, model, total, bf16)
    mode = config.bf16_mode
    if mode == "auto":
        mode = "autocast" if device.type == "cuda" else "master_weights"
    if bf16 and mode == "master_weights":
        from rmcore.master_weights import MasterWeightsEngine

        return MasterWeightsEngine(config, model, total)
    return TorchEngine(config, model, total)


def _set_attention(model: RewardModel, config: TrainConfig, device: torch.device, bf16: bool) -> None:
    """The attention kernel for training. "auto" on CPU: eager in bf16 (the CPU flash kernel's
    bf16 backward is slower than plain matmuls at these lengths: 2,562-2,591 vs 3,003-3,483
    real tokens/s on MiniLM), SDPA in fp32 (as fast as eager there, median step 0.739 vs
    0.758 s in an interleaved A/B on AVX2, and it keeps no (length x length) score matrices
    for backward); elsewhere the model's default (bench/RESULTS.md)."""
    choice = config.attn_implementation
    if choice == "auto":
        if device.type != "cpu":
            return
        choice = "eager" if bf16 else "sdpa"
    if getattr(model.hf.config, "_attn_implementation", None) != choice:
        model.hf.set_attn_implementation(choice)
        log.info("attention implementation: %s", choice)


def _set_packing(model: RewardModel, config: TrainConfig) -> None:
    """One packed encoder pass per micro-batch where the model supports it (not under DeepSpeed)."""
    reason = "packed_encoder is off" if config.packed_encoder == "off" else None
    if reason is None and config.deepspeed:
        reason = "DeepSpeed runs the engine's own forward"
    reason = reason or unsupported_reason(model.hf, model.pooling)
    model.packed = reason is None
    log.info("packed encoder pass: %s", "on" if model.packed else f"off ({reason})")


def _load_model(config: TrainConfig) -> RewardModel:
    model = load_reward_model(
        config.model,
        pooling=config.pooling,
        max_length=config.max_length,
        trust_remote_code=config.trust_remote_code,
    )
    model.truncation = config.truncation
    return model


# --- engines: who does backward, the optimizer step and checkpoints -----------------------


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
        max_norm = self.config.max_grad_norm if self.config.max_grad_norm > 0 else float("inf")
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
            keep=self.config.keep_checkpoints,
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
            root, step, engine=self.engine, state=state, keep=self.config.keep_checkpoints
        )

    def restore(self, path: Path) -> dict[str, Any]:
        return load_deepspeed_checkpoint(path, engine=self.engine)

    def export(self, root: Path, checkpoint: Path | None) -> RewardModel:
        """A plain fp32 model from the final ZeRO checkpoint (works for every stage)."""
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        if checkpoint is None:
            raise RuntimeError(f"no DeepSpeed checkpoint under {root} to export the model from")
        state = get_fp32_state_dict_from_zero_checkpoint(str(checkpoint), tag="ds")
        fresh = _load_model(self.config)
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
    per_step = config.micro_batch * world_size
    if config.global_batch % per_step:
        raise ConfigError(
            f"global_batch ({config.global_batch}) must be a multiple of micro_batch * world size "
            f"({config.micro_batch} * {world_size} = {per_step}); set global_batch to a multiple of {per_step}"
        )
    ds = json.loads(Path(config.deepspeed).read_text())
    filled = {
        "train_micro_batch_size_per_gpu": config.micro_batch,
        "gradient_accumulation_steps": config.global_batch // per_step,
        "train_batch_size": config.global_batch,
        "gradient_clipping": config.max_grad_norm,
    }
    for key, value in filled.items():
        if ds.get(key, "auto") == "auto":
            ds[key] = value
    for key in ("bf16", "fp16"):
        if ds.get(key, {}).get("enabled") == "auto":
            ds[key]["enabled"] = bf16 if key == "bf16" else False
    ds.setdefault("zero_allow_untested_optimizer", True)
    return ds


# --- the loop -----------------------------------------------------------------------------


class _Loop:
    """The training loop's state; ``run`` is the loop, ``train_step`` one optimizer step."""

    def __init__(self, config, engine, train_pairs, eval_pairs, sink, device, total, bf16) -> None:
        self.config, self.engine, self.sink, self.device = config, engine, sink, device
        self.train_pairs, self.eval_pairs = train_pairs, eval_pairs
        self.pad_id = engine.model.tokenizer.pad_token_id
        self.total, self.bf16 = total, bf16
        self.hash = config_hash(config)
        self.lengths = [len(c) + len(r) for c, r in zip(train_pairs.chosen, train_pairs.rejected)]
        self.totals, self.window, self.progress_window = _Window(), _Window(), _Window()
        self.last_train: dict[str, float] = {}
        self.last_checkpoint: Path | None = None
        self.cpu_seconds = 0.0  # process CPU time of the steps (less sensitive to a shared CPU)
        self.rank, self.world = dist.rank(), dist.world_size()
        self.seen_pairs: list[int] = []  # pair indices this rank trained on
        self.data_stats = {
            "train_pairs": len(train_pairs),
            "eval_pairs": len(eval_pairs),
            "sequences_truncated": train_pairs.truncated + eval_pairs.truncated,
            "pairs_dropped": train_pairs.dropped + eval_pairs.dropped,
        }
        log.info("training %d steps on %d pairs (%s)", total, len(train_pairs), self.data_stats)

    def run(self, start: int, ckpt_root: Path) -> None:
        cfg = self.config
        progress = Progress(
            "train", self.total, every_steps=cfg.log_every, every_seconds=cfg.progress_seconds,
            start=start, bar=None if dist.is_main() else False,
        )  # fmt: skip
        with progress:
            for step, batch in _schedule(cfg, self.lengths):
                if step < start:
                    continue  # data position: replay the seeded plan up to the checkpoint
                if step >= self.total:
                    break
                self._step(step, batch, ckpt_root, progress)

    def _step(self, step: int, batch: list[int], ckpt_root: Path, progress: Progress) -> None:
        """One optimizer step, then what is due after it: progress, metrics, eval, checkpoint."""
        cfg = self.config
        self.train_step(batch)
        done = step + 1
        if dist.is_main():
            seen = self.progress_window.peek()
            rate = (seen["train/tokens_per_s"], "real tok/s")
            shown = {k: seen.get(f"train/{k}", float("nan")) for k in ("loss", "accuracy")}
            if progress.update(done, metrics=shown, rate=rate):
                self.progress_window = _Window()
        if done % cfg.log_every == 0 or done == self.total:
            self.last_train = self.window.flush()
            self.sink.log_metrics(self.last_train, done)
        if cfg.eval_every and done % cfg.eval_every == 0 and done != self.total:
            self.sink.log_metrics(self.evaluate()[0], done)
        if (cfg.checkpoint_every and done % cfg.checkpoint_every == 0) or done == self.total:
            self.last_checkpoint = self.engine.save(
                ckpt_root,
                done,
                {"config_hash": self.hash, "total_steps": self.total, "train_metrics": self.last_train},
            )

    def train_step(self, batch: list[int]) -> None:
        """One optimizer step over a global batch (gradient accumulation over micro-batches).

        With W ranks this rank runs its share of the micro-batches; loss weights make the
        rank-averaged gradient that of the global batch's mean loss; metric sums are all-reduced.
        """
        cfg = self.config
        t0, c0 = time.perf_counter(), time.process_time()
        lr = self.engine.lr()  # the rate this step uses
        sums: dict[str, float] = {}
        real = processed = 0
        micros = split_micro_batches(batch, self.lengths, cfg.micro_batch)
        pad_to = getattr(self.engine, "micro_steps", None)
        for micro, is_real in dist.shard_micro_batches(micros, self.rank, self.world, pad_to=pad_to):
            b = _to(
                _batch(self.train_pairs, micro, self.pad_id, cfg.max_groups, cfg.group_overhead), self.device
            )
            share = len(micro) / len(batch) if is_real else 0.0  # of the global batch's mean loss
            with _autocast(self.device, self.bf16 and self.engine.autocast):
                r_c, r_r = split_rewards(pair_rewards(self.engine.module, b))
            loss, m = bradley_terry_loss(
                r_c, r_r, margin=b.margins, center_coef=cfg.loss.center_coef, hinge=cfg.loss.hinge
            )
            self.engine.backward(loss * (share * self.world))  # ranks' gradients are averaged
            for k, v in m.items():
                sums[k] = sums.get(k, 0.0) + v * share
            if is_real:
                real, processed = real + b.real_tokens, processed + b.processed_tokens
                self.seen_pairs += micro
        sums["grad_norm"] = self.engine.step()
        if self.world > 1:
            keys = sorted(k for k in sums if k != "grad_norm")  # the grad norm is already global
            *values, real, processed = dist.all_reduce_sum([sums[k] for k in keys] + [real, processed])
            sums |= dict(zip(keys, values))
            real, processed = int(real), int(processed)
        sums["lr"] = lr
        seconds = time.perf_counter() - t0
        self.cpu_seconds += time.process_time() - c0
        self.window.add(sums, real=real, processed=processed, seconds=seconds)
        self.progress_window.add(sums, real=real, processed=processed, seconds=seconds)
        self.totals.add({}, real=real, processed=processed, seconds=seconds)

    def evaluate(self) -> tuple[dict[str, float], dict[str, float] | None]:
        return evaluate_pairs(
            self.engine.module,
            self.eval_pairs,
            pad_id=self.pad_id,
            batch=self.config.eval_batch,
            device=self.device,
            bf16=self.bf16 and self.engine.autocast,
            config=self.config,
        )
