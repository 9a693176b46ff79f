"""Leaderboard task: classic Bradley-Terry strengths of the models behind the preference data."""

from __future__ import annotations

from pathlib import Path

from rmcore import io
from tasks.caching import Stage, build_once

LEADERBOARD = Stage(
    "leaderboard", key_params=("name", "digests", "work"), folder=lambda p: "leaderboards", code=("rmcore.ranking",)
)


@LEADERBOARD.task(task_run_name="leaderboard {name}")
def leaderboard_task(name: str, files: list[str], digests: list[str], work: str) -> dict:
    """Fit Bradley-Terry strengths to the model-vs-model outcomes in ``files``."""
    out = LEADERBOARD.output_dir(locals())
    from rmcore.ranking import leaderboard_from_files


    def build(tmp: Path) -> None:
        table, markdown, summary = leaderboard_from_files(files, top=25, title=f"Leaderboard: {name}")
        io.write_table(table, tmp / "leaderboard.parquet", "ranking_leaderboard")
        io.write_text(markdown, tmp / "leaderboard.md")
        io.write_json(summary, tmp / "leaderboard.json")

    build_once(out, build)
    return {"name": name, "dir": str(out), "markdown": str(out / "leaderboard.md")}
