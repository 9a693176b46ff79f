"""Run names people can read: recipe, data and start time, the same in Prefect and MLflow.

Prefect calls ``run_name`` (a flow's ``flow_run_name``) when a flow run starts; it reads the
run's parameters, so ``rmflow-pipeline`` started on the demo recipe with the real mirror is
named ``demo · mirror data · 2026-12-07 15:50 UTC`` instead of ``rho2-limlight``. The pipeline
gives its MLflow run the same name.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def recipe_label(recipe: Any) -> str:
    """A recipe parameter (a shipped name or a path) as its name: ``deployments/recipes/v1.yaml`` -> ``v1``."""
    text = str(recipe or "demo").strip()
    return Path(text).stem if text.endswith((".yaml", ".yml")) else Path(text).name or text


def data_label(data_dir: Any) -> str:
    """What a run reads, in two words: the hub, a mirror folder (by its name), or the generated sample."""
    text = str(data_dir or "").strip()
    if not text:
        return "generated sample"
    if text == "hub":
        return "hub"
    name = Path(text).name or text
    return name if name.endswith("mirror") else f"{name} mirror"


def name_for(parameters: dict[str, Any], now: datetime | None = None) -> str:
    """``<recipe> · <data> · <UTC start minute>`` from a flow run's parameters."""
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%d %H:%M UTC")
    return f"{recipe_label(parameters.get('recipe'))} · {data_label(parameters.get('data_dir'))} · {when}"


def run_name() -> str:
    """``flow_run_name`` of every rmflow flow (Prefect calls it with no arguments at run start)."""
    from prefect.runtime import flow_run

    return name_for(dict(flow_run.parameters or {}))
