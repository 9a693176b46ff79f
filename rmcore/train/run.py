"""Bradley-Terry reward-model training: one loop, plain PyTorch or DeepSpeed underneath.

``train_reward_model(config, mixture_path=..., output_dir=...)`` reads a mixture Parquet
(MIXTURE contract), encodes the pairs, trains with AdamW + warmup/cosine + gradient
accumulation + clipping, logs metrics through a ``MetricsSink``, checkpoints, and writes
the final reward model as a plain HF folder under ``output_dir/model``.

Layout of ``output_dir``: ``model/`` (final), ``checkpoints/step-N/``, ``metrics.json``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rmcore.config import ConfigError
from rmcore.io import write_json
from rmcore.precision import Probe
from rmcore.train import distributed as dist
from rmcore.train.backbone import disable_dropout, freeze_lower_layers, load_model
from rmcore.train.checkpoint import latest_checkpoint
from rmcore.train.config import TrainConfig
from rmcore.train.cpu_memory import retain_freed_memory
from rmcore.train.frozen_cache import frozen_cache
from rmcore.train.items import load_rated
from rmcore.train.loop import Loop
from rmcore.train.objectives import make_objective, train_items
from rmcore.train.pairs import encode_rows, mixture_rows
from rmcore.train.regression_eval import (
    export_regression,
    init_attribute_bias,
    rated_outputs,
    regression_report,
)
from rmcore.train.setup import make_engine, set_attention, set_packing, training_precision
from rmcore.train.sinks import LoggingSink, MetricsSink


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
    regression: dict[str, Any] = field(default_factory=dict)
    """A regression model's per-attribute held-out metrics, weights and verbosity lambda (else empty)."""


def train_reward_model(
    config: TrainConfig,
    *,
    mixture_path: Path,
    output_dir: Path,
    sink: MetricsSink | None = None,
    resume: bool = True,
    precision_probe: Probe | None = None,
    rated_path: Path | None = None,
) -> TrainResult:
    """Train a reward model on a mixture; return where the model is and how it did.

    ``config.model_type`` says what from: ``bt`` the mixture's train pairs, ``listwise`` their
    rankings (rmcore.train.items), ``regression`` the rated responses of ``rated_path`` (RATED_RESPONSES
    with train/validation splits). Every type is evaluated on the mixture's held-out pairs.

    With ``config.deepspeed`` the same loop runs through ``deepspeed.initialize`` (ZeRO
    1/2/3); otherwise plain PyTorch. ``resume`` continues from the newest checkpoint under
    ``output_dir/checkpoints`` made with the same config. ``precision_probe`` replaces the
    CPU's bf16-vs-fp32 measurement behind ``bf16: auto`` (tests).

    Under a launcher with WORLD_SIZE > 1 (DeepSpeed only) each rank trains on its share of
    every global batch (``rmcore.train.distributed``); metrics are global, only rank 0 logs them
    to ``sink`` and writes the model and metrics.json; every rank returns the same paths.
    """
    if dist.launched_world_size() > 1 and not config.deepspeed:
        raise ConfigError(
            f"launched with WORLD_SIZE={dist.launched_world_size()} but the config sets no `deepspeed:`; "
            "multi-process training runs through DeepSpeed: set deepspeed: deployments/deepspeed/zero2.json"
        )
    linear = torch.nn.functional.linear
    on_cpu = config.compute.malloc_tuning == "auto" and not torch.cuda.is_available()
    try:
        with retain_freed_memory(on_cpu):
            return _train(config, mixture_path, output_dir, sink, resume, precision_probe, rated_path)
    finally:
        # DeepSpeed ZeRO-3 replaces torch.nn.functional.linear process-wide ("this will persist
        # unless manually reset"); put it back so later work in this process (another training
        # in a Prefect worker, scoring) runs stock torch and gives the same numbers.
        torch.nn.functional.linear = linear


def training_device() -> torch.device:
    """CPU, or this rank's own GPU: LOCAL_RANK (set by torchrun / Ray Train) picks it, so N ranks
    on a node use N devices instead of all sharing cuda:0."""
    if not torch.cuda.is_available():
        return torch.device("cpu")
    import os

    index = int(os.environ.get("LOCAL_RANK", "0") or 0) % torch.cuda.device_count()
    torch.cuda.set_device(index)
    return torch.device("cuda", index)


def _train(
    config: TrainConfig,
    mixture_path: Path,
    output_dir: Path,
    sink: MetricsSink | None,
    resume: bool,
    probe: Probe | None = None,
    rated_path: Path | None = None,
) -> TrainResult:
    output_dir, sink = Path(output_dir), sink or LoggingSink()
    torch.manual_seed(config.seed)
    device = training_device()
    model = load_model(config)
    freeze_lower_layers(model, config.backbone.trainable_layers)
    precision = training_precision(config, model, device, probe)
    bf16 = precision.bf16
    set_attention(model, config, device, bf16)
    if config.model_type == "regression" and rated_path is None:
        raise ConfigError(
            "model_type regression trains on rated responses: give rated_path (the rated mixture)"
        )
    train_rows, held_rows = mixture_rows(config, Path(mixture_path))
    eval_pairs = encode_rows(config, model.tokenizer, held_rows)
    items = train_items(config, model.tokenizer, train_rows, rated_path)
    if config.model_type == "regression":
        init_attribute_bias(model, items)
    if not config.backbone.dropout:
        disable_dropout(model)
    if config.compute.gradient_checkpointing is True or (
        config.compute.gradient_checkpointing == "auto" and device.type == "cuda"
    ):
        enable = getattr(model.hf, "activation_checkpointing_enable", None)  # transformers >= 5.x name
        (enable or model.hf.gradient_checkpointing_enable)()
    model.to(device).train()
    per_epoch = math.ceil(len(items) / config.batching.global_batch)
    total = (
        per_epoch * config.optim.epochs
        if config.optim.max_steps is None
        else min(config.optim.max_steps, per_epoch * config.optim.epochs)
    )
    set_packing(model, config)
    engine = make_engine(config, model, total, bf16, device)
    cache = None
    if config.model_type == "bt":
        cache = frozen_cache(
            config, model, items, total=total, per_epoch=per_epoch, device=device,
            dtype=next(engine.module.parameters()).dtype, world=dist.world_size(),
        )  # fmt: skip
    if not dist.is_main():
        sink = dist.NullSink()  # rank 0 logs the global (all-reduced) metrics
    packed = getattr(engine.module, "packed", False) is True  # set_packing ran before
    objective = make_objective(
        config, items, model.tokenizer.pad_token_id, device, packed=packed, cache=cache
    )
    loop = Loop(config, engine, objective, eval_pairs, sink, device, total, bf16)
    ckpt_root = output_dir / "checkpoints"
    found = latest_checkpoint(ckpt_root, config_hash=loop.hash) if resume else None
    state = engine.restore(found) if found is not None else {"step": 0}
    loop.last_checkpoint, loop.last_train = found, state.get("train_metrics", {})
    start = state["step"]
    loop.run(start, ckpt_root)
    details = None
    if config.model_type == "regression":  # sets the final (debiased) combination before the pairs are scored
        regression_metrics, details = evaluate_regression(loop, model, items, rated_path)
    eval_metrics, norm = loop.evaluate()  # every rank (ZeRO-3 forwards are collective), same result
    if details is not None:
        eval_metrics |= regression_metrics
    metrics = {**loop.last_train, **eval_metrics}
    model_dir = output_dir / "model"
    if dist.is_main():
        final = engine.export(ckpt_root, loop.last_checkpoint)
        if details is not None:
            final.combination = model.combination
            export_regression(final, model_dir, details)
            write_json(details, output_dir / "regression.json")
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
        regression=details or {},
        step_seconds=loop.totals.seconds,
        step_cpu_seconds=loop.cpu_seconds,
        precision=precision.to_dict(),
    )


def evaluate_regression(
    loop: Loop, model, train_rated, rated_path: Path
) -> tuple[dict[str, float], dict[str, Any]]:
    """Score the rated responses (train and held out) and fit the final combination."""
    config = loop.config
    held = load_rated(config, Path(rated_path), model.tokenizer, "validation")
    kwargs = {
        "pad_id": loop.pad_id,
        "batch": config.evaluation.batch,
        "device": loop.device,
        "bf16": loop.bf16 and loop.engine.autocast,
    }
    outputs = (
        rated_outputs(loop.engine.module, train_rated, **kwargs),
        rated_outputs(loop.engine.module, held, **kwargs),
    )
    metrics, details = regression_report(model, config, train_rated, held, outputs)
    trained = getattr(loop.engine.module, "module", loop.engine.module)  # a bf16 working copy, or the model
    trained.combination = model.combination  # the final (debiased) reward scores the held-out pairs
    return metrics, details
