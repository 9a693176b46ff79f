"""``rmflow clean`` on the real mirror: counts checked against the rows themselves, in-process."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import pytest
from fault_helpers import child_env, is_temp_name, run_child

from data_contracts.schemas import PAIRS, QUARANTINE
from rmcore import io
from rmcore.data.sample_data import write_sample_mirror
from rmcore.io import read_table
from rmflow.cli import main


def clean(capsys: pytest.CaptureFixture, *args: str) -> dict:
    assert main(["clean", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _outputs_agree(result: dict) -> None:
    assert result["rows_in"] == result["kept"] + sum(result["dropped"].values()) + result["quarantined"]
    assert read_table(result["output"], PAIRS).num_rows == result["kept"]
    assert read_table(result["quarantine"], QUARANTINE).num_rows == result["quarantined"]


@pytest.mark.parametrize(
    "subset", ["helpful-base", "helpful-rejection-sampled", "helpful-online", "harmless-base"]
)
def test_hh_rlhf_test_splits(capsys, shared_data: Path, tmp_path: Path, subset: str) -> None:
    with gzip.open(shared_data / "Anthropic/hh-rlhf" / subset / "test.jsonl.gz", "rt") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    result = clean(
        capsys, f"hh-rlhf/{subset}", "--split", "test", "--data-dir", str(shared_data), "--out", str(tmp_path)
    )
    assert result["source"] == f"hh-rlhf/{subset}" and result["unit"] == "row"
    assert result["rows_in"] == len(rows)
    assert result["dropped"]["chosen_equals_rejected"] == sum(r["chosen"] == r["rejected"] for r in rows)
    trailing_empty = sum(
        any(t.rstrip().endswith("Assistant:") for t in (r["chosen"], r["rejected"]))
        and r["chosen"] != r["rejected"]
        for r in rows
    )
    assert result["dropped"]["empty_final_answer"] <= trailing_empty  # the rest were quarantined first
    assert result["output"] == str(tmp_path / f"hh-rlhf__{subset}" / "test" / "pairs.parquet")
    assert "real data" in result["data"]
    _outputs_agree(result)


def test_helpsteer_all_pairs(capsys, shared_data: Path, tmp_path: Path) -> None:
    rows = [
        json.loads(line) for line in (shared_data / "nvidia/HelpSteer/train.jsonl").read_text().splitlines()
    ]
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["prompt"], []).append(r)
    expected = {"single_response_prompt": 0, "chosen_equals_rejected": 0, "equal_scores": 0, "kept": 0}
    for members in groups.values():
        if len(members) == 1:
            expected["single_response_prompt"] += 1
        for a, b in combinations(members, 2):
            if a["response"] == b["response"]:
                expected["chosen_equals_rejected"] += 1
            elif a["helpfulness"] + a["correctness"] == b["helpfulness"] + b["correctness"]:
                expected["equal_scores"] += 1
            else:
                expected["kept"] += 1
    result = clean(
        capsys, "helpsteer", "--pairing", "all-pairs", "--data-dir", str(shared_data), "--out", str(tmp_path)
    )
    assert result["raw_rows"] == len(rows) == 500 and result["unit"] == "candidate"
    assert (
        result["rows_in"]
        == sum(len(m) * (len(m) - 1) // 2 for m in groups.values()) + expected["single_response_prompt"]
    )
    assert result["kept"] == expected.pop("kept")
    assert result["dropped"] == {**expected, "not_best_vs_random": 0}
    assert result["quarantined"] == 0
    _outputs_agree(result)


def test_pku_sample(capsys, shared_data: Path, tmp_path: Path) -> None:
    rows = [
        json.loads(line)
        for line in (shared_data / "PKU-Alignment/PKU-SafeRLHF/train.jsonl").read_text().splitlines()
    ]
    result = clean(capsys, "pku-saferlhf", "--data-dir", str(shared_data), "--out", str(tmp_path))
    same = sum(r["response_0"] == r["response_1"] for r in rows)
    assert (result["rows_in"], result["dropped"], result["quarantined"]) == (
        500,
        {"chosen_equals_rejected": same},
        0,
    )
    assert result["kept"] == 500 - same
    for pair in read_table(result["output"]).to_pylist():
        row = rows[pair["source_row"]]
        assert pair["chosen"][-1]["content"] == row[f"response_{row['safer_response_id']}"]
        assert pair["rejected"][-1]["content"] == row[f"response_{1 - row['safer_response_id']}"]
    _outputs_agree(result)


def test_same_seed_same_pairs(capsys, shared_data: Path, tmp_path: Path) -> None:
    args = ("helpsteer", "--pairing", "best-vs-random", "--seed", "3", "--data-dir", str(shared_data))
    a = clean(capsys, *args, "--out", str(tmp_path / "a"))
    b = clean(capsys, *args, "--out", str(tmp_path / "b"))
    ids_a = read_table(a["output"])["pair_id"].to_pylist()
    assert ids_a == read_table(b["output"])["pair_id"].to_pylist() and len(ids_a) == a["kept"]


def test_human_table_and_failures(capsys, shared_data: Path, tmp_path: Path) -> None:
    assert main(["clean", "pku-saferlhf", "--data-dir", str(shared_data), "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "kept (pairs)" in out and "dropped: chosen_equals_rejected" in out
    assert main(["clean", "nope", "--data-dir", str(shared_data)]) == 1
    assert "valid names: hh-rlhf/helpful-base" in capsys.readouterr().err
    assert main(["clean", "shp", "--split", "test", "--data-dir", str(shared_data)]) == 1
    assert "looked at" in capsys.readouterr().err


def test_console_script_prints_one_json_object(shared_data: Path, tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "rmflow.cli",
        "clean",
        "pku-saferlhf",
        "--data-dir",
        str(shared_data),
        "--out",
        str(tmp_path),
        "--json",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["rows_in"] == 500


# --- pairs and quarantine are published together --------------------------------------------


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_mirror(tmp_path_factory.mktemp("generated"), rows_per_source=60, seed=3)


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_clean_killed_between_its_two_files_leaves_the_previous_pair(
    capsys, generated: Path, tmp_path: Path
) -> None:
    """kill -9 after the new pairs.parquet is written, before its quarantine.parquet."""
    out = tmp_path / "out"
    first = clean(capsys, "helpsteer", "--data-dir", str(generated), "--out", str(out))
    folder = Path(first["output"]).parent
    before = folder_bytes(folder)
    assert set(before) == {"_SUCCESS", "pairs.parquet", "quarantine.parquet"}

    argv = ["clean", "helpsteer", "--pairing", "all-pairs", "--data-dir", str(generated), "--out", str(out)]
    hook = {"target": "rmcore.io:write_table", "mode": "kill-before", "match": "quarantine.parquet"}
    config = {"hooks": [hook], "call": "rmflow.cli:main", "kwargs": {"argv": argv}}
    assert run_child(config, child_env(), tmp_path / "child.log") == -9
    assert folder_bytes(folder) == before  # not the new pairs beside the old quarantine

    second = clean(capsys, *argv[1:])
    assert second["kept"] > first["kept"]  # all-pairs: more pairs than best-vs-random
    _outputs_agree(second)
    assert (folder / "_SUCCESS").exists()
    visible = [p for p in out.rglob("*") if p.is_file() and not is_temp_name(p.relative_to(out))]
    assert sorted(p.relative_to(folder).as_posix() for p in visible) == [
        "_SUCCESS",
        "pairs.parquet",
        "quarantine.parquet",
    ]


@pytest.mark.parametrize("exchange", ["renameat2", "rename-aside"])
def test_a_rerun_replaces_the_folder_whole_and_removes_the_old_one(
    capsys, monkeypatch: pytest.MonkeyPatch, generated: Path, tmp_path: Path, exchange: str
) -> None:
    if exchange == "rename-aside":  # systems without an atomic exchange
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    args = ("pku-saferlhf", "--data-dir", str(generated), "--out", str(tmp_path))
    first = clean(capsys, *args, "--per-prompt", "1")
    second = clean(capsys, *args)
    assert first["output"] == second["output"] and second["kept"] > first["kept"]
    _outputs_agree(second)
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "_SUCCESS",
        "pairs.parquet",
        "quarantine.parquet",
    ]


def test_exchange_swaps_two_folders_in_one_step(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("from a")
    (b / "y").write_text("from b")
    if not io._exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) not available here; replace_dir renames aside")
    assert [p.name for p in a.iterdir()] == ["y"] and [p.name for p in b.iterdir()] == ["x"]
