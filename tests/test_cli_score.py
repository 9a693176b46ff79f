"""`rmflow score`: one response, JSONL on stdin, a model folder or a registry URI."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from mlflow_helpers import ROWS, direct_rewards, tiny_reward_dir

from rmflow.cli import main

# conftest's per-test SQLite store, but copied from a migrated template DB (saves 10-15 s a test)


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return tiny_reward_dir(tmp_path_factory.mktemp("score") / "model")


@pytest.fixture(scope="module")
def expected(folder) -> list[float]:
    return direct_rewards(folder, ROWS)


def _stdin(monkeypatch, rows: list[dict] | str) -> None:
    text = rows if isinstance(rows, str) else "".join(json.dumps(r) + "\n" for r in rows)
    monkeypatch.setattr("sys.stdin", io.StringIO(text))


def test_one_response_prints_its_reward(folder, expected, capsys):
    row = ROWS[0]
    assert main(["score", str(folder), "--prompt", row["prompt"], "--response", row["response"]]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 1
    assert float(printed[0]) == pytest.approx(expected[0], abs=1e-6)


def test_jsonl_on_stdin_prints_one_reward_per_line_and_json(folder, expected, capsys, monkeypatch):
    _stdin(monkeypatch, ROWS)
    assert main(["score", str(folder)]) == 0
    lines = capsys.readouterr().out.splitlines()
    np.testing.assert_allclose([float(x) for x in lines], expected, rtol=0, atol=1e-6)

    _stdin(monkeypatch, ROWS)
    assert main(["score", str(folder), "--json", "--batch-size", "1"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["count"], out["model"]) == (3, str(folder))
    np.testing.assert_allclose(out["rewards"], expected, rtol=0, atol=1e-6)


def test_registry_uri_scores_like_the_folder(folder, expected, mlflow_uri, capsys, monkeypatch):
    import tracking
    from tracking import registry

    run_id = tracking.start_pipeline_run("cli", config=tracking.TrackingConfig(tracking_uri=mlflow_uri))
    version = registry.register_reward_model(
        folder, name="rm", run_id=run_id, tags={}, rewardbench_overall=50.0
    ).version
    registry.promote_if_better("rm", version, 50.0)
    _stdin(monkeypatch, ROWS)
    assert main(["score", "models:/rm@champion", "--tracking-uri", mlflow_uri, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    np.testing.assert_allclose(out["rewards"], expected, rtol=0, atol=1e-6)


def test_failures_exit_1_with_one_line_reason(folder, tmp_path, capsys, monkeypatch):
    assert main(["score", str(tmp_path / "nope"), "--prompt", "a", "--response", "b"]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == (
        f"rmflow score: error: {tmp_path / 'nope'}: not a model folder (no config.json); give a saved model "
        "folder or a registry URI such as models:/NAME@champion"
    )

    assert main(["score", str(folder), "--prompt", "a"]) == 1
    assert "give both --prompt and --response" in capsys.readouterr().err

    _stdin(monkeypatch, '{"prompt": "a", "response": "b"}\n{"prompt": "a"\n')
    assert main(["score", str(folder)]) == 1
    assert "rmflow score: error: stdin line 2: not valid JSON" in capsys.readouterr().err

    _stdin(monkeypatch, '{"prompt": "a", "response": "b"}\n{"text": "a"}\n')
    assert main(["score", str(folder)]) == 1
    assert "row 1: expected keys 'prompt' and 'response', or 'messages'" in capsys.readouterr().err
