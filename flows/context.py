"""What every flow resolves first: the recipe, where the data comes from, where outputs go."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

from flows.tally import StageTally
from rmcore import io
from rmcore.config import env_roots
from rmcore.recipe import Recipe, load_recipe
from tasks.caching import work_dir

log = logging.getLogger("rmflow")

HUB = "hub"


@dataclass(frozen=True)
class RunContext:
    recipe: Recipe
    data_dir: Path | None
    """A hub-mirror folder, or None for the Hugging Face hub itself."""
    data_label: str
    """Said in every report: which data this run used."""
    work: Path
    tally: StageTally = field(default_factory=StageTally, compare=False)
    """Which stages of this run recomputed and which came from the cache."""


def resolve_data_dir(data_dir: str | None, work: Path) -> tuple[Path | None, str]:
    """``--data-dir`` / $RMFLOW_DATA_DIR (a mirror, or ``hub``), else the built-in generated sample."""
    chosen = data_dir or os.environ.get("RMFLOW_DATA_DIR")
    if chosen == HUB:
        return None, "the Hugging Face hub (pinned revisions)"
    if chosen:
        path = Path(chosen).expanduser().resolve()
        if not path.is_dir():
            raise FileNotFoundError(f"data dir {path} does not exist (give a hub-mirror folder, or 'hub')")
        generated = (path / "GENERATED.md").exists()
        kind = "GENERATED sample data" if generated else "real data from the local mirror"
        return path, f"{kind} at {path}"
    from rmcore.data.sample_data import write_sample_mirror
    from rmcore.data.sample_rewardbench import RELATIVE_PATH, write_rewardbench_sample

    sample = work / "generated-sample"
    if not (sample / RELATIVE_PATH).exists():
        # Written in a temp folder, published by one rename: a run started at the same time
        # never reads a half-written sample (it keeps the first published copy, all equal).
        with io.atomic_dir(sample) as tmp:
            write_sample_mirror(tmp, rows_per_source=1000)
            write_rewardbench_sample(tmp)
        if not (sample / RELATIVE_PATH).exists():
            raise RuntimeError(
                f"{sample}: an incomplete generated sample from an older run; delete it and rerun"
            )
    return sample, f"GENERATED sample data (built-in generator, no real rows) at {sample}"


LIBRARY_LOGGERS = ("rmcore", "tasks", "flows")
"""The loggers Prefect ships to the flow-run logs (PREFECT_LOGGING_EXTRA_LOGGERS, set by the
stack and the CLI): training progress, held-out scores and cache hits are INFO lines there."""


def show_library_logs() -> None:
    """Let the library loggers' INFO lines through in a flow run a worker started: its root
    logger is at WARNING (Prefect's logging.yml), which would drop every progress line before
    Prefect's API handler sees it. The CLI sets INFO itself; a level set lower is kept."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)


def resolve(recipe: str, data_dir: str | None = None, work_dir_: str | None = None) -> RunContext:
    show_library_logs()
    loaded = load_recipe(recipe, extra_roots=env_roots(os.environ))  # the environment is read here, at the edge
    work = work_dir(work_dir_)
    data, label = resolve_data_dir(data_dir, work)
    log.info("recipe %s (%s); data: %s; outputs under %s", loaded.name, loaded.path, label, work)
    return RunContext(loaded, data, label, work)
