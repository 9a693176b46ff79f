"""GPU check (issue 14): rmflow vs TRL's RewardTrainer on one GPU, then a 2-step ZeRO-2 launch.

The one prepared script for a lent GPU machine (run it through ``bench/gpu_check.sh``, which
installs the carried wheels first). On one GPU it:

1. builds a from-config Llama-style ``LlamaForSequenceClassification`` (hidden 1024, 24 layers,
   16 heads / 8 KV heads, intermediate 2816, vocab 32,000: ~316M parameters, random weights) and
   a word-level tokenizer written here (one token per word ``t<i>``, a small chat template), so
   nothing is downloaded and every token count is exact;
2. writes synthetic single-turn pairs with a realistic length spread (prompt and answers
   log-normal, up to ``max_length`` 2048; mean ~540 tokens per sequence) as an rmflow mixture,
   and gives TRL the very token ids rmflow encodes (``chosen_ids``/``rejected_ids`` columns,
   which TRL takes as already tokenized);
3. trains each system in its own process on the same pairs, model and hyper-parameters
   (batch 8 pairs, AdamW, cosine, bf16 autocast on fp32 weights, no gradient checkpointing):
   TRL's ``RewardTrainer`` with its own collator (pads each batch to its longest sequence,
   SDPA or flash-attention-2 when installed), rmflow's ``train_reward_model`` with its
   defaults (padding-free packed causal pass; flash-attention-2 varlen when installed, else
   one SDPA call per run of equal-length sequences) except ``gradient_checkpointing: false``
   (its "auto" turns checkpointing on with a GPU, and the packed pass off with it). The first
   ``warmup`` optimizer steps are not timed; each timed step starts and ends with a device
   synchronisation. A system that runs out of GPU memory is run again with half the
   micro-batch and 2 accumulation steps (same global batch; ``micro_batch`` says so);
4. runs 2 optimizer steps of DeepSpeed ZeRO-2 through ``rmcore.train.launch.launch_torchrun``
   (``torchrun -m rmflow.cli train``, one process per visible GPU,
   deployments/deepspeed/zero2.json, the task's compute defaults, 2 micro-batches of 4 pairs
   per step): the launcher path of the training task.

It prints ONE JSON line on stdout (progress goes to stderr): real tokens/s of both and the
ratio, padding efficiency (real tokens / tokens the layers computed), model TFLOP/s and MFU
(6 x non-embedding parameters per real token + causal attention 6 x layers x heads x head_dim
x L^2 per sequence, against the card's dense bf16 peak; a matmul probe gives the measured one),
peak GPU memory (``torch.cuda.max_memory_allocated``), and whether the ZeRO-2 launch finished.
Every stage runs even when an earlier one failed; the exit status is non-zero when any failed,
with each error in the JSON. ``--deadline-s`` bounds the whole run (the device tool's command
limit is 10 minutes).

``--dry``: the same code path on CPU in fp32 with a tiny model (2 layers, hidden 64), max length
128, 1 warm-up and 2 timed steps each, batch 4 pairs, same JSON keys (GPU-only values are null;
its speeds mean nothing). About a minute on 2 CPU cores (5 Python processes start), plus 1-2
minutes the first time DeepSpeed compiles its CPU shm comm op. tests/test_gpu_check.py runs it.

    bash bench/gpu_check.sh              # on the GPU machine (carry bench/.gpu_wheels)
    .venv/bin/python bench/gpu_check.py --dry
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
ZERO2 = REPO / "deployments" / "deepspeed" / "zero2.json"

SPECIALS = ["<unk>", "<pad>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
CHAT_TEMPLATE = "{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' </s> ' }}{% endfor %}"
"""Each message is ``<|role|> words </s>``: content words + 2 tokens."""

DENSE_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4), ("H200", 989.4),
                     ("GH200", 989.4), ("A100", 312.0), ("L40S", 362.0))  # fmt: skip
"""NVIDIA's dense (no sparsity) bf16 tensor-core peaks by device name, first match wins."""


@dataclass(frozen=True)
class Shape:
    """The Llama-style backbone built from its config."""

    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    vocab: int


@dataclass(frozen=True)
class Plan:
    """What one check run trains: the model, the data and the step budget."""

    shape: Shape
    max_length: int
    warmup: int
    steps: int
    batch: int
    bf16: bool
    lr: float = 2e-5
    seed: int = 0

    @property
    def pairs(self) -> int:
        """Both systems see every pair once: one global batch per optimizer step."""
        return (self.warmup + self.steps) * self.batch


GPU_PLAN = Plan(Shape(1024, 24, 16, 8, 2816, 32000), max_length=2048, warmup=5, steps=80, batch=8, bf16=True)
DRY_PLAN = Plan(Shape(64, 2, 4, 2, 128, 1000), max_length=128, warmup=1, steps=2, batch=4, bf16=False)

log = logging.getLogger("gpu_check")


# --- model, tokenizer, pairs ------------------------------------------------------------------


def build_tokenizer(vocab: int, max_length: int):
    """A word-level fast tokenizer: the specials, then ``t0 .. t<n>``, split on whitespace."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = SPECIALS + [f"t{i}" for i in range(vocab - len(SPECIALS))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="<unk>",
        pad_token="<pad>",
        eos_token="</s>",
        model_max_length=max_length,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_model_folder(plan: Plan, folder: Path, device: str) -> Path:
    """Random-weight ``LlamaForSequenceClassification`` + tokenizer, saved as a plain HF folder."""
    import torch
    from transformers import LlamaConfig, LlamaForSequenceClassification

    s = plan.shape
    tokenizer = build_tokenizer(s.vocab, plan.max_length)
    config = LlamaConfig(
        vocab_size=s.vocab, hidden_size=s.hidden, num_hidden_layers=s.layers, num_attention_heads=s.heads,
        num_key_value_heads=s.kv_heads, intermediate_size=s.intermediate, head_dim=s.hidden // s.heads,
        max_position_embeddings=max(4096, plan.max_length), rope_theta=500000.0, rms_norm_eps=1e-5,
        tie_word_embeddings=False, num_labels=1, pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, bos_token_id=None,
    )  # fmt: skip
    torch.manual_seed(plan.seed)
    with torch.device(device):  # initialising ~300M parameters on the GPU takes a fraction of a second
        model = LlamaForSequenceClassification(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    return folder


def synthetic_lengths(plan: Plan) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) word counts: log-normal prompts (median 8% of max_length) and
    answers (median 11%), both sides within max_length with their template tokens."""
    import numpy as np

    rng = np.random.default_rng(plan.seed)
    L, out = plan.max_length, []
    while len(out) < plan.pairs:
        p = int(np.clip(rng.lognormal(math.log(0.08 * L), 1.0), 4, 0.75 * L))
        c, r = (max(2, int(rng.lognormal(math.log(0.11 * L), 0.8))) for _ in range(2))
        if p + max(c, r) + 4 <= L:  # 2 template tokens per message
            out.append((p, c, r))
    return out


def synthetic_mixture(plan: Plan, path: Path) -> None:
    """The pairs as an rmflow mixture (MIXTURE contract); words drawn uniformly from the vocabulary."""
    import numpy as np
    import pyarrow as pa

    from data_contracts import MIXTURE
    from rmcore.io import write_table

    rng = np.random.default_rng(plan.seed + 1)
    n_words = plan.shape.vocab - len(SPECIALS)

    def text(n: int) -> str:
        return " ".join(f"t{i}" for i in rng.integers(0, n_words, n))

    rows = []
    for i, (p, c, r) in enumerate(synthetic_lengths(plan)):
        prompt = [{"role": "user", "content": text(p)}]
        rows.append({
            "pair_id": f"gpu-check-{i}", "source": "synthetic", "prompt": prompt,
            "chosen": prompt + [{"role": "assistant", "content": text(c)}],
            "rejected": prompt + [{"role": "assistant", "content": text(r)}],
            "chosen_score": None, "rejected_score": None, "split": "train", "subset": "gpu-check",
        })  # fmt: skip
    write_table(pa.Table.from_pylist(rows, schema=MIXTURE.schema), path, MIXTURE)


def encoded_pairs(folder: Path, mixture: Path, max_length: int) -> dict[str, list[list[int]]]:
    """rmflow's own token ids of every pair (``encode_pairs``, as its loader calls it), for TRL."""
    from transformers import AutoTokenizer

    from rmcore.encoding import encode_pairs
    from rmcore.io import read_table

    rows = read_table(mixture, "mixture").select(["chosen", "rejected"]).to_pylist()
    tok = AutoTokenizer.from_pretrained(str(folder))
    enc = encode_pairs(tok, [r["chosen"] for r in rows], [r["rejected"] for r in rows], max_length=max_length)
    if len(enc) != len(rows) or enc.truncated or enc.dropped:
        raise AssertionError(f"{mixture}: {len(rows)} pairs, {len(enc)} encoded, {enc.truncated} truncated")
    return {"chosen": enc.chosen, "rejected": enc.rejected}


# --- measurement helpers ----------------------------------------------------------------------


def sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def peak_gpu_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def attention_flops(shape: Shape, sum_sq: int) -> float:
    """Training FLOPs of causal attention (QK^T and AV, forward + backward, the unmasked half)."""
    return 6.0 * shape.layers * shape.hidden * sum_sq


def matmul_peak_tflops(device: str, bf16: bool) -> float:
    """Measured dense matmul rate: 8192^3 bf16 on a GPU (the KINDS.md probe), 512^3 on a CPU."""
    import torch

    n, reps = (8192, 10) if device == "cuda" else (512, 5)
    dtype = torch.bfloat16 if bf16 else torch.float32
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync()
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def spec_peak_tflops(name: str) -> float | None:
    return next((tf for key, tf in DENSE_BF16_TFLOPS if key in name), None)


def flash_attn_available() -> bool:
    from transformers.utils import is_flash_attn_2_available

    return bool(is_flash_attn_2_available())


def is_oom(e: BaseException) -> bool:
    return type(e).__name__ == "OutOfMemoryError" or "out of memory" in str(e).lower()


# --- workers (each in its own process) --------------------------------------------------------


def worker_trl(spec: dict) -> dict:
    """TRL's RewardTrainer on rmflow's token ids; per-step real/computed tokens and seconds."""
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    cuda = torch.cuda.is_available()
    attn = "flash_attention_2" if cuda and spec["bf16"] and flash_attn_available() else "sdpa"
    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForSequenceClassification.from_pretrained(
        spec["model"], num_labels=1, use_safetensors=True, dtype=torch.float32, attn_implementation=attn
    )
    ids = json.loads(Path(spec["ids"]).read_text())
    ds = datasets.Dataset.from_dict({"chosen_ids": ids["chosen"], "rejected_ids": ids["rejected"]})
    micro = spec["micro"]
    total = spec["warmup"] + spec["steps"]
    args = RewardConfig(
        output_dir=spec["tmp"], per_device_train_batch_size=micro,
        gradient_accumulation_steps=spec["batch"] // micro, max_steps=total, learning_rate=spec["lr"],
        weight_decay=0.001, warmup_steps=math.ceil(0.05 * total), lr_scheduler_type="cosine",
        bf16=spec["bf16"], use_cpu=not cuda, gradient_checkpointing=False, max_length=spec["max_length"],
        logging_steps=1 if total < 20 else 5, report_to="none", save_strategy="no", seed=42, dataloader_num_workers=0,
    )  # fmt: skip
    steps: list[dict] = []
    counts = {"real": 0, "processed": 0, "sum_sq": 0, "pairs": 0}

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            sync()
            self.t0, self.c0 = time.perf_counter(), dict(counts)

        def on_step_end(self, *a, **k):
            sync()
            steps.append(
                {"seconds": time.perf_counter() - self.t0, **{k: counts[k] - self.c0[k] for k in counts}}
            )

    trainer = RewardTrainer(
        model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock()]
    )
    if len(trainer.train_dataset) != len(ids["chosen"]):
        raise AssertionError(f"TRL kept {len(trainer.train_dataset)} of {len(ids['chosen'])} pairs")
    compute_loss = trainer.compute_loss

    def counting(model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:  # counted where the loss is computed (the data loader collates ahead)
            lengths = inputs["attention_mask"].sum(1)
            counts["real"] += int(lengths.sum())
            counts["sum_sq"] += int((lengths.long() ** 2).sum())
            counts["processed"] += inputs["attention_mask"].numel()
            counts["pairs"] += inputs["attention_mask"].shape[0] // 2
        return compute_loss(model, inputs, return_outputs, num_items_in_batch)

    trainer.compute_loss = counting
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "steps": steps,
        "losses": losses,
        "attention": model.config._attn_implementation,
        "micro": micro,
        "peak_gpu_gib": peak_gpu_gib(),
        "peak_rss_mib": peak_rss_mib(),
    }


def worker_rmflow(spec: dict) -> dict:
    """rmflow's ``train_reward_model`` (defaults but gradient checkpointing off, which would turn
    the packed pass off); per-step counts read from the training loop's own totals."""
    import torch

    from rmcore.train import ListSink, loop, train_reward_model
    from rmcore.train.config import (
        BackboneConfig,
        BatchingConfig,
        ComputeConfig,
        EvaluationConfig,
        LoggingConfig,
        OptimConfig,
        TrainConfig,
    )  # fmt: skip

    steps: list[dict] = []
    original = loop.Loop.train_step

    def timed(self, batch):
        before = (self.totals.real, self.totals.processed, len(self.seen_pairs))
        sync()
        t0 = time.perf_counter()
        original(self, batch)
        sync()  # the loop's own clock stops at the grad norm's .item(), before the optimizer step
        seconds = time.perf_counter() - t0
        new = self.seen_pairs[before[2] :]
        chosen, rejected = self.objective.items.chosen, self.objective.items.rejected
        steps.append({
            "seconds": seconds, "real": self.totals.real - before[0],
            "processed": self.totals.processed - before[1], "pairs": len(new),
            "sum_sq": sum(len(chosen[i]) ** 2 + len(rejected[i]) ** 2 for i in new),
        })  # fmt: skip

    loop.Loop.train_step = timed
    from bench_train_causal import capture_setup_lines

    setup_lines = capture_setup_lines()
    config = TrainConfig(
        model=spec["model"], seed=42,
        backbone=BackboneConfig(pooling="last", max_length=spec["max_length"]),
        optim=OptimConfig(lr=spec["lr"], warmup_ratio=0.05, max_steps=spec["warmup"] + spec["steps"]),
        batching=BatchingConfig(micro_batch=spec["micro"], global_batch=spec["batch"]),
        compute=ComputeConfig(bf16=spec["bf16"], gradient_checkpointing=False),
        evaluation=EvaluationConfig(fraction=0.0), logging=LoggingConfig(every=1),
    )  # fmt: skip
    sink = ListSink()
    result = train_reward_model(
        config, mixture_path=Path(spec["mixture"]), output_dir=Path(spec["tmp"]) / "out", sink=sink
    )
    packed = "packed causal pass: on" in setup_lines
    cuda = torch.cuda.is_available()
    if not packed:
        attention = "stock forward per padded length group"
    elif cuda and spec["bf16"] and flash_attn_available():
        attention = "flash_attention_2 varlen (packed)"
    else:
        attention = "sdpa per run of equal-length sequences (packed)"
    return {
        "steps": steps,
        "losses": sink.series("train/loss"),
        "attention": attention,
        "packed": packed,
        "setup": setup_lines,
        "precision": result.precision.get("name"),
        "micro": spec["micro"],
        "peak_gpu_gib": peak_gpu_gib(),
        "peak_rss_mib": peak_rss_mib(),
    }


def worker_zero2(spec: dict) -> dict:
    """2 optimizer steps of DeepSpeed ZeRO-2 through the training task's launcher path."""
    from rmcore.train.config import (
        BackboneConfig,
        BatchingConfig,
        ComputeConfig,
        EvaluationConfig,
        LoggingConfig,
        OptimConfig,
        TrainConfig,
    )  # fmt: skip
    from rmcore.train.launch import launch_torchrun

    n, micro = spec["processes"], max(1, spec["batch"] // 2)
    config = TrainConfig(  # the task's defaults (gradient checkpointing on a GPU), 2 micro-batches a step
        model=spec["model"], seed=42, deepspeed=str(ZERO2), processes=n,
        backbone=BackboneConfig(pooling="last", max_length=spec["max_length"]),
        optim=OptimConfig(lr=spec["lr"], max_steps=2),
        batching=BatchingConfig(micro_batch=micro, global_batch=2 * micro * n),
        compute=ComputeConfig(bf16=spec["bf16"]),
        evaluation=EvaluationConfig(fraction=0.0), logging=LoggingConfig(every=1),
    )  # fmt: skip
    t0 = time.perf_counter()
    result = launch_torchrun(
        config, spec["mixture"], Path(spec["tmp"]) / "zero2", processes=n, resume=False,
        on_line=lambda line: print(f"[zero2] {line}", file=sys.stderr, flush=True),
    )  # fmt: skip
    return {
        "finished": True,
        "processes": n,
        "micro_batch": micro,
        "steps": result["steps"],
        "tokens_per_s": result["tokens_per_s"],
        "precision": (result.get("precision") or {}).get("name"),
        "model_saved": (Path(result["model_dir"]) / "model.safetensors").exists(),
        "wall_s": round(time.perf_counter() - t0, 1),
    }


WORKERS = {"trl": worker_trl, "rmflow": worker_rmflow, "zero2": worker_zero2}
SKIPPED = {"skipped": True}
"""A stage left out with --skip: no result and no error (the JSON says which)."""


def run_worker(kind: str, spec: dict, timeout: float) -> dict:
    """One worker in a fresh process (its own CUDA context and peak memory); its result, or
    ``{"error": ...}`` when it failed, ran out of memory (``"oom": true``) or out of time."""
    with tempfile.TemporaryDirectory(prefix=f"gpu-check-{kind}-") as tmp:
        spec = {**spec, "tmp": tmp}
        spec_path, out = Path(tmp) / "spec.json", Path(tmp) / "result.json"
        spec_path.write_text(json.dumps(spec))
        cmd = [sys.executable, __file__, "--worker", kind, "--spec", str(spec_path), "--result", str(out)]
        log.info("%s: starting (timeout %.0f s)", kind, timeout)
        t0 = time.perf_counter()
        try:
            proc = subprocess.run(
                cmd, check=False, stdout=sys.stderr, timeout=max(timeout, 1.0), env=_worker_env()
            )
        except subprocess.TimeoutExpired:
            return {"error": f"{kind}: no result within {timeout:.0f} s (--deadline-s)"}
        log.info("%s: exit %d after %.1f s", kind, proc.returncode, time.perf_counter() - t0)
        if out.exists():
            return json.loads(out.read_text())
        return {"error": f"{kind}: worker exited {proc.returncode} without a result (see stderr)"}


def worker_main(kind: str, spec_path: str, result_path: str) -> int:
    spec = json.loads(Path(spec_path).read_text())
    try:
        result = WORKERS[kind](spec)
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which puts it in the JSON line
        traceback.print_exc()
        result = {"error": f"{kind}: {type(e).__name__}: {str(e).strip()[-2000:]}", "oom": is_oom(e)}
    Path(result_path).write_text(json.dumps(result))
    return 0 if "error" not in result else 1


# --- the report -------------------------------------------------------------------------------


def summarize(run: dict, plan: Plan, params: int, peak: float | None, measured: float) -> dict:
    """Timed steps (after the warm-up) of one system: rates, padding, model FLOP/s, MFU."""
    timed = run["steps"][plan.warmup :]
    if not timed:
        raise ValueError(f"no timed steps: {len(run['steps'])} steps ran, {plan.warmup} are warm-up")
    seconds = sum(s["seconds"] for s in timed)
    real = sum(s["real"] for s in timed)
    processed = sum(s["processed"] for s in timed)
    flops = 6.0 * params * real + attention_flops(plan.shape, sum(s["sum_sq"] for s in timed))
    tflops = flops / seconds / 1e12
    return {
        "tokens_per_s": real / seconds,
        # the packed pass computes real tokens only; rmflow's own count is its length groups'
        "padding_efficiency": 1.0 if run.get("packed") else real / processed,
        "grouped_padding_efficiency": real / processed,
        "step_s": seconds / len(timed),
        "real_tokens_per_pair": real / max(1, sum(s["pairs"] for s in timed)),
        "model_tflops": tflops,
        "mfu": tflops / peak if peak else None,
        "mfu_of_measured": tflops / measured,
    }


ZERO2_KEYS = ("processes", "micro_batch", "steps", "tokens_per_s", "precision", "model_saved", "wall_s")


def report(plan: Plan, dry: bool, runs: dict[str, dict], env: dict, zero2: dict, wall: float) -> dict:
    errors = [r["error"] for r in (*runs.values(), zero2) if "error" in r and not r.get("skipped")]
    stats: dict[str, dict] = {}
    for name, run in runs.items():
        if "error" not in run:
            try:
                stats[name] = summarize(
                    run,
                    plan,
                    env["non_embedding_params"],
                    env["peak_tflops_used"],
                    env["peak_tflops_measured"],
                )
            except (ValueError, KeyError, ZeroDivisionError) as e:
                errors.append(f"{name}: {type(e).__name__}: {e}")

    def each(key: str, digits: int = 1) -> dict:
        out = {}
        for name in ("trl", "rmflow"):
            value = stats.get(name, {}).get(key)
            out[name] = None if value is None else round(value, digits)
        return out

    def field(name: str, key: str):
        return runs.get(name, {}).get(key)

    gib = {
        n: (None if field(n, "peak_gpu_gib") is None else round(field(n, "peak_gpu_gib"), 2)) for n in runs
    }
    both = "trl" in stats and "rmflow" in stats
    return {
        "ok": not errors,
        "mode": "dry" if dry else "gpu",
        **{k: env[k] for k in ("device", "cpu", "versions", "flash_attn")},
        "model": {
            **asdict(plan.shape),
            "params": env["params"],
            "non_embedding_params": env["non_embedding_params"],
            "arch": "LlamaForSequenceClassification (from config, random weights)",
        },
        "max_length": plan.max_length,
        "dtype": "bf16 autocast, fp32 weights" if plan.bf16 else "fp32",
        "batch_pairs": plan.batch,
        "micro_batch": {n: field(n, "micro") for n in runs},
        "warmup_steps": plan.warmup,
        "timed_steps": plan.steps,
        "pairs": plan.pairs,
        "mean_sequence_tokens": env["mean_sequence_tokens"],
        "gradient_checkpointing": False,
        "attention": {n: field(n, "attention") for n in runs},
        "rmflow_packed": field("rmflow", "packed"),
        "tokens_per_s": each("tokens_per_s"),
        "ratio_rmflow_vs_trl": round(stats["rmflow"]["tokens_per_s"] / stats["trl"]["tokens_per_s"], 3)
        if both
        else None,
        "padding_efficiency": each("padding_efficiency", 3),
        "rmflow_grouped_padding_efficiency": each("grouped_padding_efficiency", 3)["rmflow"],
        "step_s": each("step_s", 4),
        "real_tokens_per_pair": each("real_tokens_per_pair"),
        "model_tflops": each("model_tflops", 6 if dry else 1),
        "peak_tflops": {
            "spec_dense_bf16": env["peak_tflops_spec"],
            "measured_matmul": round(env["peak_tflops_measured"], 4 if dry else 1),
            "mfu_against": env["peak_against"],
        },
        "mfu": each("mfu", 4),
        "mfu_of_measured_peak": each("mfu_of_measured", 4),
        "peak_gpu_mem_gib": gib,
        "peak_rss_mib": {
            n: (None if field(n, "peak_rss_mib") is None else round(field(n, "peak_rss_mib"))) for n in runs
        },
        "first_last_loss": {
            n: (
                [round(field(n, "losses")[0], 4), round(field(n, "losses")[-1], 4)]
                if field(n, "losses")
                else None
            )
            for n in runs
        },
        "zero2_launch": {
            "finished": bool(zero2.get("finished")),
            **{k: zero2.get(k) for k in ZERO2_KEYS},
            "error": None if zero2.get("skipped") else zero2.get("error"),
        },
        "skipped": sorted(n for n, r in (*runs.items(), ("zero2", zero2)) if r.get("skipped")),
        "wall_s": round(wall, 1),
        "errors": errors,
    }


def _worker_env() -> dict[str, str]:
    """This environment without a launcher's rendezvous variables: a worker is a fresh single
    process, and a MASTER_PORT left by whoever started this script may still be held by it."""
    drop = {"RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def environment(plan: Plan, folder: Path, ids: dict, device: str) -> dict:
    import importlib.metadata as md

    import torch
    from bench_train_causal import non_embedding_params
    from transformers import AutoConfig

    from rmcore.precision import cpu_description

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    with torch.device("meta"):
        from transformers import AutoModelForSequenceClassification

        meta = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(folder))
    name = torch.cuda.get_device_name(0) if device == "cuda" else cpu_description()["model"]
    spec = spec_peak_tflops(name) if device == "cuda" else None
    measured = matmul_peak_tflops(device, plan.bf16)
    lengths = [len(s) for side in ids.values() for s in side]
    return {
        "device": name,
        "cpu": cpu_description()["model"],
        "versions": {
            n: version(n) for n in ("torch", "transformers", "accelerate", "trl", "datasets", "deepspeed")
        }
        | {"python": platform.python_version(), "cuda": torch.version.cuda},
        "flash_attn": flash_attn_available(),
        "params": sum(p.numel() for p in meta.parameters()),
        "non_embedding_params": non_embedding_params(meta),
        "peak_tflops_spec": spec,
        "peak_tflops_measured": measured,
        "peak_tflops_used": spec or measured,
        "peak_against": "spec" if spec else "measured",
        "mean_sequence_tokens": round(sum(lengths) / len(lengths), 1),
    }


def train_with_retry(kind: str, spec: dict, deadline: float) -> dict:
    """A worker; on running out of GPU memory, again with half the micro-batch (same global batch)."""
    while True:
        result = run_worker(kind, spec, deadline - time.monotonic())
        if not result.get("oom") or spec["micro"] == 1:
            return result
        log.warning(
            "%s ran out of memory at micro-batch %d; again with %d", kind, spec["micro"], spec["micro"] // 2
        )
        spec = {**spec, "micro": spec["micro"] // 2}


def check(plan: Plan, dry: bool, deadline_s: float, skip: set[str]) -> dict:
    import torch

    t_start = time.monotonic()
    deadline = t_start + deadline_s
    device = "cpu" if dry or not torch.cuda.is_available() else "cuda"
    if not dry and device != "cuda":
        raise RuntimeError("no CUDA device visible; use --dry for the CPU check")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        folder = build_model_folder(plan, Path(tmp) / "model", device)
        mixture = Path(tmp) / "mixture.parquet"
        synthetic_mixture(plan, mixture)
        ids = encoded_pairs(folder, mixture, plan.max_length)
        (Path(tmp) / "ids.json").write_text(json.dumps(ids))
        env = environment(plan, folder, ids, device)
        if device == "cuda":
            torch.cuda.empty_cache()
        log.info("model %s params, %s pairs, mean %.0f tokens/sequence, device %s", f"{env['params']:,}",
                 plan.pairs, env["mean_sequence_tokens"], env["device"])  # fmt: skip
        spec = {
            "model": str(folder), "mixture": str(mixture), "ids": str(Path(tmp) / "ids.json"),
            "max_length": plan.max_length, "warmup": plan.warmup, "steps": plan.steps, "batch": plan.batch,
            "micro": plan.batch, "bf16": plan.bf16, "lr": plan.lr,
        }  # fmt: skip
        runs = {}
        for kind in ("trl", "rmflow"):
            runs[kind] = (
                SKIPPED | {"error": f"{kind}: skipped"}
                if kind in skip
                else train_with_retry(kind, spec, deadline)
            )
        processes = torch.cuda.device_count() if device == "cuda" else 1
        zero2 = (
            SKIPPED | {"error": "zero2: skipped"}
            if "zero2" in skip
            else run_worker("zero2", {**spec, "processes": processes}, deadline - time.monotonic())
        )
        return report(plan, dry, runs, env, zero2, time.monotonic() - t_start)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry", action="store_true", help="tiny model, CPU, fp32, 2 timed steps each (seconds)")
    p.add_argument("--steps", type=int, help="timed optimizer steps per system (GPU default 80)")
    p.add_argument("--warmup", type=int, help="untimed optimizer steps first (GPU default 5)")
    p.add_argument("--batch", type=int, help="pairs per optimizer step (default 8; 4 in --dry)")
    p.add_argument(
        "--deadline-s", type=float, default=450.0, help="whole run, stages stopped after (default 450)"
    )
    p.add_argument("--skip", action="append", default=[], choices=sorted(WORKERS), help="leave a stage out")
    p.add_argument("--worker", choices=sorted(WORKERS), help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> int:
    args = _parse()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s: %(message)s")
    if args.worker:
        with contextlib.redirect_stdout(sys.stderr):
            return worker_main(args.worker, args.spec, args.result)
    plan = DRY_PLAN if args.dry else GPU_PLAN
    overrides = {
        k: v for k, v in (("steps", args.steps), ("warmup", args.warmup), ("batch", args.batch)) if v
    }
    plan = replace(plan, **overrides)
    t0 = time.monotonic()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # libraries print to stdout; it carries the JSON only
            out = check(plan, args.dry, args.deadline_s, set(args.skip))
    except Exception as e:  # noqa: BLE001 - set-up failed: still one JSON line, with the reason
        traceback.print_exc()
        out = {"ok": False, "mode": "dry" if args.dry else "gpu", "wall_s": round(time.monotonic() - t0, 1),
               "errors": [f"setup: {type(e).__name__}: {e}"]}  # fmt: skip
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
