"""A recipe entry's ``files``: a source split read from listed files instead of the hub layout.

The real hh-rlhf TRAIN rows exist only as 500-row samples outside the mirror layout
(``extra/hh-rlhf-train-samples/``, see shared/data/SOURCES.md). Listed files are cleaned by the
source's own rules, keyed by their bytes, labelled apart from the mirror entry of the same
source and split, and refused (missing, escaping the data dir, no data dir) before any stage runs.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
from pathlib import Path

import pytest
import yaml
from flow_helpers import ran, state_counts, task_states

from rmcore.config import ConfigError, from_mapping
from rmcore.data.mixtures import MixtureConfig, SourceSpec
from rmcore.data.stages import SourceFilesError, listed_files, source_fingerprint

SAMPLES = "extra/hh-rlhf-train-samples"
HELPFUL = f"{SAMPLES}/helpful_train_sample.jsonl"
HARMLESS = f"{SAMPLES}/harmless_train_sample.jsonl"
HELPFUL_TEST = "Anthropic/hh-rlhf/helpful-base/test.jsonl.gz"


# --- an independent count of the hh-rlhf rules (str.find, not the adapter's regex) -------------


def _turns(text: str) -> list[tuple[str, str]] | None:
    """(role, stripped content) of each ``\\n\\nHuman:``/``\\n\\nAssistant:`` turn; None if text
    comes before the first marker or there is no marker."""
    marks = {"\n\nHuman:": "user", "\n\nAssistant:": "assistant"}
    text = text if text.startswith("\n\n") else "\n\n" + text
    found = sorted((i, m) for m in marks for i in _all(text, m))
    if not found or found[0][0] != 0:
        return None
    ends = [i for i, _ in found[1:]] + [len(text)]
    return [(marks[m], text[i + len(m) : end].strip()) for (i, m), end in zip(found, ends)]


def _all(text: str, sub: str) -> list[int]:
    out, i = [], text.find(sub)
    while i != -1:
        out.append(i)
        i = text.find(sub, i + 1)
    return out


def _fate(row: dict) -> str:
    """'kept', 'dropped:<rule>' or 'quarantined:<rule>' for one raw hh-rlhf row (rules in order)."""
    if row["chosen"] == row["rejected"]:
        return "dropped:chosen_equals_rejected"
    sides = [_turns(row["chosen"]), _turns(row["rejected"])]
    for turns in sides:
        roles = [r for r, _ in turns or []]
        if not roles or roles[0] != "user":
            return "quarantined:unparseable_transcript"
        if any(re.search(r"(?:^|\s)(?:Human|Assistant):", content) for _, content in turns):
            return "quarantined:turn_marker_inside_turn"
        if any(a == b for a, b in itertools.pairwise(roles)):
            return "quarantined:consecutive_same_role"
        if roles[-1] != "assistant":
            return "quarantined:not_ending_with_assistant"
    chosen, rejected = sides
    if chosen[:-1] != rejected[:-1]:
        return "quarantined:prompt_mismatch"
    if chosen == rejected:
        return "dropped:chosen_equals_rejected"
    if not chosen[-1][1] or not rejected[-1][1]:
        return "dropped:empty_final_answer"
    if any(not content for _, content in chosen[:-1]):
        return "dropped:empty_prompt_turn"
    return "kept"


def _expected(path: Path) -> dict[str, int]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    fates = [_fate(r) for r in rows]
    return {
        "rows_in": len(rows),
        "kept": fates.count("kept"),
        "dropped": sum(f.startswith("dropped") for f in fates),
        "quarantined": sum(f.startswith("quarantined") for f in fates),
    }


def test_the_independent_count_of_the_two_train_samples(shared_data: Path) -> None:
    """Worked out by reading the rows: helpful has 1 empty final answer (row 247) and 8 transcripts
    with a turn marker inside a turn (rows 45, 173, 241, 357, 365, 418, 485, 493; in 241 and 365
    an inline "Human:" made two assistant turns in a row); harmless has 2 transcripts with two
    assistant turns in a row (rows 36, 329) and 4 with a marker inside a turn (447, 462, 471, 492)."""
    assert _expected(shared_data / HELPFUL) == {"rows_in": 500, "kept": 491, "dropped": 1, "quarantined": 8}
    assert _expected(shared_data / HARMLESS) == {"rows_in": 500, "kept": 494, "dropped": 0, "quarantined": 6}


# --- the spec: label, validation -----------------------------------------------------------------


def test_files_name_the_entry_apart_from_the_mirror_entry_whatever_their_order() -> None:
    mirror = SourceSpec("hh-rlhf/helpful-base")
    listed = SourceSpec("hh-rlhf/helpful-base", files=[HELPFUL, HARMLESS])  # a list is kept as a tuple
    assert mirror.key == "hh-rlhf/helpful-base/train"
    assert listed.key.startswith("hh-rlhf/helpful-base/train/files-") and listed.key != mirror.key
    assert listed.files == (HELPFUL, HARMLESS)
    assert SourceSpec("hh-rlhf/helpful-base", files=(HARMLESS, HELPFUL)).key == listed.key
    assert SourceSpec("hh-rlhf/helpful-base", files=(HELPFUL,)).key != listed.key
    both = MixtureConfig(name="m", sources=(mirror, listed))  # not "listed twice"
    assert len({s.key for s in both.sources}) == 2


@pytest.mark.parametrize(
    ("files", "message"),
    [("extra/x.jsonl", "expected a list"), ([], "files is empty"), ([""], "files must be a list of paths")],
)
def test_malformed_files_are_refused_by_the_recipe_loader(files, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        from_mapping(MixtureConfig, {"name": "m", "sources": [{"source": "hh-rlhf/helpful-base", "files": files}]})
    assert "sources[0]" in str(info.value)


def test_listed_files_resolve_globs_and_refuse_escapes_and_misses(tmp_path: Path) -> None:
    data, outside = tmp_path / "data", tmp_path / "outside.jsonl"
    (data / "extra").mkdir(parents=True)
    for name in ("b.jsonl", "a.jsonl"):
        (data / "extra" / name).write_text("{}\n")
    outside.write_text("{}\n")
    (data / "extra" / "link.jsonl").symlink_to(outside)
    where = "r.yaml: data.sources[0]"
    got = listed_files(["extra/[ab].jsonl", "extra/a.jsonl"], data, where=where)
    assert got == [data.resolve() / "extra/a.jsonl", data.resolve() / "extra/b.jsonl"]  # sorted, once each
    for bad, fragment in [
        ("extra/nope.jsonl", "matches no file under the data dir"),
        ("extra/*.parquet", "matches no file under the data dir"),
        ("../outside.jsonl", "outside the data dir"),
        (str(outside), "outside the data dir"),
        ("extra/link.jsonl", "outside the data dir"),
    ]:
        with pytest.raises(SourceFilesError) as info:
            listed_files([bad], data, where=where)
        message = str(info.value)
        assert fragment in message and repr(bad) in message and where in message, message
        assert str(data.resolve()) in message, message
    with pytest.raises(SourceFilesError, match="--data-dir"):
        listed_files(["extra/a.jsonl"], None, where=where)


def test_the_fingerprint_of_listed_files_differs_from_the_mirror_one_over_the_same_file(
    shared_data: Path,
) -> None:
    mirror = source_fingerprint("hh-rlhf/helpful-base", "test", shared_data)
    listed = source_fingerprint("hh-rlhf/helpful-base", "test", shared_data, (HELPFUL_TEST,))
    assert mirror != listed and "missing" not in (mirror, listed)


# --- flows ---------------------------------------------------------------------------------------


def _write_recipe(path: Path, sources: list[dict], heldout: list[dict] | None = None) -> Path:
    recipe = {"name": "files", "data": {"seed": 5, "sources": sources, "heldout": heldout or []}}
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.usefixtures("prefect_harness")
def test_rmflow_mix_trains_on_the_hh_rlhf_train_samples(shared_data: Path, tmp_path: Path, capsys) -> None:
    """Both samples as their sources' train splits; the helpful-base test split from the mirror
    and again from ``files`` (same bytes): two downloads, two labels, the same pairs."""
    from rmflow.cli import main

    recipe = _write_recipe(
        tmp_path / "recipe.yaml",
        [
            {"source": "hh-rlhf/helpful-base", "files": [HELPFUL]},
            {"source": "hh-rlhf/harmless-base", "files": [HARMLESS]},
            {"source": "hh-rlhf/helpful-base", "split": "test"},
            {"source": "hh-rlhf/helpful-base", "split": "test", "files": [HELPFUL_TEST]},
        ],
    )
    work = tmp_path / "w"
    code = main(["mix", str(recipe), "--data-dir", str(shared_data), "--out", str(work), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["missing"] == []
    helpful = SourceSpec("hh-rlhf/helpful-base", files=(HELPFUL,)).key
    harmless = SourceSpec("hh-rlhf/harmless-base", files=(HARMLESS,)).key
    test_listed = SourceSpec("hh-rlhf/helpful-base", split="test", files=(HELPFUL_TEST,)).key
    assert helpful != "hh-rlhf/helpful-base/train" and test_listed != "hh-rlhf/helpful-base/test"
    counts = out["counts"]
    assert set(counts) == {helpful, harmless, "hh-rlhf/helpful-base/test", test_listed}
    assert counts[helpful] == _expected(shared_data / HELPFUL)["kept"] == 491
    assert counts[harmless] == _expected(shared_data / HARMLESS)["kept"] == 494
    assert counts[test_listed] == counts["hh-rlhf/helpful-base/test"]
    assert out["total"] == sum(counts.values())

    stats = {r["source"]: r for r in json.loads((Path(out["output"]).parent / "stats.json").read_text())}
    for key, file in ((helpful, HELPFUL), (harmless, HARMLESS)):
        expected = _expected(shared_data / file)
        row = stats[key]
        assert row["rows_in"] == expected["rows_in"] == 500
        assert sum(json.loads(row["dropped"]).values()) == expected["dropped"]
        assert row["quarantined"] == expected["quarantined"]
        assert row["rows_in"] == row["pairs"] + expected["dropped"] + row["quarantined"]

    # The downloads: one per (source, split, files), each manifest naming the files it read.
    manifests = [json.loads(p.read_text()) for p in work.glob("raw/*/*/*/manifest.json")]
    read = sorted((m["source"], m["split"], m["files"], m.get("listed_files", [])) for m in manifests)
    root = shared_data.resolve()
    assert read == [
        ("hh-rlhf/harmless-base", "train", [str(root / HARMLESS)], [HARMLESS]),
        ("hh-rlhf/helpful-base", "test", [str(root / HELPFUL_TEST)], []),  # the mirror entry
        ("hh-rlhf/helpful-base", "test", [str(root / HELPFUL_TEST)], [HELPFUL_TEST]),  # the listed one
        ("hh-rlhf/helpful-base", "train", [str(root / HELPFUL)], [HELPFUL]),
    ]
    assert len({m["output"] for m in manifests}) == 4  # four download entries, none shared
    listed = [m for m in manifests if "listed_files" in m]
    assert all(m["revision"] == "listed files" and m["origin"] == str(root) for m in listed)


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize(
    ("files", "data", "fragment"),
    [
        (["extra/hh-rlhf-train-samples/nope.jsonl"], "mirror", "matches no file under the data dir"),
        (["../outside.jsonl"], "mirror", "outside the data dir"),
        ([HELPFUL], "hub", "--data-dir"),
    ],
    ids=["missing", "escaping", "hub"],
)
def test_bad_files_fail_the_flow_before_any_stage_runs(
    shared_data: Path, tmp_path: Path, files: list[str], data: str, fragment: str
) -> None:
    from flows.mixture import mixture_flow

    mirror = tmp_path / "mirror"
    (mirror / SAMPLES).mkdir(parents=True)
    shutil.copy(shared_data / HELPFUL, mirror / HELPFUL)
    (tmp_path / "outside.jsonl").write_text((shared_data / HELPFUL).read_text())
    recipe = _write_recipe(
        tmp_path / "recipe.yaml",
        [{"source": "hh-rlhf/harmless-base"}, {"source": "hh-rlhf/helpful-base", "files": files}],
    )
    work = tmp_path / "work"
    state = mixture_flow(
        recipe=str(recipe), data_dir=str(mirror) if data == "mirror" else "hub", work_dir=str(work),
        return_state=True,
    )
    assert state.is_failed()
    with pytest.raises(SourceFilesError) as info:
        state.result()
    message = str(info.value)
    assert fragment in message, message
    assert f"{recipe}: data.sources[1] (hh-rlhf/helpful-base/train/files-" in message  # the entry
    if data == "mirror":
        assert repr(files[0]) in message and str(mirror.resolve()) in message  # the path, the data dir
    assert task_states(state, settle_seconds=2) == {}  # no download, clean or mixture ran
    assert not (work / "raw").exists()


@pytest.mark.usefixtures("prefect_harness")
def test_changing_the_sample_bytes_changes_the_download_key_and_an_unchanged_rerun_is_cached(
    shared_data: Path, tmp_path: Path
) -> None:
    from flows.mixture import mixture_flow

    data = tmp_path / "data"
    shutil.copytree(shared_data / SAMPLES, data / SAMPLES)
    recipe = _write_recipe(tmp_path / "recipe.yaml", [{"source": "hh-rlhf/helpful-base", "files": [HELPFUL]}])
    args = {"recipe": str(recipe), "data_dir": str(data), "work_dir": str(tmp_path / "work")}
    key = SourceSpec("hh-rlhf/helpful-base", files=(HELPFUL,)).key
    names = {f"download hh-rlhf/helpful-base [train] from {HELPFUL}", f"clean {key}", "mixture files"}

    first = mixture_flow(**args, return_state=True)
    assert ran(first) == names
    result = first.result()
    assert result["mixture"]["counts"] == {key: 491}
    (raw_dir,) = [d["raw_dir"] for d in result["downloads"]]

    again = mixture_flow(**args, return_state=True)
    assert state_counts(again) == {"Cached": 3}
    assert [d["raw_dir"] for d in again.result()["downloads"]] == [raw_dir]

    sample = data / HELPFUL
    before = source_fingerprint("hh-rlhf/helpful-base", "train", data, (HELPFUL,))
    first, rest = sample.read_text().split("\n", 1)
    sample.write_text(first.replace("Human:", "Human: Hello.") + "\n" + rest)  # row 0's turns, both sides
    assert source_fingerprint("hh-rlhf/helpful-base", "train", data, (HELPFUL,)) != before
    changed = mixture_flow(**args, return_state=True)
    assert ran(changed) == names  # recomputed, not served from the old entry
    after = changed.result()
    (new_raw_dir,) = [d["raw_dir"] for d in after["downloads"]]
    assert Path(new_raw_dir).name != Path(raw_dir).name  # a new download key
    assert after["mixture"]["counts"] == {key: _expected(sample)["kept"]} == {key: 491}
    assert after["mixture"]["digest"] != result["mixture"]["digest"]
    assert os.path.exists(raw_dir)  # the old entry is left as it was
