"""Training checkpoints: everything needed to continue as if never stopped.

A checkpoint folder ``<checkpoints>/step-<N>/`` holds the model weights
(``model.safetensors``), ``training_state.pt`` (optimizer, scheduler, torch RNG; read with
``weights_only=True``: tensors and plain containers only, never arbitrary pickles) and
``trainer_state.json`` (step, config hash). The data position is the step: the batch plan
is a pure function of the seed, so step N names the next batch exactly. A checkpoint is
written to a temporary folder and renamed, so a crash never leaves a half checkpoint.
DeepSpeed runs use the engine's own checkpoint format in the same folder layout.

``trainer_state.json`` (written last) also lists every other file of the checkpoint with its
size and sha256. Resume trusts nothing on disk: a checkpoint whose files no longer match (a
truncated or lost file, a damaged disk) is skipped with a warning and the previous complete one
is used (``latest_checkpoint``).
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from rmcore.io import file_sha256

log = logging.getLogger(__name__)

STATE_JSON = "trainer_state.json"


def checkpoint_dir(root: Path, step: int) -> Path:
    return root / f"step-{step:07d}"


def _file_list(folder: Path) -> dict[str, dict[str, Any]]:
    """Every file of a checkpoint folder but the trainer state: relative path -> size, sha256."""
    return {
        p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": file_sha256(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != STATE_JSON
    }


def _structure_problems(path: Path) -> list[str]:
    """For a checkpoint written before files were listed: its weights and state must load."""
    try:
        if (path / "model.safetensors").exists():
            load_file(str(path / "model.safetensors"))
        if (path / "training_state.pt").exists():
            torch.load(path / "training_state.pt", weights_only=True)
    except Exception as e:  # noqa: BLE001 - safetensors, torch and the OS raise their own kinds
        return [f"does not load ({type(e).__name__}: {str(e)[:160]})"]
    return []


def checkpoint_problems(path: Path) -> list[str]:
    """How the checkpoint at ``path`` differs from what was written (empty: usable)."""
    try:
        saved = json.loads((path / STATE_JSON).read_text())
    except (OSError, ValueError) as e:
        return [f"{STATE_JSON} unreadable ({type(e).__name__})"]
    files = saved.get("files")
    if files is None:
        return _structure_problems(path)
    problems = []
    for rel, entry in files.items():
        file = path / rel
        if not file.is_file():
            problems.append(f"{rel} missing")
        elif file.stat().st_size != entry["size"]:
            problems.append(f"{rel} is {file.stat().st_size} bytes, written {entry['size']}")
        elif file_sha256(file) != entry["sha256"]:
            problems.append(f"{rel} differs from what was written (sha256)")
    return problems


def latest_checkpoint(root: Path, *, config_hash: str | None = None) -> Path | None:
    """The newest complete, undamaged checkpoint under ``root`` (matching ``config_hash`` if given);
    a damaged newer one is skipped, saying so (training resumes from the previous one)."""
    if not root.exists():
        return None
    damaged: list[Path] = []
    for path in sorted(root.glob("step-*"), reverse=True):
        state = path / STATE_JSON
        if not state.exists():
            continue
        problems = checkpoint_problems(path)
        if problems:
            log.warning("checkpoint %s is damaged, not resuming from it: %s", path, "; ".join(problems[:3]))
            damaged.append(path)
            continue
        saved = json.loads(state.read_text())
        if config_hash is not None and saved.get("config_hash") != config_hash:
            log.warning(
                "ignoring checkpoint %s: made with another config (%s)", path, saved.get("config_hash")
            )
            continue
        if damaged:
            log.warning("resuming from the previous complete checkpoint %s instead", path)
        return path
    if damaged:
        log.warning("no undamaged checkpoint left under %s: training starts over", root)
    return None


def _write_state(tmp: Path, state: dict[str, Any]) -> None:
    """The trainer state, written last: with the list of the checkpoint's other files."""
    blob = {**state, "files": _file_list(tmp)}
    (tmp / STATE_JSON).write_text(json.dumps(blob, indent=2, sort_keys=True) + "\n")


def _publish(tmp: Path, final: Path, root: Path, keep: int) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    old = sorted(root.glob("step-*"))[:-keep] if keep > 0 else []
    for path in old:
        shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(
    root: Path,
    step: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write model, optimizer, scheduler, RNG and ``state`` (JSON-able) for ``step``."""
    final = checkpoint_dir(root, step)
    tmp = root / f".tmp-step-{step:07d}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    weights = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
        },
        tmp / "training_state.pt",
    )
    _write_state(tmp, {**state, "step": step})
    _publish(tmp, final, root, keep)
    log.info("checkpoint written: %s", final)
    return final


def load_checkpoint(
    path: Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any
) -> dict[str, Any]:
    """Restore model, optimizer, scheduler and RNG from ``path``; return its trainer state."""
    model.load_state_dict(load_file(str(path / "model.safetensors")))
    try:
        blob = torch.load(path / "training_state.pt", weights_only=True)
    except pickle.UnpicklingError as e:
        raise RuntimeError(
            f"{path / 'training_state.pt'}: refused to resume from it: it holds objects other than "
            "tensors and plain containers (loading them could run code), so rmflow did not write it. "
            f"Delete {path} to resume from an earlier checkpoint or start over. ({str(e)[:200]})"
        ) from e
    optimizer.load_state_dict(blob["optimizer"])
    scheduler.load_state_dict(blob["scheduler"])
    torch.set_rng_state(blob["rng_cpu"])
    state = json.loads((path / STATE_JSON).read_text())
    log.info("resumed from %s (step %d)", path, state["step"])
    return state


def save_deepspeed_checkpoint(
    root: Path, step: int, *, engine: Any, state: dict[str, Any], keep: int = 2
) -> Path:
    """DeepSpeed engine checkpoint (sharded optimizer state) + our trainer state.

    Collective: every rank calls it and writes its own shards into the same temporary folder
    (``root`` must be on a file system all ranks share); rank 0 alone creates the folder,
    writes ``trainer_state.json`` and publishes it by rename once all shards are written.
    """
    from rmcore.train import distributed as dist

    final = checkpoint_dir(root, step)
    tmp = root / f".tmp-step-{step:07d}"
    if dist.is_main():
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    dist.barrier()
    engine.save_checkpoint(str(tmp), tag="ds", client_state={"rng_cpu": torch.get_rng_state()})
    dist.barrier()  # every rank's shards are on disk
    if dist.is_main():
        _write_state(tmp, {**state, "step": step})
        _publish(tmp, final, root, keep)
    dist.barrier()  # nobody goes on (or resumes) before the checkpoint is published
    return final


def load_deepspeed_checkpoint(path: Path, *, engine: Any) -> dict[str, Any]:
    _, client = engine.load_checkpoint(str(path), tag="ds")
    if client and "rng_cpu" in client:
        torch.set_rng_state(client["rng_cpu"])
    return json.loads((path / STATE_JSON).read_text())
