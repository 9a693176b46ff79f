"""Epoch-2 training speed with the frozen-layer cache on and off (``compute.cache_frozen``).

The smollm2-cpu recipe's training settings (SmolLM2-135M-Instruct, the top ``trainable_layers``
of 30 blocks trained, bf16 by probe with fp32 master weights, packed causal pass, micro-batch 8,
global batch 16, max_length 384) on real hh-rlhf train pairs (``extra/hh-rlhf-train-samples`` of
the data dir, helpful and harmless alternating), ``--steps`` optimizer steps per epoch.

Interleaved (the measurement; a shared 2-core CPU's load drifts by the minute, so two runs one
after the other do not compare): the loop ``rmcore.train.run`` builds trains epoch 1 with the
cache (it fills), then runs each epoch-2 global batch twice, as one optimizer step without the
cache and one from it, in alternating order. Printed: seconds per step and real tokens/s.

``--runs off,auto``: two whole 2-epoch ``train_reward_model`` runs; their per-step losses must
agree (the cache changes no arithmetic), their speeds only as far as the CPU's load allowed.

    .venv/bin/python bench/bench_frozen_cache.py --data-dir ../shared/data --steps 6 --interleaved 6,1
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

import yaml

RECIPE = Path(__file__).resolve().parents[1] / "deployments" / "recipes" / "smollm2-cpu.yaml"
FILES = ("helpful_train_sample.jsonl", "harmless_train_sample.jsonl")


def hh_pairs(data_dir: Path, n: int) -> list[dict]:
    """``n`` real hh-rlhf train pairs as message lists, the two sample files alternating."""
    import re

    turn = re.compile(r"\n\n(Human|Assistant): ")

    def messages(text: str) -> list[dict]:
        parts = turn.split(text)
        return [
            {"role": "user" if parts[i] == "Human" else "assistant", "content": parts[i + 1].strip()}
            for i in range(1, len(parts) - 1, 2)
        ]

    per_file = []
    for name in FILES:
        rows = [json.loads(x) for x in (data_dir / "extra" / "hh-rlhf-train-samples" / name).open()]
        pairs = [{"chosen": messages(r["chosen"]), "rejected": messages(r["rejected"])} for r in rows]
        per_file.append([p for p in pairs if p["chosen"] and p["rejected"] and p["chosen"] != p["rejected"]])
    mixed = [p for both in zip(*per_file) for p in both]
    return mixed[:n]


def write_mixture(pairs: list[dict], path: Path) -> Path:
    import pyarrow as pa

    from data_contracts import MIXTURE
    from rmcore.io import write_table

    rows = [
        {
            "pair_id": f"bench-{i}", "source": "hh-rlhf", "prompt": p["chosen"][:-1], "chosen": p["chosen"],
            "rejected": p["rejected"], "chosen_score": None, "rejected_score": None, "split": "train",
            "subset": "bench",
        }
        for i, p in enumerate(pairs)
    ]  # fmt: skip
    write_table(pa.Table.from_pylist(rows, schema=MIXTURE.schema), path, MIXTURE)
    return path


def train_once(model_dir: Path, mixture: Path, out: Path, *, cache: str, trainable: int | None) -> list[dict]:
    """One whole 2-epoch run (``train_reward_model``); per optimizer step: real tokens, wall and
    CPU seconds, loss."""
    from rmcore.train import ListSink, train_reward_model
    from rmcore.train.loop import Loop

    config = recipe_config(model_dir, cache=cache, trainable=trainable)
    steps: list[dict] = []
    plain = Loop.train_step

    def recorded(self, batch):
        real, wall, cpu = self.totals.real, time.perf_counter(), time.process_time()
        plain(self, batch)
        steps.append(
            {
                "real": self.totals.real - real,
                "wall": time.perf_counter() - wall,
                "cpu": time.process_time() - cpu,
            }
        )

    Loop.train_step = recorded
    sink = ListSink()
    try:
        train_reward_model(config, mixture_path=mixture, output_dir=out, sink=sink, resume=False)
    finally:
        Loop.train_step = plain
    for step, loss in zip(steps, sink.series("train/loss"), strict=True):
        step["loss"] = loss
    return steps


def recipe_config(model_dir: Path, *, cache: str, trainable: int | None):
    """The recipe's training config, 2 epochs, metrics every step, no checkpoints, no held-out share."""
    from rmcore.config import from_mapping
    from rmcore.train.config import TrainConfig

    section = yaml.safe_load(RECIPE.read_text())["train"]
    section["model"] = str(model_dir)
    section["optim"] = {**section["optim"], "epochs": 2}
    section["compute"] = {**section.get("compute", {}), "cache_frozen": cache}
    section["logging"] = {"every": 1}
    section["checkpoints"] = {"every": 0}
    section["evaluation"] = {"fraction": 0.0}
    if trainable is not None:
        section["backbone"] = {**section["backbone"], "trainable_layers": trainable}
    return from_mapping(TrainConfig, section)


def training_loop(config, mixture: Path):
    """The loop ``rmcore.train.run`` builds (model, precision, attention, packing, engine, cache)."""
    import math

    import torch

    from rmcore.train import ListSink
    from rmcore.train.backbone import disable_dropout, freeze_lower_layers, load_model
    from rmcore.train.frozen_cache import frozen_cache
    from rmcore.train.loop import Loop
    from rmcore.train.objectives import make_objective
    from rmcore.train.pairs import load_mixture_pairs
    from rmcore.train.setup import make_engine, set_attention, set_packing, training_precision

    torch.manual_seed(config.seed)
    device = torch.device("cpu")
    model = load_model(config)
    freeze_lower_layers(model, config.backbone.trainable_layers)
    bf16 = training_precision(config, model, device).bf16
    set_attention(model, config, device, bf16)
    train_pairs, eval_pairs = load_mixture_pairs(config, mixture, model.tokenizer)
    disable_dropout(model)
    model.train()
    set_packing(model, config)
    per_epoch = math.ceil(len(train_pairs) / config.batching.global_batch)
    total = 3 * per_epoch  # epoch 1, then epoch 2's batches twice (cache off and on)
    engine = make_engine(config, model, total, bf16, device)
    dtype = next(engine.module.parameters()).dtype
    cache = frozen_cache(
        config, model, train_pairs, total=total, per_epoch=per_epoch, dtype=dtype, device=device
    )
    packed = getattr(engine.module, "packed", False) is True
    objective = make_objective(config, train_pairs, model.tokenizer.pad_token_id, device, packed=packed, cache=cache)
    return Loop(config, engine, objective, eval_pairs, ListSink(), device, total, bf16), per_epoch


def timed(loop, batch) -> dict:
    """One optimizer step of ``loop``: real tokens, wall and CPU seconds."""
    real, wall, cpu = loop.totals.real, time.perf_counter(), time.process_time()
    loop.train_step(batch)
    return {
        "real": loop.totals.real - real,
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
    }


def interleaved(model_dir: Path, mixture: Path, trainable: int | None) -> dict:
    """Epoch 1 with the cache (it fills), then each epoch-2 global batch as one step without the
    cache and one from it, in alternating order (a shared CPU's load hits both alike)."""
    from rmcore.train.loop import schedule

    config = recipe_config(model_dir, cache="auto", trainable=trainable)
    loop, per_epoch = training_loop(config, mixture)
    cache = loop.objective.cache
    plan = [batch for _, batch in schedule(config, loop.lengths)]
    epoch1 = [timed(loop, batch) for batch in plan[:per_epoch]]
    off, on = [], []
    for i, batch in enumerate(plan[per_epoch:]):
        for use in (False, True) if i % 2 == 0 else (True, False):
            loop.objective.cache = cache if use else None
            (on if use else off).append(timed(loop, batch))
    return {
        "trainable_layers": config.backbone.trainable_layers, "epoch1_filling": summary(epoch1),
        "epoch2_off": summary(off), "epoch2_cached": summary(on),
    }  # fmt: skip


def summary(steps: list[dict]) -> dict:
    real, wall, cpu = (sum(s[k] for s in steps) for k in ("real", "wall", "cpu"))
    return {
        "steps": len(steps), "s_per_step": wall / len(steps), "real_tok_per_s": real / wall,
        "real_tok_per_cpu_s": real / cpu, "tokens_per_step": real / len(steps),
    }  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps per epoch (16 pairs each)")
    parser.add_argument(
        "--interleaved", default="6", help="trainable_layers values of the interleaved epoch-2 A/B, e.g. 6,1"
    )
    parser.add_argument("--runs", default="", help="cache_frozen values of whole 2-epoch runs, e.g. off,auto")
    parser.add_argument(
        "--trainable-layers", type=int, default=None, help="of the whole runs; default: the recipe's"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    for noisy in ("rmcore.progress", "rmcore.train.sinks", "rmcore.encoding", "rmcore.io"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    import torch

    from rmcore.model_import import resolve_model_ref
    from rmcore.precision import default_cache_dir
    from rmcore.train.cpu_memory import retain_freed_memory

    model_dir = resolve_model_ref("smollm2-135m-instruct", default_cache_dir() / "models")
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    cpu = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "?")
    print(
        f"CPU: {cpu}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        mixture = write_mixture(hh_pairs(args.data_dir, 16 * args.steps), Path(tmp) / "mixture.parquet")
        for n in filter(None, args.interleaved.split(",")):
            with retain_freed_memory():  # as rmcore.train.run trains
                result = interleaved(model_dir, mixture, int(n))
            off, on = result["epoch2_off"], result["epoch2_cached"]
            print("interleaved", json.dumps(result, indent=1))
            print(
                f"trainable_layers {n}, epoch 2: {off['s_per_step']:.2f} -> {on['s_per_step']:.2f} s/step, "
                f"{off['real_tok_per_s']:.0f} -> {on['real_tok_per_s']:.0f} real tok/s "
                f"({on['real_tok_per_s'] / off['real_tok_per_s']:.2f}x); epoch 1 (filling) "
                f"{result['epoch1_filling']['s_per_step']:.2f} s/step",
                flush=True,
            )
        runs = {}
        for mode in filter(None, args.runs.split(",")):
            steps = train_once(
                model_dir, mixture, Path(tmp) / mode, cache=mode, trainable=args.trainable_layers
            )
            half = len(steps) // 2
            runs[mode] = {"epoch1": summary(steps[:half]), "epoch2": summary(steps[half:])}
            runs[mode]["losses"] = [round(s["loss"], 6) for s in steps]
            print(mode, json.dumps(runs[mode]), flush=True)
    if {"off", "auto"} <= runs.keys():
        gap = max(abs(a - b) for a, b in zip(runs["off"]["losses"], runs["auto"]["losses"], strict=True))
        print(f"whole runs: largest per-step loss gap, cache off vs auto: {gap:.2e}")


if __name__ == "__main__":
    main()
