"""Content-addressed caching for every stage.

A stage (``Stage``, declared once per stage) has a key: the digest of (stage name, its input
digests, its typed config, the fingerprint of the library code it runs, the work directory). The same key names the stage's output folder,
so a cache hit always points at outputs that exist: if the folder is gone, or no longer holds
what it published (``tasks.integrity``: every file's size and sha256, recorded before the
``_SUCCESS`` marker), the key function answers a fresh key and the stage recomputes into the
same folder.

Prefect's result records are read only after ``refused_result`` found them to be the plain
JSON rmflow writes: Prefect takes the serializer from each stored record, so a record rewritten
to say ``pickle`` would otherwise run code on the next cached rerun.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext

from rmcore.config import to_dict
from rmcore.fingerprint import code_fingerprint, rmcore_fingerprint
from tasks import integrity

DEFAULT_WORK_DIR = Path("runs")


def work_dir(value: str | os.PathLike[str] | None = None) -> Path:
    """The root of all stage outputs: argument, else $RMFLOW_WORK_DIR, else ./runs."""
    chosen = value or os.environ.get("RMFLOW_WORK_DIR") or DEFAULT_WORK_DIR
    return Path(chosen).expanduser().resolve()


def stage_key(stage: str, *, code: str | None = None, **material: Any) -> str:
    """The content key of one stage run (first 24 hex of a sha256): the stage's name, its key
    material (input digests, typed config) and ``code``, the fingerprint of the library code
    it runs (default: the whole library's)."""
    blob = json.dumps(
        {"stage": stage, "rmcore": code or rmcore_fingerprint(), **to_dict(material, keyed=True)}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Stage:
    """One cached pipeline stage, declared once; its task, its cache policy and its body all ask it.

    ``key_params``: the task parameters that are key material; ``folder``: where its outputs
    live under the work dir (the key is the last component); ``code``: the rmcore modules the
    stage runs (``rmcore.fingerprint.code_fingerprint``: they and what they import), so an edit
    elsewhere in the library does not invalidate it; ``intact``: the content check of a complete
    folder (a failed check rebuilds it), by default ``integrity.intact`` (every file as published).
    """

    name: str
    key_params: tuple[str, ...]
    folder: Callable[[Mapping[str, Any]], str | Path]
    code: tuple[str, ...]
    intact: Callable[[Path], bool] | None = integrity.intact

    def key(self, inputs: Mapping[str, Any]) -> str:
        """The key of a run with these task inputs (the task's parameters by name)."""
        material = {k: inputs.get(k) for k in self.key_params}
        return stage_key(self.name, code=code_fingerprint(*self.code), **material)

    def output_dir(self, inputs: Mapping[str, Any]) -> Path:
        return Path(inputs["work"]) / self.folder(inputs) / self.key(inputs)

    def task(self, **options: Any) -> Callable:
        """``prefect.task`` with this stage's name, cache policy and JSON results (options add to them)."""
        return task(
            name=self.name,
            cache_policy=StageCache(stage=self),
            persist_result=True,
            result_serializer="json",
            **options,
        )


@dataclass
class StageCache(CachePolicy):
    """Prefect cache policy of a ``Stage``: its key for the task's inputs; a hit needs the output
    folder complete (and intact), else a fresh key forces a rebuild into the same folder."""

    stage: Stage | None = None

    def compute_key(
        self, task_ctx: TaskRunContext, inputs: dict[str, Any], flow_parameters: dict[str, Any], **kwargs: Any
    ) -> str | None:
        key = self.stage.key(inputs)
        refused = refused_result(task_ctx.result_store, key)
        if refused:
            # Never handed to Prefect (it would deserialize it as the record says): a fresh key
            # makes the task run; its body serves or rebuilds the stage folder.
            integrity.run_logger().warning("Prefect result record %s refused (%s): not read", key, refused)
            return f"{key}-refused-{uuid.uuid4().hex}"
        out = self.stage.output_dir(inputs)
        output_gone = not is_usable(out, self.stage.intact)
        on_record = task_ctx.result_store is not None and task_ctx.result_store.exists(key)
        if output_gone and on_record:
            # A result is on record but its outputs were deleted or altered: a fresh key forces a rebuild.
            return f"{key}-rebuild-{uuid.uuid4().hex}"
        if on_record:
            # Prefect serves this task from its cache and runs no body: say what is reused.
            integrity.run_logger().info("%s: cached, reusing %s (key %s)", self.stage.name, out, key)
        return key


@functools.cache
def _written_serializer() -> dict:
    """The serializer field of every result record rmflow writes (``result_serializer="json"``)."""
    from prefect.serializers import JSONSerializer

    return JSONSerializer().model_dump(mode="json")


def _has_typed_objects(value: Any) -> bool:
    """Whether decoded JSON holds Prefect's typed-object markers (they import and build classes)."""
    if isinstance(value, dict):
        typed = {"__class__", "__exc_type__"} & value.keys()
        return bool(typed) or any(map(_has_typed_objects, value.values()))
    if isinstance(value, list):
        return any(map(_has_typed_objects, value))
    return False


def refused_result(store: Any, key: str) -> str | None:
    """Why the Prefect result record under ``key`` must not be read (None: there is none, or it is
    the plain JSON rmflow writes: its serializer exactly, a result of plain JSON values).

    Read as bytes and parsed here with ``json`` only, before Prefect sees it: Prefect's own
    ``exists``/``read`` deserialize with whatever serializer the record names (pickle included).
    """
    if store is None:
        return None
    if store.metadata_storage is not None:
        return "its metadata is stored apart, which rmflow never configures"
    from prefect._internal.compatibility.blocks import call_explicitly_sync_block_method
    from prefect.results import get_default_result_storage

    storage = store.result_storage or get_default_result_storage(_sync=True)
    try:
        content = call_explicitly_sync_block_method(storage, "read_path", (key,), {})
    except (OSError, ValueError):  # LocalFileSystem: ValueError when the path does not exist
        return None
    if content is None:
        return None
    try:
        record = json.loads(content)
        meta = record.get("metadata", record)  # Prefect's old format kept the serializer at the top
        serializer = meta.get("serializer")
        result = record.get("result", record.get("data"))
        payload = json.loads(result) if isinstance(result, str) else None
    except (ValueError, AttributeError) as e:
        return f"not a JSON result record ({type(e).__name__})"
    if serializer != _written_serializer():
        return f"serializer {serializer!r}, rmflow writes only {_written_serializer()['type']!r}"
    if not isinstance(result, str) or _has_typed_objects(payload):
        return "its result is not plain JSON values"
    return None


SUCCESS = integrity.SUCCESS


def is_complete(out_dir: Path) -> bool:
    """A stage folder is complete once its marker exists (written last, before publishing)."""
    return (out_dir / SUCCESS).exists()


def is_usable(out_dir: Path, intact: Callable[[Path], bool] | None = None) -> bool:
    """Complete, and (if given) ``intact(out_dir)`` confirms its content is what was written."""
    return is_complete(out_dir) and (intact is None or intact(out_dir))


def mark_complete(out_dir: Path) -> None:
    """Record what the folder holds (``_CONTENTS.json``), then its ``_SUCCESS`` marker."""
    integrity.write_contents(out_dir)
    (out_dir / SUCCESS).touch()


def set_aside(out_dir: Path) -> None:
    """Remove a damaged stage folder: moved aside by one rename (readers see the old folder or
    none, never a mix), then deleted (a temp name, swept if we die mid-delete)."""
    import shutil

    from rmcore import io

    stale = io.owned_temp_name(out_dir, f"stale-{uuid.uuid4().hex}")
    try:
        os.rename(out_dir, stale)
    except FileNotFoundError:
        return  # a concurrent run moved it first
    shutil.rmtree(stale, ignore_errors=True)


def build_once(
    out_dir: Path, build: Callable[[Path], Any], intact: Callable[[Path], bool] | None = integrity.intact
) -> None:
    """Unless ``out_dir`` is complete (and ``intact``), run ``build(tmp)`` in a temp folder, mark it
    complete and publish it as ``out_dir`` by one rename (a concurrent identical build keeps the first).

    A complete folder that fails ``intact`` is moved aside and deleted first, so it is rebuilt.
    """
    from rmcore import io

    if is_complete(out_dir):
        if intact is None or intact(out_dir):
            return
        set_aside(out_dir)
    with io.atomic_dir(out_dir) as tmp:
        build(tmp)
        mark_complete(tmp)
