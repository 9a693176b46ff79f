"""The rated mixture (regression training data) and the by-prompt validation split it shares with pairs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from types import SimpleNamespace

import pyarrow as pa
import pytest

from data_contracts import PAIRS, QUARANTINE, RATED_RESPONSES, validate
from rmcore import io
from rmcore.config import ConfigError, from_mapping
from rmcore.data.mixtures import (
    CleanedInput,
    MixtureConfig,
    SourceSpec,
    materialise_mixture,
    prompt_validation_mask,
)
from rmcore.data.pairing import canonical_json
from rmcore.data.rated_mixture import RATED_SOURCES, materialise_rated, rated_specs
from rmcore.data.sources.base import CleanOptions
from rmcore.data.sources.tables import quarantine_table
from rmcore.data.stages import read_download
from rmcore.data.stats import stats_row

SHARED_HELPSTEER = Path(__file__).parents[2] / "shared" / "data" / "nvidia" / "HelpSteer" / "train.jsonl"
HELPSTEER = SourceSpec("helpsteer", pairing="all-pairs")


def hs(prompt, response, h=3, c=3, coh=4, cx=2, v=1) -> dict:
    return {
        "prompt": prompt,
        "response": response,
        "helpfulness": h,
        "correctness": c,
        "coherence": coh,
        "complexity": cx,
        "verbosity": v,
    }


# 15 rows of 7 prompts (Q0-Q6): 12 kept (one with correctness masked), 3 quarantined
ROWS = [
    *(hs(f"Q{p}", f"answer {p}.{r}", h=r, c=r) for p in range(6) for r in range(2)),  # 0-11: 6 prompts x 2
]
ROWS[3] = hs("Q1", "")  # empty_response
ROWS[6] = hs("Q3", "answer 3.0", h=7)  # rating_out_of_range: helpfulness
ROWS[10] = hs("Q5", "answer 5.0", h=None, c=None, coh=None, cx=None, v=None)  # no_rating
ROWS += [hs("Q6", "x", c=None), hs("Q6", "y"), hs("Q6", "z", h=1)]  # 12-14: kept, one correctness masked


def config(fraction: float = 0.5, unit: str = "prompt", sources=(HELPSTEER,)) -> MixtureConfig:
    return MixtureConfig(
        name="rated-t", sources=tuple(sources), seed=1, validation_fraction=fraction, validation_unit=unit
    )


def bucket_of(prompt: list[dict]) -> int:
    """The rule written out: first 4 bytes of sha256 of the prompt's canonical JSON."""
    return int(hashlib.sha256(canonical_json(prompt).encode()).hexdigest()[:8], 16)


def splits_by_prompt(table: pa.Table) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for prompt, split in zip(table.column("prompt").to_pylist(), table.column("split").to_pylist()):
        out.setdefault(prompt[0]["content"], set()).add(split)
    return out


def test_prompt_validation_mask_is_the_sha256_bucket_rule() -> None:
    prompts = [[{"role": "user", "content": f"Q{i}"}] for i in range(40)]
    expected = [bucket_of(p) < 0.3 * 2**32 for p in prompts]
    assert prompt_validation_mask(prompts, 0.3).tolist() == expected
    assert 0 < sum(expected) < 40
    assert not prompt_validation_mask(prompts, 0.0).any()
    # key order of a message does not matter (canonical JSON); the same prompt, the same answer
    swapped = [[{"content": p[0]["content"], "role": "user"}] for p in prompts]
    assert prompt_validation_mask(swapped + prompts, 0.3).tolist() == expected * 2


def test_validation_unit_is_checked() -> None:
    with pytest.raises(ConfigError, match="validation_unit must be 'pair' or 'prompt'"):
        config(unit="response")
    with pytest.raises(ConfigError, match=r"validation_unit: 'response' is not one of \['pair', 'prompt'\]"):
        from_mapping(
            MixtureConfig, {"name": "x", "sources": [{"source": "orca"}], "validation_unit": "response"}
        )
    assert (
        from_mapping(MixtureConfig, {"name": "x", "sources": [{"source": "orca"}]}).validation_unit == "pair"
    )


def _pairs_table(prompts_of_pairs: list[str]) -> pa.Table:
    rows = []
    for i, text in enumerate(prompts_of_pairs):
        prompt = [{"role": "user", "content": text}]
        rows.append(
            {
                "pair_id": io.digest_strings("s", str(i)),
                "source": "s",
                "prompt": prompt,
                "chosen": prompt + [{"role": "assistant", "content": "good"}],
                "rejected": prompt + [{"role": "assistant", "content": "bad"}],
                "chosen_score": 1.0,
                "rejected_score": 0.0,
                "split": "train",
            }
        )
    return pa.Table.from_pylist(rows, schema=PAIRS.schema)


def _mixture(tmp: Path, table: pa.Table, unit: str) -> pa.Table:
    path = tmp / f"pairs-{unit}.parquet"
    io.write_table(table, path, PAIRS)
    stats = stats_row("orca", table, rows_in=table.num_rows, dropped={}, quarantined=0)
    cfg = config(0.4, unit, sources=(SourceSpec("orca"),))
    result = materialise_mixture(
        cfg, [CleanedInput("orca/train", path, io.table_digest(table), stats)], tmp / unit
    )
    return io.read_table(result.path, "mixture")


def test_pair_unit_keeps_the_pair_id_rule_and_prompt_unit_groups_by_prompt(tmp_path: Path) -> None:
    table = _pairs_table([f"P{i % 10}" for i in range(60)])  # 10 prompts, 6 pairs each
    by_pair = _mixture(tmp_path, table, "pair")
    old_rule = {
        p: "validation" if int(p[:8], 16) < 0.4 * 2**32 else "train" for p in by_pair["pair_id"].to_pylist()
    }
    assert dict(zip(by_pair["pair_id"].to_pylist(), by_pair["split"].to_pylist())) == old_rule
    assert any(len(s) == 2 for s in splits_by_prompt(by_pair).values())  # by pair, prompts straddle
    by_prompt = _mixture(tmp_path, table, "prompt")
    splits = splits_by_prompt(by_prompt)
    assert all(len(s) == 1 for s in splits.values())
    assert {p: s.pop() for p, s in splits.items()} == {
        f"P{i}": "validation" if bucket_of([{"role": "user", "content": f"P{i}"}]) < 0.4 * 2**32 else "train"
        for i in range(10)
    }
    assert sorted(by_prompt["pair_id"].to_pylist()) == sorted(by_pair["pair_id"].to_pylist())


def test_rated_mixture_counts_splits_and_quarantine(tmp_path: Path) -> None:
    unreadable = quarantine_table("helpsteer", [15], ["bad_json"], ["{oops"])
    result = materialise_rated(
        config(),
        [(HELPSTEER, pa.Table.from_pylist(ROWS))],
        tmp_path / "r",
        unreadable={HELPSTEER.key: unreadable},
    )
    table = io.read_table(result.path, RATED_RESPONSES)
    assert result.rows == table.num_rows == 12 and result.digest == io.table_digest(table)
    quarantine = io.read_table(result.quarantine_path, QUARANTINE)
    assert dict(zip(quarantine["source_row"].to_pylist(), quarantine["reason"].to_pylist())) == {
        3: "empty_response",
        6: "rating_out_of_range: helpfulness",
        10: "no_rating",
        15: "bad_json",
    }
    manifest = io.read_json(result.manifest_path)
    assert manifest["sources"] == {
        HELPSTEER.key: {
            "source": "helpsteer",
            "split": "train",
            "rows_in": 16,
            "kept": 12,
            "quarantined": 4,
            "missing_ratings": {
                "helpfulness": 0,
                "correctness": 1,
                "coherence": 0,
                "complexity": 0,
                "verbosity": 0,
            },
        }
    }
    assert manifest["missing_ratings"]["correctness"] == 1
    assert manifest["digest"] == result.digest and manifest["rows"] == 12
    splits = splits_by_prompt(table)
    assert sorted(splits) == [f"Q{i}" for i in range(7)] and all(len(s) == 1 for s in splits.values())
    expected = {
        p: "validation" if bucket_of([{"role": "user", "content": p}]) < 0.5 * 2**32 else "train"
        for p in splits
    }
    assert {p: s.pop() for p, s in splits.items()} == expected
    assert (
        result.validation_rows
        == manifest["validation_rows"]
        == table["split"].to_pylist().count("validation")
    )
    assert 0 < result.validation_rows < 12
    validate(table, RATED_RESPONSES)
    # deterministic: the same inputs, the same digest
    again = materialise_rated(
        config(),
        [(HELPSTEER, pa.Table.from_pylist(ROWS))],
        tmp_path / "again",
        unreadable={HELPSTEER.key: unreadable},
    )
    assert again.digest == result.digest


def test_rated_split_agrees_with_the_helpsteer_pair_mixture_by_prompt(tmp_path: Path) -> None:
    from rmcore.data.sources.catalog import get_adapter

    raw = pa.Table.from_pylist(ROWS)
    cfg = config()
    pairs = (
        get_adapter("helpsteer").clean(raw, CleanOptions(pairing="all-pairs", seed=1), split="train").pairs
    )
    path = tmp_path / "pairs.parquet"
    io.write_table(pairs, path, PAIRS)
    stats = stats_row("helpsteer", pairs, rows_in=15, dropped={}, quarantined=3)
    mixture = materialise_mixture(
        cfg, [CleanedInput(HELPSTEER.key, path, io.table_digest(pairs), stats)], tmp_path / "m"
    )
    pair_splits = {p: s.pop() for p, s in splits_by_prompt(io.read_table(mixture.path)).items()}
    rated_splits = {
        p: s.pop()
        for p, s in splits_by_prompt(
            io.read_table(materialise_rated(cfg, [(HELPSTEER, raw)], tmp_path / "r").path)
        ).items()
    }
    assert pair_splits and set(pair_splits) <= set(rated_splits)
    assert pair_splits == {p: rated_splits[p] for p in pair_splits}


def test_no_rated_source_names_the_recipe_and_the_fix(tmp_path: Path) -> None:
    cfg = config(sources=(SourceSpec("orca"),))
    assert rated_specs(cfg) == ()
    with pytest.raises(ValueError, match=r"mixture 'rated-t': no rated source.*regression.*helpsteer"):
        materialise_rated(cfg, [], tmp_path)


def test_rated_specs_lists_each_rated_input_once() -> None:
    assert RATED_SOURCES == ("helpsteer",)
    cfg = config(
        sources=(
            SourceSpec("orca"),
            HELPSTEER,
            SourceSpec("helpsteer", pairing="best-vs-random"),
            SourceSpec("helpsteer", split="validation"),
        )
    )
    assert rated_specs(cfg) == (HELPSTEER, SourceSpec("helpsteer", split="validation"))


def test_run_rated_only_for_regression() -> None:
    from flows.data_stages import run_rated

    for train in (None, SimpleNamespace(model_type="bt"), SimpleNamespace(model_type="listwise")):
        ctx = SimpleNamespace(recipe=SimpleNamespace(train=train, data=config()))
        assert run_rated(ctx, {}) is None


@pytest.mark.skipif(
    not SHARED_HELPSTEER.exists(), reason=f"{SHARED_HELPSTEER} absent (the shared real-data mirror)"
)
def test_real_helpsteer_through_the_download_stage(tmp_path: Path) -> None:
    from rmcore.data.stages import clean_downloaded, download_source

    data_dir = SHARED_HELPSTEER.parents[2]
    download_source("helpsteer", "train", data_dir, tmp_path / "raw")
    raw, unreadable = read_download(tmp_path / "raw")
    cfg = config(0.1)
    result = materialise_rated(
        cfg, [(HELPSTEER, raw)], tmp_path / "rated", unreadable={HELPSTEER.key: unreadable}
    )
    table = io.read_table(result.path, RATED_RESPONSES)
    manifest = io.read_json(result.manifest_path)
    assert manifest["sources"][HELPSTEER.key] == {
        "source": "helpsteer",
        "split": "train",
        "rows_in": 500,
        "kept": 500,
        "quarantined": 0,
        "missing_ratings": dict.fromkeys(
            ("helpfulness", "correctness", "coherence", "complexity", "verbosity"), 0
        ),
    }
    splits = splits_by_prompt(table)
    assert len(splits) == 139 and all(len(s) == 1 for s in splits.values())
    assert (result.rows, result.validation_rows) == (500, REAL_VALIDATION_ROWS)
    assert sum(s == {"validation"} for s in splits.values()) == REAL_VALIDATION_PROMPTS
    # the pair mixture of the same download, held out by prompt, holds out the same prompts
    clean_downloaded("helpsteer", "train", tmp_path / "raw", HELPSTEER.clean_options(1), tmp_path / "clean")
    summary = io.read_json(tmp_path / "clean" / "summary.json")
    inputs = [CleanedInput(HELPSTEER.key, Path(summary["output"]), summary["digest"], summary["stats"])]
    mixture = io.read_table(materialise_mixture(cfg, inputs, tmp_path / "mix").path)
    pair_splits = {p: s.pop() for p, s in splits_by_prompt(mixture).items()}
    assert pair_splits == {p: next(iter(splits[p])) for p in pair_splits}
    # observed: 460 all-pairs pairs of 115 prompts (the other 24 prompts give no pair)
    assert (mixture.num_rows, len(pair_splits)) == (460, 115)
    assert mixture["split"].to_pylist().count("validation") == 24
    assert sum(s == "validation" for s in pair_splits.values()) == 7  # of the 10 held-out prompts


@pytest.mark.usefixtures("prefect_harness")
def test_rated_task_runs_in_a_flow_and_is_cached(tmp_path: Path) -> None:
    from prefect import flow

    from rmcore.data.stages import download_source
    from tasks.rated import rated_task

    mirror = tmp_path / "mirror" / "nvidia" / "HelpSteer"
    mirror.mkdir(parents=True)
    (mirror / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    download = download_source("helpsteer", "train", tmp_path / "mirror", tmp_path / "raw")
    cfg, work = config(), str(tmp_path / "work")

    @flow
    def twice() -> tuple:
        first = rated_task(cfg, [str(tmp_path / "raw")], [download["sha256"]], work, return_state=True)
        second = rated_task(cfg, [str(tmp_path / "raw")], [download["sha256"]], work, return_state=True)
        return first.name, second.name, first.result()

    first, second, result = twice()
    assert (first, second) == ("Completed", "Cached")
    assert (result["rows"], Path(result["path"]).parent.parent.name) == (12, "rated-t")
    assert result["digest"] == io.read_json(Path(result["path"]).parent / "rated_manifest.json")["digest"]
    assert io.read_table(result["path"], RATED_RESPONSES).num_rows == 12


REAL_VALIDATION_ROWS = 35  # observed: 10 of the 139 prompts (fraction 0.1) hold 35 of the 500 responses
REAL_VALIDATION_PROMPTS = 10
