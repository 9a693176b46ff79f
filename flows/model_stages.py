"""Train, evaluate and register composed from tasks; shared by the stage flows and the pipeline."""

from __future__ import annotations

from pathlib import Path

from prefect.artifacts import create_link_artifact, create_markdown_artifact
from prefect.logging import get_run_logger

import tracking
from flows.context import RunContext
from rmcore import io
from rmcore.config import config_hash
from rmcore.evaluate.headline import detail_tables, headline_metrics, regression_tables
from rmcore.precision import Precision
from tasks.evaluate import evaluate_task
from tasks.ranking import leaderboard_task
from tasks.register import register_task
from tasks.train import train_task
from tracking.registry import TAG_MODEL_TYPE

TRUST_TAG = "rmflow.trust_remote_code"
"""Run and model-version tag: "true" when the recipe let the backbone's own Python code run."""
REWARDBENCH_FILE = Path("allenai/reward-bench/data/filtered-00000-of-00001.parquet")


def rewardbench_input(ctx: RunContext) -> tuple[str | None, str | None]:
    """Where RewardBench comes from: the data dir's mirror copy, or the hub (pinned revision)."""
    if ctx.data_dir is None:
        revision = ctx.recipe.eval.hub_revision
        return "allenai/reward-bench", f"hub:{revision}"
    path = ctx.data_dir / REWARDBENCH_FILE
    if not path.exists():
        get_run_logger().warning("no RewardBench file at %s: RewardBench is skipped, no champion gate", path)
        return None, None
    return str(path), io.file_sha256(path)


def trust_remote_code(ctx: RunContext) -> str:
    """ "true"/"false": whether the recipe's train section turns on trust_remote_code."""
    return str(ctx.recipe.train is not None and ctx.recipe.train.backbone.trust_remote_code).lower()


def start_tracking(ctx: RunContext, flow_run_id: str, flow_run_name: str, data: dict | None) -> str:
    """The pipeline run's MLflow run with params and dataset lineage."""
    run_id = tracking.start_pipeline_run(
        flow_run_id,
        run_name=flow_run_name  # named by flows.naming: recipe · data · time, the same as in Prefect
        if " · " in flow_run_name
        else f"{ctx.recipe.name}/{flow_run_name}",
        tags={
            "rmflow.recipe": ctx.recipe.name,
            "rmflow.data": ctx.data_label,
            "rmflow.prefect_flow_run": flow_run_id,
            TRUST_TAG: trust_remote_code(ctx),
            **({TAG_MODEL_TYPE: ctx.recipe.train.model_type} if ctx.recipe.train is not None else {}),
        },
    )
    tracking.log_params(
        run_id,
        {
            "recipe": ctx.recipe.name,
            "recipe_path": ctx.recipe.path,
            "config_hash": config_hash(ctx.recipe),
            "data": ctx.data_label,
            "train": ctx.recipe.train,
            "eval": ctx.recipe.eval,
        },
    )
    if data:
        mixture = data["mixture"]
        tracking.log_dataset_input(
            run_id,
            mixture["path"],
            name=f"mixture-{ctx.recipe.name}",
            digest=mixture["digest"],
            context="training",
            manifest_path=mixture["manifest"],
            rows=mixture["rows"],
        )
        for key, cleaned in data["heldout"].items():
            tracking.log_dataset_input(
                run_id,
                cleaned["output"],
                name=key,
                digest=cleaned["digest"],
                context="evaluation",
                rows=cleaned["kept"],
            )
        tracking.log_artifacts(run_id, [mixture["stats_markdown"], mixture["manifest"]], artifact_path="data")
    publish_run_link(ctx, run_id)
    return run_id


def publish_run_link(ctx: RunContext, run_id: str) -> None:
    """The MLflow run's link, before training starts: its curves fill in while the model trains."""
    links = tracking.ui_links(run_id)
    if links:
        get_run_logger().info(
            "MLflow run: %s (training curves appear there as the model trains)", links["run"]
        )
        create_link_artifact(
            key=f"mlflow-run-{ctx.recipe.name}".lower(),
            link=links["run"],
            link_text="MLflow run",
            description="The pipeline's MLflow run: params, metrics (live while training), lineage, evaluation",
        )


def train_here(ctx: RunContext, mixture: dict, mlflow_run_id: str | None, rated: dict | None = None) -> dict:
    """The train task in this flow run (it launches N ranks itself when the recipe asks); a
    regression model also reads the rated mixture (``rated``: its path and digest)."""
    return ctx.tally.call(
        "train", train_task, ctx.recipe.train, mixture["path"], mixture["digest"], str(ctx.work),
        mlflow_run_id=mlflow_run_id, rated_path=rated["path"] if rated else None,
        rated_digest=rated["digest"] if rated else None,
    )  # fmt: skip


def run_train(ctx: RunContext, mixture: dict, run_id: str | None, rated: dict | None = None) -> dict:
    """Train (or reuse) the model: on ``train.work_pool`` as a train flow run when the recipe names
    one (then the task below reads its output from the cache), else in this process."""
    child = None
    if ctx.recipe.train.work_pool:
        from flows.dispatch import train_on_pool

        child = train_on_pool(ctx, mixture, run_id, rated)
    trained = train_here(ctx, mixture, run_id, rated)
    if child:
        ctx.tally.record(
            "train", "Completed"
        )  # trained by the flow run on the pool, read from the cache here
    if run_id:
        # the final evaluation ends the curves (same keys, at the last step), not a second set
        tracking.log_metrics(run_id, trained["metrics"], step=int(trained.get("steps") or 0))
        if trained.get("precision"):
            tracking.log_params(
                run_id, Precision.from_dict(trained["precision"]).as_params(), prefix="train."
            )
        tracking.log_tables(run_id, regression_tables(trained.get("regression") or {}))  # regression models only
    return trained


def run_evaluate(ctx: RunContext, trained: dict, heldout: dict[str, dict], run_id: str | None) -> dict:
    rb_path, rb_digest = rewardbench_input(ctx)
    evaluated = ctx.tally.call(
        "evaluate",
        evaluate_task,
        ctx.recipe.eval,
        trained["model_dir"],
        trained["model_digest"],  # the folder's content, not the train key: a retrained model is rescored
        rb_path,
        rb_digest,
        {k: v["output"] for k, v in heldout.items()},
        {k: v["digest"] for k, v in heldout.items()},
        str(ctx.work),
        {s.key: s.max_pairs for s in ctx.recipe.data.heldout if s.key in heldout and s.max_pairs},
        ctx.recipe.data.seed,
    )
    rb_dir = Path(evaluated["dir"]) / "rewardbench"
    if "rewardbench" in evaluated:
        rb = evaluated["rewardbench"]
        create_markdown_artifact(
            key=f"rewardbench-{ctx.recipe.name}".lower(),
            markdown=(rb_dir / "rewardbench.md").read_text() + f"\n\nData: {ctx.data_label}\n",
            description=(
                f"RewardBench, overall {rb['overall']:.2f}"
                if rb["overall"] is not None
                else "RewardBench (incomplete)"
            ),
        )
    if run_id:
        tracking.log_metrics(run_id, headline_metrics(evaluated))
        tracking.log_tables(run_id, detail_tables(evaluated))
        scoring = evaluated.get("rewardbench", {}).get("scoring", {})
        if scoring.get("precision"):
            tracking.log_params(
                run_id,
                {"precision": scoring["precision"], "precision_reason": scoring.get("precision_reason", "")},
                prefix="eval.",
            )
        tracking.log_artifacts(run_id, [Path(evaluated["dir"])], artifact_path="evaluation")
    return evaluated


def run_register(ctx: RunContext, trained: dict, evaluated: dict, mixture: dict | None, run_id: str) -> dict:
    overall = evaluated.get("rewardbench", {}).get("overall")
    tags = {
        "rmflow.recipe": ctx.recipe.name,
        "rmflow.config_hash": config_hash(ctx.recipe),
        "rmflow.train_config_hash": trained["config_hash"],
        "rmflow.git_revision": tracking.git_revision() or "unknown",
        "rmflow.data": ctx.data_label,
        TRUST_TAG: trust_remote_code(ctx),
        TAG_MODEL_TYPE: ctx.recipe.train.model_type,
    }
    if mixture:
        tags["rmflow.mixture_digest"] = mixture["digest"]
    registered = ctx.tally.call(
        "register",
        register_task,
        trained["model_dir"],
        model_digest=trained["model_digest"],
        name=ctx.recipe.register.model_name,
        run_id=run_id,
        tags=tags,
        rewardbench_overall=overall,
        promote=ctx.recipe.register.promote and overall is not None,
        model_type=ctx.recipe.train.model_type,
    )
    reused = registered.get("reused_run")
    if not registered["created"] and reused and reused != run_id:
        # This run reused a model registered before: its own record says so and links what it
        # reused; the earlier version and run are left as they were.
        tracking.set_tags(
            run_id,
            {
                "rmflow.cache_hit": "true",
                "rmflow.reused_version": f"{registered['name']} v{registered['version']}",
                "rmflow.reused_run": reused,
            },
        )
    links = tracking.ui_links(run_id, (registered["name"], registered["version"]))
    if links:
        create_link_artifact(
            key=f"mlflow-model-{ctx.recipe.name}".lower(),
            link=links["model_version"],
            link_text=f"{registered['name']} v{registered['version']}",
            description="The registered model version (aliases candidate/champion, gate tags)",
        )
        registered["links"] = links
    return registered


def run_leaderboards(ctx: RunContext, data: dict, run_id: str | None) -> list[dict]:
    """Rank the models behind the data: UltraFeedback completions (a mixture source) and RewardBench."""
    inputs: list[tuple[str, str, str]] = []
    for download in data.get("downloads", []):
        if download["source"] == "ultrafeedback":
            raw = str(Path(download["raw_dir"]) / "raw.parquet")
            inputs.append((f"UltraFeedback completion models ({download['split']})", raw, download["digest"]))
    rb_path, rb_digest = rewardbench_input(ctx)
    if rb_path and rb_digest and Path(rb_path).exists():
        inputs.append(("RewardBench chosen vs rejected models", rb_path, rb_digest))
    boards = []
    for name, path, digest in inputs:
        board = ctx.tally.call(f"leaderboard {name}", leaderboard_task, name, [path], [digest], str(ctx.work))
        slug = "".join(c if c.isalnum() else "-" for c in name.lower()).strip("-")
        create_markdown_artifact(
            key=f"leaderboard-{slug}"[:100],
            markdown=Path(board["markdown"]).read_text() + f"\n\nData: {ctx.data_label}\n",
            description=f"Bradley-Terry leaderboard: {name}",
        )
        if run_id:
            tracking.log_artifacts(run_id, [Path(board["dir"])], artifact_path=f"leaderboards/{slug}")
        boards.append(board)
    return boards
