"""Download faults: dropped connections, truncated transfers, corrupt files, changed bytes.

What must hold: the download task's retries survive transient faults (the result equals
the real file's rows); a source failing for good ends with an error naming it; a truncated
gzip or Parquet file and a raw.parquet whose sha256 no longer matches its manifest are
detected and refetched or reported naming the file, never used.

The hub is replaced by ``FlakyHub``, a stand-in for ``datasets.load_dataset`` that fails as
scripted and then serves a local file through the REAL ``datasets`` loader (so a truncated
transfer fails the way a real one does). Prefect is real (ephemeral API); the retry delay
is set to 0 with ``with_options`` where a test would otherwise wait for the backoff.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from flow_helpers import task_states
from prefect import flow

from rmcore import io
from rmcore.data.sample_data import write_sample_mirror
from rmcore.data.sources.base import CleanOptions
from rmcore.data.sources.catalog import get_adapter
from rmcore.data.sources.mirror import CorruptSourceFile, SourceNotFound
from rmcore.data.sources.tables import SOURCE_ROW
from rmcore.data.stages import ChecksumMismatch, clean_downloaded, download_source, source_fingerprint

pytestmark = pytest.mark.usefixtures("prefect_harness")

ROWS = 40
"""Generated rows per source (train split)."""
HELPSTEER = "nvidia/HelpSteer/train.jsonl.gz"
ORCA = "argilla/distilabel-intel-orca-dpo-pairs/data/train-generated.parquet"
PKU = "PKU-Alignment/PKU-SafeRLHF/train.jsonl"


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_sample_mirror(tmp_path_factory.mktemp("generated"), rows_per_source=ROWS, seed=7)


@pytest.fixture
def mirror(generated: Path, tmp_path: Path) -> Path:
    """A private copy (tests damage files in it) holding HelpSteer, Orca and PKU-SafeRLHF train."""
    out = tmp_path / "mirror"
    for rel in (HELPSTEER, ORCA, PKU):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(generated / rel, out / rel)
    return out


def helpsteer_rows(mirror: Path) -> list[dict]:
    with gzip.open(mirror / HELPSTEER, "rt") as f:
        return [json.loads(line) for line in f if line.strip()]


def raw_rows(raw_dir: Path) -> list[dict]:
    return io.read_table(Path(raw_dir) / "raw.parquet").drop_columns([SOURCE_ROW]).to_pylist()


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


class FlakyHub:
    """Stands in for ``datasets.load_dataset`` over the network.

    Each call for a file that exists in ``snapshot`` (laid out ``<hub id>/<path>``) takes
    the next scripted outcome: ``"connection"`` raises ConnectionError, ``"truncated"``
    feeds the real loader the first half of the file, ``"ok"`` (also once the script is
    used up, unless ``forever``) serves the whole file through the real loader.
    """

    def __init__(self, snapshot: Path, script: list[str], scratch: Path, forever: str | None = None) -> None:
        import datasets

        self.real = datasets.load_dataset
        self.snapshot, self.script, self.scratch, self.forever = snapshot, list(script), scratch, forever
        self.calls: list[str] = []

    def __call__(self, path: str, *, data_files: dict[str, str], split: str, revision: str):
        pattern = data_files[split]
        files = sorted((self.snapshot / path).glob(pattern))
        if not files:
            raise FileNotFoundError(f"{path}@{revision}: no file matches {pattern}")
        self.calls.append(pattern)
        outcome = self.script.pop(0) if self.script else (self.forever or "ok")
        if outcome == "connection":
            raise ConnectionError(f"connection to huggingface.co reset while fetching {path}/{pattern}")
        if outcome == "truncated":
            cut = self.scratch / f"attempt-{len(self.calls)}" / files[0].name
            cut.parent.mkdir(parents=True)
            shutil.copy(files[0], cut)
            truncate(cut)
            files = [cut]
        builder = "parquet" if pattern.endswith(".parquet") else "json"
        return self.real(builder, data_files={split: [str(f) for f in files]}, split=split)


@pytest.fixture
def flaky_hub(monkeypatch: pytest.MonkeyPatch, mirror: Path, tmp_path: Path):
    """Install a FlakyHub over ``mirror``: ``flaky_hub(script, forever=None)`` returns it."""
    import datasets

    def install(script: list[str], forever: str | None = None) -> FlakyHub:
        hub = FlakyHub(mirror, script, tmp_path / "scratch", forever)
        monkeypatch.setattr(datasets, "load_dataset", hub)
        return hub

    return install


@flow(name="fault-download")
def fetch(source: str, data_dir: str | None, work: str) -> dict:
    """The real download task with its real retry count; only the backoff delay is 0."""
    from tasks.data import download_task

    digest = source_fingerprint(source, "train", Path(data_dir) if data_dir else None)
    return download_task.with_options(retry_delay_seconds=0)(source, "train", data_dir, digest, work)


@pytest.fixture
def attempts(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Source names, one per download attempt: each call of the real reader (mirror or hub) is recorded."""
    from rmcore.data.sources import mirror as mirror_module

    real, calls = mirror_module.read_raw, []

    def recorded(adapter, split, data_dir, **kwargs):
        calls.append(adapter.name)
        return real(adapter, split, data_dir, **kwargs)

    monkeypatch.setattr(mirror_module, "read_raw", recorded)
    return calls


def published(work: Path) -> list[Path]:
    """Every file under ``work`` that a later stage could pick up (not temp folders)."""
    return sorted(p for p in work.rglob("*") if p.is_file() and not any(s.startswith(".") for s in p.parts))


# --- transient faults: retries ---------------------------------------------------------------


def test_two_dropped_connections_then_success_completes_with_every_row(
    flaky_hub, mirror: Path, tmp_path: Path
):
    hub = flaky_hub(["connection", "connection"])
    result = fetch("helpsteer", None, str(tmp_path / "work"))
    assert hub.calls == ["train.jsonl.gz"] * 3  # 2 failures + the good attempt
    assert result["rows"] == ROWS
    assert raw_rows(result["raw_dir"]) == helpsteer_rows(mirror)
    assert io.file_sha256(Path(result["raw_dir"]) / "raw.parquet") == result["digest"]


def test_a_truncated_transfer_is_not_used_and_the_retry_gets_the_whole_file(
    flaky_hub, mirror: Path, tmp_path: Path
):
    hub = flaky_hub(["truncated"])
    result = fetch("helpsteer", None, str(tmp_path / "work"))
    assert hub.calls == ["train.jsonl.gz"] * 2
    assert result["rows"] == ROWS
    assert raw_rows(result["raw_dir"]) == helpsteer_rows(mirror)


def test_a_source_that_never_answers_fails_naming_it_and_publishes_nothing(flaky_hub, tmp_path: Path):
    hub = flaky_hub([], forever="connection")
    work = tmp_path / "work"
    with pytest.raises(SourceNotFound) as failure:
        fetch("helpsteer", None, str(work))
    assert hub.calls == ["train.jsonl.gz"] * 4  # the first attempt + 3 retries
    message = str(failure.value)
    revision = get_adapter("helpsteer").revision  # pinned
    assert message.startswith(f"helpsteer: could not load nvidia/HelpSteer@{revision} train.jsonl.gz")
    assert "connection to huggingface.co reset" in message
    assert published(work) == []


def test_download_flow_from_the_hub_rides_out_a_dropped_connection_with_its_own_backoff(
    flaky_hub, mirror: Path, tmp_path: Path
):
    """The shipped flow and task settings (backoff 2 s +- 50% before the first retry)."""
    from flows.download import download_flow

    hub = flaky_hub(["connection"])
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "hubfault", "data": {"sources": [{"source": "helpsteer"}]}}))
    state = download_flow(
        recipe=str(recipe), data_dir="hub", work_dir=str(tmp_path / "work"), return_state=True
    )
    result = state.result()
    assert hub.calls == ["train.jsonl.gz"] * 2
    assert task_states(state) == {"download helpsteer [train]": "Completed"}
    [download] = result["downloads"]
    assert download["rows"] == ROWS
    assert raw_rows(download["raw_dir"]) == helpsteer_rows(mirror)


def test_the_download_manifest_names_the_published_raw_parquet_not_the_temp_build(
    mirror: Path, tmp_path: Path
):
    """The stage builds in ``.<key>.*.tmp`` and renames it: the manifest must name the final file."""
    work = tmp_path / "work"
    result = fetch("helpsteer", str(mirror), str(work))
    raw_dir = Path(result["raw_dir"])
    [row] = io.read_table(raw_dir / "manifest.parquet").to_pylist()
    recorded = {io.read_json(raw_dir / "manifest.json")["output"], row["output"]}
    assert recorded == {str(raw_dir / "raw.parquet")}
    assert Path(row["output"]).is_file() and io.file_sha256(row["output"]) == result["digest"]
    assert not any(part.startswith(".") for part in Path(row["output"]).relative_to(work).parts)


# --- corrupt mirror files: reported naming the file, never used --------------------------------


@pytest.mark.parametrize(("source", "rel"), [("helpsteer", HELPSTEER), ("orca", ORCA)])
def test_a_truncated_mirror_file_is_reported_by_name_and_nothing_is_written(
    mirror: Path, tmp_path: Path, source: str, rel: str
):
    truncate(mirror / rel)
    out = tmp_path / "raw"
    with pytest.raises(CorruptSourceFile) as failure:
        download_source(source, "train", mirror, out)
    assert str(failure.value).startswith(f"{mirror / rel}: cannot be read, the file is truncated or corrupt")
    assert not out.exists()


def test_a_plain_jsonl_cut_mid_line_keeps_the_whole_rows_and_quarantines_the_torn_one(
    mirror: Path, tmp_path: Path
):
    """Uncompressed JSON lines have no end marker: the torn last line is quarantined by name."""
    lines = (mirror / PKU).read_bytes().split(b"\n")
    torn = lines[20][: len(lines[20]) // 2]
    (mirror / PKU).write_bytes(b"\n".join([*lines[:20], torn]))
    manifest = download_source("pku-saferlhf", "train", mirror, tmp_path / "raw")
    assert manifest["rows"] == 21
    assert io.read_table(tmp_path / "raw" / "raw.parquet").num_rows == 20
    [bad] = io.read_table(tmp_path / "raw" / "bad_rows.parquet").to_pylist()
    assert bad["source_row"] == 20
    assert bad["reason"].startswith("invalid_json: train.jsonl line 21: ")
    assert bad["raw"] == torn.decode()


def test_download_task_on_a_truncated_gzip_fails_by_name_then_completes_once_refetched(
    generated: Path, mirror: Path, tmp_path: Path, attempts: list[str]
):
    work = tmp_path / "work"
    truncate(mirror / HELPSTEER)
    with pytest.raises(CorruptSourceFile, match=f"^{mirror / HELPSTEER}: cannot be read"):
        fetch("helpsteer", str(mirror), str(work))
    assert attempts == ["helpsteer"]  # a corrupt file does not heal: no retry
    assert published(work) == []

    shutil.copy(generated / HELPSTEER, mirror / HELPSTEER)  # the file fetched again, whole
    result = fetch("helpsteer", str(mirror), str(work))
    assert attempts == ["helpsteer"] * 2
    assert result["rows"] == ROWS
    assert raw_rows(result["raw_dir"]) == helpsteer_rows(mirror)


@pytest.mark.parametrize(
    ("source", "damage", "error"),
    [("orca", "truncated", CorruptSourceFile), ("shp", "absent", SourceNotFound)],
)
def test_a_permanent_mirror_error_fails_the_task_at_its_first_attempt(
    mirror: Path, tmp_path: Path, attempts: list[str], source: str, damage: str, error: type
):
    """A truncated Parquet file or a split with no files fails the same way every time: no retries."""
    if damage == "truncated":
        truncate(mirror / ORCA)
    state = fetch(source, str(mirror), str(tmp_path / "work"), return_state=True)
    with pytest.raises(error):
        state.result()
    assert attempts == [source]
    assert task_states(state) == {f"download {source} [train]": "Failed"}


# --- raw.parquet changed after download: checked against the manifest sha256 -------------------


def tamper(raw: Path, how: str) -> None:
    if how == "truncated":
        truncate(raw)
    else:  # a valid Parquet file with one row fewer: only the checksum can tell
        table = pq.read_table(raw)
        pq.write_table(table.slice(0, table.num_rows - 1), raw)


@pytest.mark.parametrize("how", ["truncated", "row-removed"])
def test_clean_refuses_a_raw_parquet_whose_sha256_differs_from_its_manifest(
    mirror: Path, tmp_path: Path, how: str
):
    raw_dir, out = tmp_path / "raw", tmp_path / "clean"
    manifest = download_source("helpsteer", "train", mirror, raw_dir)
    tamper(raw_dir / "raw.parquet", how)
    with pytest.raises(ChecksumMismatch) as failure:
        clean_downloaded("helpsteer", "train", raw_dir, CleanOptions(), out)
    message = str(failure.value)
    assert message.startswith(f"{raw_dir / 'raw.parquet'}: sha256 ")
    assert f"does not match {manifest['sha256']} recorded in {raw_dir / 'manifest.json'}" in message
    assert not out.exists()


def test_download_cache_refetches_a_raw_parquet_changed_after_download(mirror: Path, tmp_path: Path):
    from flows.download import download_flow

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"name": "sha", "data": {"sources": [{"source": "helpsteer"}]}}))
    args = {"recipe": str(recipe), "data_dir": str(mirror), "work_dir": str(tmp_path / "work")}
    name = "download helpsteer [train]"

    first = download_flow(**args, return_state=True)
    [download] = first.result()["downloads"]
    raw = Path(download["raw_dir"]) / "raw.parquet"
    good = raw.read_bytes()
    assert task_states(first) == {name: "Completed"}

    tamper(raw, "row-removed")
    second = download_flow(**args, return_state=True)
    assert task_states(second) == {name: "Completed"}  # refetched, not served from cache
    assert second.result()["downloads"] == [download]
    assert raw.read_bytes() == good
    assert raw_rows(raw.parent) == helpsteer_rows(mirror)

    third = download_flow(**args, return_state=True)
    assert task_states(third) == {name: "Cached"}
