"""The data stages as Prefect flows against a real (ephemeral) Prefect API: caching by content."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest
import yaml
from flow_helpers import ran, state_counts

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _mirror(shared_data: Path, tmp: Path) -> Path:
    """A small private mirror: HelpSteer and PKU samples + 200 rows of hh-rlhf helpful-base test."""
    mirror = tmp / "mirror"
    for rel in ("nvidia/HelpSteer/train.jsonl", "PKU-Alignment/PKU-SafeRLHF/train.jsonl"):
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(shared_data / rel, mirror / rel)
    rel = "Anthropic/hh-rlhf/helpful-base/test.jsonl.gz"
    (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(shared_data / rel, "rt") as src, gzip.open(mirror / rel, "wt") as dst:
        for i, line in enumerate(src):
            if i == 200:
                break
            dst.write(line)
    return mirror


def _recipe(tmp: Path) -> Path:
    recipe = {
        "name": "flowtest",
        "data": {
            "seed": 3,
            "validation_fraction": 0.1,
            "sources": [
                {"source": "helpsteer", "pairing": "all-pairs"},
                {"source": "pku-saferlhf", "max_pairs": 100},
                {"source": "orca"},
            ],
            "heldout": [{"source": "hh-rlhf/helpful-base", "split": "test"}],
        },
    }
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_mixture_flow_caches_by_content_and_reruns_only_the_changed_source(
    shared_data: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    import logging

    from flows.mixture import mixture_flow

    mirror, recipe, work = _mirror(shared_data, tmp_path), _recipe(tmp_path), tmp_path / "work"
    args = {"recipe": str(recipe), "data_dir": str(mirror), "work_dir": str(work)}

    first = mixture_flow(**args, return_state=True)
    result = first.result()
    mixture = result["mixture"]
    assert mixture["missing"] == ["orca/train"]
    assert set(mixture["counts"]) == {"helpsteer/train/all-pairs", "pku-saferlhf/train/max-100"}
    assert mixture["counts"]["pku-saferlhf/train/max-100"] == 100
    assert "hh-rlhf/helpful-base/test" in result["heldout"]
    # 3 downloads (helpsteer, pku, hh test), 3 cleans, 1 mixture: all did work
    assert state_counts(first) == {"Completed": 7}
    # The summaries on disk name the published files, not the temp folders they were built in.
    summaries = sorted(work.glob("clean/*/*/*/summary.json"))
    assert len(summaries) == 3
    for path in summaries:
        summary = json.loads(path.read_text())
        assert (summary["output"], summary["quarantine"]) == (
            str(path.parent / "pairs.parquet"),
            str(path.parent / "quarantine.parquet"),
        )

    caplog.set_level(logging.INFO)
    second = mixture_flow(**args, return_state=True)
    assert state_counts(second) == {"Cached": 7}
    # every cache hit says what it reuses: the stage, its output folder and key
    hits = [r.getMessage() for r in caplog.records if ": cached, reusing " in r.getMessage()]
    assert len(hits) == 7 and any(h.startswith(f"mixture: cached, reusing {work}") for h in hits), hits
    assert second.result()["mixture"]["digest"] == mixture["digest"]

    # Change one input file: every PKU row's first response text.
    pku = mirror / "PKU-Alignment/PKU-SafeRLHF/train.jsonl"
    pku.write_text(pku.read_text().replace('"response_0": "', '"response_0": "Edited. '))
    third = mixture_flow(**args, return_state=True)
    assert ran(third) == {"download pku-saferlhf [train]", "clean pku-saferlhf/train/max-100", "mixture flowtest"}
    assert state_counts(third)["Cached"] == 4
    assert third.result()["mixture"]["digest"] != mixture["digest"]


def test_deleted_output_is_rebuilt_not_served_stale(shared_data: Path, tmp_path: Path):
    from flows.mixture import mixture_flow

    mirror, recipe, work = _mirror(shared_data, tmp_path), _recipe(tmp_path), tmp_path / "work"
    args = {"recipe": str(recipe), "data_dir": str(mirror), "work_dir": str(work)}
    first = mixture_flow(**args)
    shutil.rmtree(Path(first["mixture"]["path"]).parent)
    again = mixture_flow(**args, return_state=True)
    assert ran(again) == {"mixture flowtest"}
    assert Path(again.result()["mixture"]["path"]).exists()
    assert again.result()["mixture"]["digest"] == first["mixture"]["digest"]


def test_rmflow_mix_json_reports_counts_digest_and_missing(shared_data: Path, tmp_path: Path, capsys):
    from rmflow.cli import main

    mirror, recipe = _mirror(shared_data, tmp_path), _recipe(tmp_path)
    code = main(["mix", str(recipe), "--data-dir", str(mirror), "--out", str(tmp_path / "w"), "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["counts"]["pku-saferlhf/train/max-100"] == 100
    assert out["total"] == sum(out["counts"].values())
    assert out["missing"] == ["orca/train"] and out["data"].startswith("real data from the local mirror")
    assert Path(out["output"]).exists() and len(out["digest"]) == 64
    stats = (Path(out["output"]).parent / "stats.md").read_text()
    assert "| helpsteer/train/all-pairs | 500 | 706 (candidate) | 460 |" in stats


def test_rmflow_mix_refuses_a_bad_recipe_before_any_work(tmp_path: Path, capsys):
    from rmflow.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"name": "bad", "data": {"sources": [{"source": "shp", "per_promt": 1}]}}))
    assert main(["mix", str(bad), "--out", str(tmp_path / "w")]) == 1
    err = capsys.readouterr().err
    assert "unknown key(s) 'per_promt'" in err and "valid keys" in err
    assert not (tmp_path / "w").exists()
