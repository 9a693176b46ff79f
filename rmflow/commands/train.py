"""``rmflow train CONFIG``: train a reward model (the training task's entry point)."""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a reward model from a mixture Parquet (deployments/train/*.yaml)",
        description=(
            "Train a reward model (Bradley-Terry, listwise or regression: model_type) as CONFIG says (a YAML of rmcore.train.config.TrainConfig "
            "keys; it may also name `mixture:`). Resumes from the newest checkpoint in --out unless "
            "--no-resume. Prints the final metrics; the model is written to OUT/model."
        ),
    )
    p.add_argument("config", help="training YAML, e.g. deployments/train/demo.yaml")
    p.add_argument("--mixture", help="mixture Parquet (MIXTURE contract); overrides `mixture:` in CONFIG")
    p.add_argument(
        "--rated",
        help="rated-responses Parquet (RATED_RESPONSES contract) a model_type: regression trains on",
    )
    p.add_argument("--out", help="output folder (default: runs/train/<config name>-<config hash>)")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps (overrides CONFIG)")
    p.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    p.add_argument("--json", action="store_true", help="one JSON object on stdout")
    p.add_argument(
        "--result-json", metavar="PATH", help="rank 0 also writes the result object to PATH (atomically)"
    )
    p.add_argument("--mlflow-run-id", help="rank 0 logs the training curves to this MLflow run")
    p.set_defaults(func=run, render=render)


def run(args: argparse.Namespace) -> dict:
    from rmcore.config import (
        ConfigError,
        allowed_roots,
        config_hash,
        confined_path,
        env_roots,
        from_mapping,
        load_yaml,
    )  # fmt: skip
    from rmcore.recipe import check_train_paths
    from rmcore.train import LoggingSink, train_reward_model
    from rmcore.train.config import TrainConfig
    from rmcore.train.distributed import is_main

    data = load_yaml(args.config)
    # Files CONFIG names for reading settings or data stay inside these folders; a local model
    # folder may be anywhere (a checkpoint the user trained), as may --mixture/--out.
    roots = allowed_roots(Path(args.config).resolve().parent, *env_roots(os.environ))
    if isinstance(data.get("deepspeed"), str):  # loaded where it was checked, from any cwd
        data["deepspeed"] = check_train_paths({"deepspeed": data["deepspeed"]}, str(args.config), roots)[
            "deepspeed"
        ]
    if not args.mixture and isinstance(data.get("mixture"), str):
        confined_path(data["mixture"], where=f"{args.config}.mixture", base=Path.cwd(), roots=roots)
    mixture = args.mixture or data.pop("mixture", None)
    data.pop("mixture", None)
    if args.max_steps is not None:
        data["optim"] = {**(data.get("optim") or {}), "max_steps": args.max_steps}
    if not mixture:
        raise ConfigError(
            f"{args.config}: no mixture given; pass --mixture PATH or set `mixture:` in the config"
        )
    if not Path(mixture).exists():
        raise FileNotFoundError(f"mixture {mixture} does not exist; build it with `rmflow mix RECIPE`")
    if "model" in data:
        # the task's alias/GGUF resolution, without the task layer: each launched rank runs this
        # command, and a GPU node may have torch + transformers but no Prefect
        from rmcore.model_import import resolve_model_ref
        from rmcore.precision import default_cache_dir

        data["model"] = resolve_model_ref(data["model"], default_cache_dir() / "models")
    config = from_mapping(TrainConfig, data, where=args.config)
    out = Path(args.out or Path("runs") / "train" / f"{Path(args.config).stem}-{config_hash(config)}")
    sink = LoggingSink()
    if args.mlflow_run_id:
        from tracking.sinks import MlflowMetricsSink

        sink = MlflowMetricsSink(args.mlflow_run_id)
    with contextlib.redirect_stdout(sys.stderr):  # library chatter must not break --json
        result = train_reward_model(
            config,
            mixture_path=Path(mixture),
            output_dir=out,
            sink=sink,
            resume=not args.no_resume,
            rated_path=Path(args.rated) if args.rated else None,
        )
    if hasattr(sink, "flush"):
        sink.flush()
    if not is_main():
        return None  # under a launcher (torchrun, deepspeed, accelerate) rank 0 prints the result
    summary = {
        "model_dir": str(result.model_dir),
        "steps": result.steps,
        "tokens_per_s": round(result.tokens_per_s, 1),
        "padding_efficiency": round(result.padding_efficiency, 4),
        "data": result.data,
        "metrics": result.metrics,
        "checkpoints": str(result.checkpoints_dir),
        "precision": result.precision,
        "model_type": config.model_type,
        "regression": result.regression,
    }
    if args.result_json:
        from rmcore import io

        io.write_json(summary, args.result_json)
    return summary


def render(result: dict) -> None:
    out = sys.stdout
    m = result["metrics"]
    out.write(f"model: {result['model_dir']}  ({result['steps']} steps)\n")
    out.write(f"data: {result['data']}\n")
    out.write(
        f"train: loss {m.get('train/loss', float('nan')):.4f}  accuracy {m.get('train/accuracy', float('nan')):.3f}  "
        f"{result['tokens_per_s']:.0f} real tokens/s  padding efficiency {result['padding_efficiency']:.3f}\n"
    )
    if "eval/accuracy" in m:
        out.write(
            f"held-out ({int(m['eval/pairs'])} pairs): accuracy {m['eval/accuracy']:.3f} "
            f"[{m['eval/accuracy_low']:.3f}, {m['eval/accuracy_high']:.3f}]  loss {m['eval/loss']:.4f}  "
            f"length-only rule {m['eval/length_baseline']:.3f}\n"
        )
