"""The GENERATED mirror: every source, both splits, readable by the adapters, marked, deterministic."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmcore.data.sample_data import is_generated, write_sample_mirror
from rmcore.data.sources import SOURCE_NAMES, CleanOptions, clean_source, get_adapter
from rmcore.io import file_sha256


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_mirror(tmp_path_factory.mktemp("gen"), rows_per_source=40, seed=3)


def test_marked_as_generated(sample: Path, tmp_path: Path) -> None:
    assert is_generated(sample) and not is_generated(tmp_path)
    assert "GENERATED" in (sample / "GENERATED.md").read_text()


@pytest.mark.parametrize("split", ["train", "test"])
def test_every_source_cleans_without_quarantine(sample: Path, split: str) -> None:
    for name in SOURCE_NAMES:
        pairing = "all-pairs" if "pairing" in get_adapter(name).options else None
        result = clean_source(name, split, CleanOptions(pairing=pairing), sample)
        assert result.quarantined == 0, name
        assert result.kept > 0, name
        rows = result.raw_rows if result.raw_rows is not None else result.rows_in
        assert rows == (40 if split == "train" else 10), name


def test_chosen_is_on_topic_not_longer(sample: Path) -> None:
    pairs = clean_source("hh-rlhf/helpful-base", "train", CleanOptions(), sample).pairs.to_pylist()
    longer = sum(len(p["chosen"][-1]["content"]) > len(p["rejected"][-1]["content"]) for p in pairs)
    assert 0.2 < longer / len(pairs) < 0.8  # length alone does not give the answer away
    from rmcore.data.sample_data import TOPICS

    def on_topic(p: dict) -> int:
        topic = next(t for t in TOPICS if t in p["prompt"][-1]["content"])
        return sum(step in p["chosen"][-1]["content"] for step in TOPICS[topic]) - sum(
            step in p["rejected"][-1]["content"] for step in TOPICS[topic]
        )

    assert all(on_topic(p) >= 2 for p in pairs)


def test_deterministic_for_a_seed(sample: Path, tmp_path: Path) -> None:
    again = write_sample_mirror(tmp_path, rows_per_source=40, seed=3)
    files = sorted(p.relative_to(sample) for p in sample.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(again) for p in again.rglob("*") if p.is_file())
    for rel in files:
        if rel.suffix != ".gz":  # gzip headers carry a timestamp; their rows are compared by cleaning above
            assert file_sha256(sample / rel) == file_sha256(again / rel), rel
