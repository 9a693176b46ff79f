"""Mixture materialisation and the stats table, on hand-built pair tables."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest

from data_contracts import PAIRS, ContractError, validate
from rmcore import io
from rmcore.config import ConfigError, from_mapping
from rmcore.data.mixtures import CleanedInput, MixtureConfig, SourceSpec, materialise_mixture
from rmcore.data.stats import conversation_lengths, stats_markdown, stats_row


def _pairs(source: str, n: int, answer_words: tuple[int, int] = (3, 2)) -> pa.Table:
    rows = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"question {i}"}]
        rows.append(
            {
                "pair_id": io.digest_strings(source, str(i)),
                "source": source,
                "prompt": prompt,
                "chosen": prompt + [{"role": "assistant", "content": " ".join(["good"] * answer_words[0])}],
                "rejected": prompt + [{"role": "assistant", "content": " ".join(["bad"] * answer_words[1])}],
                "chosen_score": 1.0,
                "rejected_score": 0.0,
                "split": "train",
            }
        )
    return pa.Table.from_pylist(rows, schema=PAIRS.schema)


def _cleaned(tmp: Path, source: str, n: int, rows_in: int | None = None) -> CleanedInput:
    table = _pairs(source, n)
    path = tmp / f"{source.replace('/', '_')}.parquet"
    io.write_table(table, path, PAIRS)
    dropped = {"equal_scores": (rows_in or n) - n}
    stats = stats_row(source, table, rows_in=rows_in or n, dropped=dropped, quarantined=0)
    return CleanedInput(f"{source}/train", path, io.table_digest(table), stats)


def test_conversation_lengths_count_words_of_every_message():
    table = _pairs("s", 2, answer_words=(3, 1))
    # prompt "question i" = 2 words; chosen answer 3 words, rejected 1 word
    assert conversation_lengths(table.column("chosen")).tolist() == [5, 5]
    assert conversation_lengths(table.column("rejected")).tolist() == [3, 3]


def test_mixture_counts_subsample_and_determinism(tmp_path: Path):
    config = MixtureConfig(
        name="t",
        sources=(SourceSpec("helpsteer", max_pairs=4), SourceSpec("orca")),
        seed=7,
        validation_fraction=0.25,
    )
    inputs = [_cleaned(tmp_path, "helpsteer", 10, rows_in=12), _cleaned(tmp_path, "orca", 3)]
    inputs[0] = CleanedInput("helpsteer/train/max-4", inputs[0].pairs_path, inputs[0].digest, inputs[0].stats)
    a = materialise_mixture(config, inputs, tmp_path / "a", missing=["shp [train]"])
    b = materialise_mixture(config, inputs, tmp_path / "b", missing=["shp [train]"])
    assert a.counts == {"helpsteer/train/max-4": 4, "orca/train": 3}
    assert a.total == 7 and a.digest == b.digest
    table = io.read_table(a.path, "mixture")
    assert table.num_rows == 7
    assert set(table.column("split").to_pylist()) <= {"train", "validation"}
    manifest = io.read_json(a.manifest_path)
    assert manifest["missing"] == ["shp [train]"]
    assert [i["digest"] for i in manifest["inputs"]] == [i.digest for i in inputs]
    helpsteer_row = io.read_json(a.stats_path)[0]
    # 12 rows in, 2 dropped as equal scores, 10 kept by cleaning, 6 cut by the 4-pair subsample
    assert json.loads(helpsteer_row["dropped"]) == {"equal_scores": 2, "max_pairs_subsample": 6}
    assert helpsteer_row["pairs"] == 4
    total = io.read_json(a.stats_path)[-1]
    assert total["pairs"] == 7 and total["rows_in"] == 15


def test_mixture_seed_changes_order_not_content(tmp_path: Path):
    inputs = [_cleaned(tmp_path, "orca", 20)]
    results = [
        materialise_mixture(MixtureConfig(name="t", sources=(SourceSpec("orca"),), seed=s), inputs, tmp_path / str(s))
        for s in (1, 2)
    ]
    ids = [io.read_table(r.path).column("pair_id").to_pylist() for r in results]
    assert sorted(ids[0]) == sorted(ids[1]) and ids[0] != ids[1]


def test_mixture_without_any_source_says_what_is_missing(tmp_path: Path):
    config = MixtureConfig(name="t", sources=(SourceSpec("orca"),))
    with pytest.raises(FileNotFoundError, match="orca"):
        materialise_mixture(config, [], tmp_path, missing=["orca [train]"])


def test_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ConfigError, match="unknown key.*'per_promt'.*valid keys"):
        from_mapping(SourceSpec, {"source": "shp", "per_promt": 1})
    with pytest.raises(ConfigError, match="max_pairs must be a positive integer"):
        from_mapping(SourceSpec, {"source": "shp", "max_pairs": -5})
    with pytest.raises(ConfigError, match="pairing.*not one of"):
        from_mapping(SourceSpec, {"source": "shp", "pairing": "best"})


def test_contract_errors_name_every_column():
    table = _pairs("s", 1).drop(["split"]).append_column("junk", pa.array([1]))
    table = table.set_column(table.schema.get_field_index("chosen_score"), "chosen_score", pa.array(["x"]))
    with pytest.raises(ContractError) as err:
        validate(table, PAIRS, where="f.parquet")
    message = str(err.value)
    assert "f.parquet" in message and "missing columns: split" in message
    assert "extra columns: junk" in message and "chosen_score (is string" in message


def test_stats_markdown_lists_drops():
    row = stats_row("orca", _pairs("orca", 2), rows_in=5, dropped={"equal_scores": 3}, quarantined=0)
    text = stats_markdown([row])
    assert "| orca | 5 | 5 (row) | 2 |" in text and "equal_scores: 3" in text
