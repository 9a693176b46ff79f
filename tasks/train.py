"""The training task: mixture (path + digest) + train config -> model folder (path + digest).

Cached by content (mixture digest, config hash, rmcore fingerprint). A retry resumes from
the last checkpoint: checkpoints live in ``<key>.partial/`` until training completes, and
the finished folder is published by one rename. A lock keeps two runs of the same key
from writing the same folder.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from prefect.logging import get_run_logger

from rmcore import io, model_import
from rmcore.config import config_hash
from rmcore.precision import default_cache_dir
from rmcore.train.config import TrainConfig
from tasks import integrity
from tasks.caching import Stage, is_complete, is_usable, mark_complete, set_aside


def resolve_model_ref(model: str, cache_root: str | os.PathLike[str] | None = None) -> str:
    """A hub id / local folder as given; an alias or a local .gguf file -> a local model folder
    (``rmcore.model_import``). Imported GGUF models are cached in ``cache_root``, by default the
    user's cache dir (``$XDG_CACHE_HOME/rmflow/models``), so every work dir shares one conversion."""
    return model_import.resolve_model_ref(model, cache_root or default_cache_dir() / "models")


TRAIN = Stage(
    "train",
    key_params=("train", "mixture_digest", "rated_digest", "work"),
    folder=lambda p: "models",
    code=("rmcore.train.run",),
    intact=integrity.intact_except_deep(("checkpoints/",)),  # resume state: checked when resumed from
)


@TRAIN.task(
    task_run_name="train reward model",
    retries=1,
    retry_delay_seconds=5,
    retry_condition_fn=integrity.retry_unless_input_changed,  # a changed mixture stays changed
)
def train_task(
    train: TrainConfig,
    mixture_path: str,
    mixture_digest: str,
    work: str,
    mlflow_run_id: str | None = None,
    rated_path: str | None = None,
    rated_digest: str | None = None,
) -> dict:
    """Train the reward model (``train.model_type``); returns the model folder, its digest and metrics.
    A regression model also reads the rated mixture (``rated_path``, in the key by its digest).

    Keyed by the config's content (every field, defaults included), so two recipes whose train
    sections differ only by spelling out a default share one model. Where it trains (``processes``,
    ``launcher``, ``work_pool``) is not in the key: the same model wherever it trains."""
    inputs = dict(locals())
    logger = get_run_logger()
    key, final = TRAIN.key(inputs), TRAIN.output_dir(inputs)
    config = replace(train, model=resolve_model_ref(train.model))
    with io.exclusive(final.parent / f"{key}.lock"):
        if not is_usable(final, TRAIN.intact):
            if is_complete(final):
                set_aside(final)  # damaged since it was published: retrained, never served
            integrity.check_table(
                mixture_path, mixture_digest, command="rmflow mix RECIPE", contract="mixture"
            )
            if rated_path is not None:
                integrity.check_table(
                    rated_path, rated_digest, command="rmflow run RECIPE", contract="rated_responses"
                )
            partial = final.parent / f"{key}.partial"
            rated = Path(rated_path) if rated_path else None
            result = _train(config, Path(mixture_path), partial, mlflow_run_id, logger, rated)
            summary = {
                "key": key,
                "config_hash": config_hash(config),
                "metrics": result["metrics"],
                "steps": result["steps"],
                "model_subdir": os.path.relpath(result["model_dir"], partial),
                "precision": result.get("precision", {}),
                "model_digest": _model_digest(result["model_dir"]),
                "model_type": config.model_type,
                "regression": result.get("regression") or {},
            }
            io.write_json(summary, partial / "train_summary.json")
            mark_complete(partial)
            os.replace(partial, final)
    summary = io.read_json(final / "train_summary.json")
    model_dir = final / summary["model_subdir"]
    shown = "  ".join(
        f"{k} {v:.4g}" for k, v in sorted(summary["metrics"].items()) if isinstance(v, (int, float))
    )
    logger.info("reward model at %s (%d steps): %s", model_dir, summary["steps"], shown)
    return {
        "model_dir": str(model_dir),
        "digest": key,
        "model_digest": summary["model_digest"],  # still true: the folder was just checked
        "metrics": summary["metrics"],
        "steps": summary["steps"],
        "config_hash": summary["config_hash"],
        "precision": summary.get("precision", {}),
        "model_type": summary.get("model_type", "bt"),
        "regression": summary.get("regression", {}),
    }


def _model_digest(model_dir: str | os.PathLike[str]) -> str:
    """The content digest of a model folder: the evaluation key and the registry's version tag."""
    from tracking.registry import model_dir_digest

    return model_dir_digest(model_dir)


def _train(
    config: TrainConfig,
    mixture: Path,
    out: Path,
    mlflow_run_id: str | None,
    logger,
    rated: Path | None = None,
) -> dict:
    """Train into ``out`` in this process, in N torchrun ranks, or on Ray Train workers; rank 0's
    result as a dict (model_dir, steps, metrics, precision)."""
    from rmcore.train.launch import launch_torchrun, resolve_processes

    processes = resolve_processes(config)
    if config.launcher == "ray":
        from rmcore.train.ray_launch import launch_ray

        return launch_ray(
            config, mixture, out, processes=processes, on_line=logger.info, mlflow_run_id=mlflow_run_id,
            rated_path=rated,
        )  # fmt: skip
    if processes > 1:
        return launch_torchrun(
            config, mixture, out, processes=processes, on_line=logger.info, mlflow_run_id=mlflow_run_id,
            rated_path=rated,
        )  # fmt: skip
    from rmcore.train import LoggingSink, train_reward_model

    sink = LoggingSink()
    if mlflow_run_id:
        from tracking.sinks import MlflowMetricsSink

        sink = MlflowMetricsSink(mlflow_run_id)
    result = train_reward_model(
        config, mixture_path=mixture, output_dir=out, sink=sink, resume=True, rated_path=rated
    )
    if hasattr(sink, "flush"):
        sink.flush()
    return {
        "model_dir": str(result.model_dir),
        "steps": result.steps,
        "metrics": result.metrics,
        "precision": result.precision,
        "regression": result.regression,
    }
