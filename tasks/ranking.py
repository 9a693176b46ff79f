"""Leaderboard task: classic Bradley-Terry strengths of the models behind the preference data."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import task

from rmcore import io
from tasks.caching import StageCache, build_once, stage_key


def _board_dir(key: str, p: dict[str, Any]) -> Path:
    return Path(p["work"]) / "leaderboards" / key


@task(
    name="leaderboard",
    task_run_name="leaderboard {name}",
    cache_policy=StageCache(
        stage="leaderboard", key_params=("name", "digests", "work"), output_of=_board_dir
    ),
    persist_result=True,
    result_serializer="json",
)
def leaderboard_task(name: str, files: list[str], digests: list[str], work: str) -> dict:
    """Fit Bradley-Terry strengths to the model-vs-model outcomes in ``files``."""
    from rmcore.ranking import leaderboard_from_files

    params = {"name": name, "digests": digests, "work": work}
    out = _board_dir(stage_key("leaderboard", **params), params)

    def build(tmp: Path) -> None:
        table, markdown, summary = leaderboard_from_files(files, top=25, title=f"Leaderboard: {name}")
        io.write_table(table, tmp / "leaderboard.parquet", "ranking_leaderboard")
        io.write_text(markdown, tmp / "leaderboard.md")
        io.write_json(summary, tmp / "leaderboard.json")

    build_once(out, build)
    return {"name": name, "dir": str(out), "markdown": str(out / "leaderboard.md")}
