"""The end-to-end flow: download -> clean + pair -> mixture -> train -> evaluate -> register."""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger
from prefect.runtime import flow_run

import tracking
from flows.context import resolve
from flows.data_stages import run_data_stages
from flows.model_stages import run_evaluate, run_leaderboards, run_register, run_train, start_tracking
from flows.naming import run_name
from rmcore.recipe import require_train


@flow(
    name="rmflow-pipeline",
    flow_run_name=run_name,
    log_prints=True,
    persist_result=False,
    result_serializer="json",
)
def pipeline_flow(
    recipe: str = "demo",
    data_dir: str = "",
    work_dir: str = "",
) -> dict:
    """Turn a recipe's preference data into a registered, RewardBench-scored reward model.

    Args:
        recipe: A shipped recipe by name (demo, v1-v4, smollm2-cpu, helpsteer-bt|listwise|regression) or the path of a
            recipe YAML (deployments/recipes/*.yaml shows the form).
        data_dir: Where the preference data comes from: a hub-mirror folder (e.g. ../shared/data),
            or "hub" for the Hugging Face hub at pinned revisions. Empty: $RMFLOW_DATA_DIR, else
            the built-in GENERATED sample.
        work_dir: Where stage outputs go (content-addressed, so reruns reuse them). Empty:
            $RMFLOW_WORK_DIR, else ./runs.
    """
    ctx = resolve(recipe, data_dir, work_dir)
    require_train(ctx.recipe)  # runs started from the UI are checked too, before any work
    data = run_data_stages(ctx)
    run_id = start_tracking(ctx, str(flow_run.get_id() or "local"), str(flow_run.get_name() or "local"), data)
    failed = True
    try:
        trained = run_train(ctx, data["mixture"], run_id, data.get("rated"))
        evaluated = run_evaluate(ctx, trained, data["heldout"], run_id)
        registered = run_register(ctx, trained, evaluated, data["mixture"], run_id)
        boards = run_leaderboards(ctx, data, run_id)
        failed = False
    finally:
        tracking.end_pipeline_run(run_id, failed=failed)
    stages = ctx.tally.line(mixture_digest=data["mixture"]["digest"])
    get_run_logger().info("pipeline %s: %s", ctx.recipe.name, stages)
    summary = {
        "recipe": ctx.recipe.name,
        "model_type": ctx.recipe.train.model_type,
        "stages": {"line": stages, "recomputed": ctx.tally.recomputed, "cached": ctx.tally.cached},
        "data": ctx.data_label,
        "missing": data["missing"],
        "mixture": {k: data["mixture"][k] for k in ("path", "digest", "rows", "counts")},
        "model_dir": trained["model_dir"],
        "train_metrics": trained["metrics"],
        "rewardbench": {k: evaluated["rewardbench"][k] for k in ("overall", "categories", "sampled", "ties")}
        if "rewardbench" in evaluated
        else None,
        "heldout": {
            k: {m: v.get(m) for m in ("accuracy", "ci95", "length_rule_accuracy", "n")}
            for k, v in evaluated.get("heldout", {}).items()
        },
        "evaluation_dir": evaluated["dir"],
        "mlflow_run_id": run_id,
        "tracking_uri": tracking.resolve_tracking_uri(),
        "registered": registered,
        "leaderboards": [b["markdown"] for b in boards],
    }
    create_markdown_artifact(
        key=f"pipeline-{ctx.recipe.name}".lower(),
        markdown=summary_markdown(summary),
        description=f"Pipeline summary: recipe {ctx.recipe.name}, {ctx.data_label}",
    )
    return summary


def summary_markdown(s: dict) -> str:
    lines = [f"## rmflow pipeline: recipe {s['recipe']}", "", f"**Data:** {s['data']}", ""]
    if s["missing"]:
        lines += [f"**Left out (not in the data):** {', '.join(s['missing'])}", ""]
    lines += [f"- mixture: {s['mixture']['rows']:,} pairs, digest `{s['mixture']['digest'][:16]}`"]
    if s["rewardbench"]:
        rb = s["rewardbench"]
        sampled = " (stratified sample)" if rb.get("sampled") else ""
        cats = ", ".join(f"{k} {v:.1f}" if v is not None else f"{k} n/a" for k, v in rb["categories"].items())
        overall = "n/a (incomplete)" if rb["overall"] is None else f"{rb['overall']:.2f}"
        lines += [f"- RewardBench overall{sampled}: **{overall}** ({cats})"]
    for source, h in s["heldout"].items():
        lines += [
            f"- held-out {source}: accuracy {_num(h['accuracy'])}"
            + (f" [{_num(h['ci95'][0])}, {_num(h['ci95'][1])}]" if h.get("ci95") else "")
            + f", length-only rule {_num(h['length_rule_accuracy'])}"
        ]
    reg = s["registered"]
    lines += [
        (f"- registered `{reg['model_uri']}` ({s.get('model_type', 'bt')}); "
        f"{reg.get('champion_alias', 'champion')}: v{reg['champion']}"),
        f"- MLflow run [{s['mlflow_run_id']}]({reg['links']['run']})"
        if reg.get("links")
        else f"- MLflow run `{s['mlflow_run_id']}`",
    ]
    if s.get("stages"):
        lines += ["", f"**Stages:** {s['stages']['line']}"]
    return "\n".join(lines) + "\n"


def _num(value: object) -> str:
    """A number for people: three decimals (n/a when missing)."""
    return f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"
