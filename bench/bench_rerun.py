"""No-op rerun of the whole pipeline against its first run (issue 5; SPEC section 10).

Runs the end-to-end flow twice on the same recipe, data and work folder, same process,
real Prefect API (ephemeral) and real SQLite MLflow store; prints both wall times, the
ratio (target: rerun < 5% of the first run) and which tasks did work in the rerun.

    .venv/bin/python bench/bench_rerun.py            # demo recipe, MiniLM, generated data
    .venv/bin/python bench/bench_rerun.py --tiny     # a 2-layer model: seconds, not minutes
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", default=str(ROOT / "deployments/recipes/demo.yaml"))
    parser.add_argument("--data-dir", default=None, help="hub mirror (default: the generated sample)")
    parser.add_argument("--tiny", action="store_true", help="swap in a tiny 2-layer model")
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="rmflow-bench-rerun-"))
    os.environ.update(
        PREFECT_HOME=str(tmp / "prefect"),
        PREFECT_LOCAL_STORAGE_PATH=str(tmp / "prefect" / "storage"),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="180",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}",
        MLFLOW_DISABLE_TELEMETRY="true",
        HF_HUB_OFFLINE="1",
        RMFLOW_HOME=str(tmp / "home"),
    )
    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import yaml
    from flow_helpers import task_states
    from prefect.testing.utilities import prefect_test_harness

    recipe_path = Path(args.recipe)
    if args.tiny:
        from tiny import build_tiny_model_dir

        recipe = yaml.safe_load(recipe_path.read_text())
        recipe["train"].update(model=str(build_tiny_model_dir(tmp / "tiny")), max_length=128, bf16=False)
        recipe_path = tmp / "recipe.yaml"
        recipe_path.write_text(yaml.safe_dump(recipe))

    from flows.pipeline import pipeline_flow

    kwargs = {"recipe": str(recipe_path), "data_dir": args.data_dir, "work_dir": str(tmp / "work")}
    with prefect_test_harness(server_startup_timeout=180):
        t0 = time.perf_counter()
        first = pipeline_flow(**kwargs, return_state=True)
        t_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        second = pipeline_flow(**kwargs, return_state=True)
        t_rerun = time.perf_counter() - t0
        states = task_states(second)
    assert first.is_completed() and second.is_completed()
    worked = sorted(name for name, state in states.items() if state != "Cached")
    print(f"recipe {recipe_path.name}{' (tiny model)' if args.tiny else ''}; data: {first.result()['data']}")
    print(f"first run   {t_first:8.1f} s")
    print(f"no-op rerun {t_rerun:8.1f} s   ({len(states) - len(worked)} of {len(states)} tasks from cache)")
    print(f"ratio rerun/first: {t_rerun / t_first:.3f} (target < 0.05)")
    print(f"tasks that did work in the rerun: {', '.join(worked) or 'none'}")


if __name__ == "__main__":
    main()
