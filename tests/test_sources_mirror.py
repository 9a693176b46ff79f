"""Reading a hub mirror: file patterns and extensions, unreadable lines quarantined, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rmcore.data.sources import (
    SOURCE_NAMES,
    AccountingError,
    CleanOptions,
    CleanResult,
    SourceNotFound,
    UnknownSource,
    clean_source,
    get_adapter,
    read_raw,
)
from rmcore.data.sources.tables import SOURCE_ROW, quarantine_table

GOOD = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello", "rejected": "\n\nHuman: Hi\n\nAssistant: No"}


def test_source_names_are_the_specs() -> None:
    assert SOURCE_NAMES == (
        "hh-rlhf/helpful-base", "hh-rlhf/helpful-rejection-sampled", "hh-rlhf/helpful-online", "hh-rlhf/harmless-base",
        "shp", "ultrafeedback", "helpsteer", "capybara", "orca", "pku-saferlhf", "pku-saferlhf-30k",
    )  # fmt: skip
    with pytest.raises(UnknownSource, match="valid names: hh-rlhf/helpful-base"):
        get_adapter("hh-rlhf")


def test_bad_lines_become_bad_rows_and_are_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "Anthropic/hh-rlhf/helpful-base/test.jsonl"
    path.parent.mkdir(parents=True)
    lines = [
        json.dumps(GOOD),
        "{not json",
        json.dumps(GOOD),
        "[1, 2]",
        json.dumps({"chosen": 5, "rejected": "x"}),
        "",
    ]
    path.write_text("\n".join(lines) + "\n")
    raw = read_raw(get_adapter("hh-rlhf/helpful-base"), "test", tmp_path)
    assert raw.table.num_rows == 2 and raw.table[SOURCE_ROW].to_pylist() == [0, 2]
    assert [(r, reason.split(":")[0]) for r, reason, _ in raw.bad_rows] == [
        (1, "invalid_json"), (3, "not_an_object"), (4, "wrong_type"),
    ]  # fmt: skip
    assert raw.files == [str(path)] and raw.rows == 5
    result = clean_source("hh-rlhf/helpful-base", "test", CleanOptions(), tmp_path)
    assert (result.rows_in, result.kept, result.quarantined) == (5, 2, 3)  # duplicates are kept
    assert result.quarantine["source_row"].to_pylist() == [1, 3, 4]
    assert result.quarantine["raw"][0].as_py() == "{not json"


def test_other_extensions_and_row_numbers_across_files(tmp_path: Path) -> None:
    root = tmp_path / "stanfordnlp/SHP"
    rows = [{"post_id": "p", "history": "h", "human_ref_A": "a", "human_ref_B": "b", "labels": 1,
             "score_A": 9, "score_B": 1, "score_ratio": 9.0}]  # fmt: skip
    for domain in ("askb", "aska"):
        (root / domain).mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows * 2), root / domain / "train.parquet")
    raw = read_raw(get_adapter("shp"), "train", tmp_path)
    assert [Path(f).parent.name for f in raw.files] == ["aska", "askb"]
    assert raw.table[SOURCE_ROW].to_pylist() == [0, 1, 2, 3]


def test_missing_split_names_the_paths_looked_at(tmp_path: Path) -> None:
    with pytest.raises(
        SourceNotFound, match=r"helpsteer: no files for split 'test'.*nvidia/HelpSteer/test\.jsonl\.gz"
    ):
        read_raw(get_adapter("helpsteer"), "test", tmp_path)


def test_accounting_is_checked() -> None:
    q = quarantine_table("s", [], [], [])
    result = CleanResult("s", rows_in=3, pairs=pa.table({"x": [1]}), quarantine=q, dropped={"r": 1})
    with pytest.raises(AccountingError, match="rows_in=3 but kept=1"):
        result.check_accounting()


def test_projected_parquet_read_still_quarantines_whole_rows(tmp_path: Path) -> None:
    """UltraFeedback decodes only the columns its rules read; a quarantined row keeps every field."""
    from test_sources_ultrafeedback import ROWS

    path = tmp_path / "openbmb/UltraFeedback/data/train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS), path, row_group_size=2)
    adapter = get_adapter("ultrafeedback")
    projected = read_raw(adapter, "train", tmp_path, columns=list(adapter.columns))
    assert "critique" not in str(projected.table.schema) and "source" not in projected.table.column_names
    result = clean_source("ultrafeedback", "train", CleanOptions(pairing="all-pairs"), tmp_path)
    assert (result.rows_in, result.kept, result.quarantined) == (12, 5, 2)
    full = [json.loads(r) for r in result.quarantine["raw"].to_pylist()]
    assert [r["instruction"] for r in full] == ["Q3", None]
    assert full[0]["completions"][0]["critique"] == "c" and full[0]["source"] == "evol_instruct"


def test_offline_hub_read_fails_with_a_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a mirror and without network (tests run offline) the error says what to do."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SourceNotFound, match="helpsteer"):
        read_raw(get_adapter("helpsteer"), "train", None)
    with pytest.raises(SourceNotFound, match="no pattern: the hub has no such split"):
        read_raw(get_adapter("ultrafeedback"), "test", None)


def test_streamed_parquet_cleaning_equals_whole_table_cleaning(tmp_path: Path) -> None:
    from test_sources_ultrafeedback import ROWS

    path = tmp_path / "openbmb/UltraFeedback/data/train-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS * 3), path, row_group_size=4)
    adapter = get_adapter("ultrafeedback")
    for options in (CleanOptions(pairing="all-pairs"), CleanOptions(seed=5)):
        streamed = clean_source("ultrafeedback", "train", options, tmp_path)
        whole = adapter.clean(read_raw(adapter, "train", tmp_path).table, options, split="train")
        assert streamed.pairs.equals(whole.pairs)
        assert streamed.quarantine.equals(whole.quarantine)
        assert (streamed.rows_in, streamed.dropped) == (whole.rows_in, whole.dropped)
        assert streamed.quarantine["source_row"].to_pylist() == [3, 4, 8, 9, 13, 14]


def _pku(i: int) -> dict:
    return {"prompt": f"q{i}", "response_0": "safe", "response_1": "unsafe", "safer_response_id": 0}


def test_pku_recipe_era_layout_reads_jsonl_xz(tmp_path: Path) -> None:
    """PKU-SafeRLHF at its pinned recipe-era revision: round0/330k and round0/30k as .jsonl.xz."""
    import lzma

    root = tmp_path / "PKU-Alignment/PKU-SafeRLHF/round0"
    for sub, n in (("330k", 3), ("30k", 2)):
        (root / sub).mkdir(parents=True)
        with lzma.open(root / sub / "train.jsonl.xz", "wt") as f:
            f.writelines(json.dumps(_pku(i)) + "\n" for i in range(n))
    big = clean_source("pku-saferlhf", "train", CleanOptions(), tmp_path)
    small = clean_source("pku-saferlhf-30k", "train", CleanOptions(), tmp_path)
    assert (big.rows_in, big.kept, small.rows_in, small.kept) == (3, 3, 2, 2)
    assert get_adapter("pku-saferlhf").revision == get_adapter("pku-saferlhf-30k").revision == (
        "240919205c45b905e7abc2f39bb035640438fba3"
    )
    # a truncated .xz is a corrupt file named as such, never a partial read
    data = (root / "30k" / "train.jsonl.xz").read_bytes()
    (root / "30k" / "train.jsonl.xz").write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception, match=r"train\.jsonl\.xz: cannot be read, the file is truncated or corrupt"):
        clean_source("pku-saferlhf-30k", "train", CleanOptions(), tmp_path)


@pytest.mark.parametrize(
    ("layout", "name"),
    [("data", "train-00000-of-00001.parquet"), ("default/train", "0000.parquet")],
    ids=["push_to_hub", "refs-convert-parquet"],
)
def test_both_hub_parquet_layouts_are_read(tmp_path: Path, layout: str, name: str) -> None:
    folder = tmp_path / "Anthropic/hh-rlhf" / layout
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist([GOOD, GOOD]), folder / name)
    raw = read_raw(get_adapter("hh-rlhf/helpful-base"), "train", tmp_path)
    assert raw.table.num_rows == 2 and raw.files == [str(folder / name)]


def test_the_missing_split_message_names_both_parquet_layouts(tmp_path: Path) -> None:
    with pytest.raises(SourceNotFound) as err:
        read_raw(get_adapter("helpsteer"), "test", tmp_path)
    assert "nvidia/HelpSteer/data/test-*.parquet" in str(err.value)
    assert "nvidia/HelpSteer/default/test/*.parquet" in str(err.value)
