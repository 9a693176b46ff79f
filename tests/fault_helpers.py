"""Fault injection for the kill -9 and concurrency tests: real child processes, real signals.

A stage runs in a child process (``python tests/fault_helpers.py CONFIG_JSON``) that first
wraps one named function (``module:attr.path``) with a hook, then calls the real flow.
The hook fires at the N-th call with a path argument containing ``match``:

- ``kill-before`` / ``kill-after``: SIGKILL the process before / after the real call;
- ``torn``: make the real call, cut the file it wrote (argument ``path_arg``) to half its
  size, then SIGKILL (a write torn by a crash);
- ``torn-pause``: the same cut, then pause (a writer caught mid-file by a reader);
- ``pause-before`` / ``pause-after``: create ``<signal>.reached`` and wait for
  ``<signal>.go`` (lets a test interleave two processes at exact points).

No mocks: the stage code, Prefect API and MLflow store are the real ones; only the moment
of death is chosen.
"""

from __future__ import annotations

import functools
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SUCCESS = "_SUCCESS"
MODES = ("kill-before", "kill-after", "torn", "torn-pause", "pause-before", "pause-after")


# --- inside the child ---------------------------------------------------------------------


def _resolve(target: str) -> tuple[Any, str]:
    """``"pkg.module:Cls.attr"`` -> (owner object, attribute name)."""
    module_name, _, attr_path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = attr_path.split(".")
    for part in parents:
        owner = getattr(owner, part)
    return owner, name


def _wait_for(path: Path, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} never appeared")
        time.sleep(0.05)


def _die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


def install_hook(
    target: str,
    mode: str,
    nth: int = 1,
    match: str | list[str] | None = None,
    path_arg: int = 1,
    signal_path: str | None = None,
) -> None:
    """Wrap ``target`` so that its ``nth`` call with a path argument containing ``match`` (a
    substring, or a list of substrings all in the same path) triggers ``mode``."""
    if mode not in MODES:
        raise ValueError(f"hook mode {mode!r}: use one of {MODES}")
    owner, name = _resolve(target)
    real = getattr(owner, name)
    wanted = [match] if isinstance(match, str) else list(match or [])
    calls = {"n": 0}

    @functools.wraps(real)
    def hooked(*args: Any, **kwargs: Any) -> Any:
        if match is not None and not any(all(m in str(a) for m in wanted) for a in _path_args(args, kwargs)):
            return real(*args, **kwargs)
        calls["n"] += 1
        if calls["n"] != nth:
            return real(*args, **kwargs)
        if mode == "kill-before":
            _die()
        if mode == "pause-before":
            _pause(signal_path)
        result = real(*args, **kwargs)
        if mode in ("torn", "torn-pause"):
            _tear(Path(args[path_arg]) if len(args) > path_arg else Path(kwargs["f"]))
            if mode == "torn":
                _die()
            _pause(signal_path)
        if mode == "kill-after":
            _die()
        if mode == "pause-after":
            _pause(signal_path)
        return result

    setattr(owner, name, hooked)  # on a class, a plain function is still bound as a method


def _tear(path: Path) -> None:
    """Cut a just-written file to half its size (what a crash mid-write leaves)."""
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.truncate(size // 2)
        f.flush()
        os.fsync(f.fileno())


def _path_args(args: tuple, kwargs: dict) -> list:
    return [a for a in (*args, *kwargs.values()) if isinstance(a, (str, os.PathLike))]


def _pause(signal_path: str | None) -> None:
    assert signal_path, "pause hooks need signal_path"
    Path(f"{signal_path}.reached").touch()
    _wait_for(Path(f"{signal_path}.go"))


def child_main(config: dict) -> None:
    """Install the hooks, call ``config["call"]`` with ``config["kwargs"]``, write its result."""
    sys.path[:0] = [str(ROOT), str(TESTS)]
    for hook in config.get("hooks", []):
        install_hook(**hook)
    owner, name = _resolve(config["call"])
    result = getattr(owner, name)(**config.get("kwargs", {}))
    if config.get("result_path"):
        Path(config["result_path"]).write_text(json.dumps(result, default=str))


# --- in the test process ------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """The test process's (isolated) environment + the Prefect API it uses + ``extra``; MLflow
    store URIs only from ``extra`` (MLflow exports the last ones this process used)."""
    import prefect.settings

    env = dict(os.environ)
    for var in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI"):  # MLflow exports these when set
        env.pop(var, None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(TESTS), env.get("PYTHONPATH", "")])
    api = prefect.settings.PREFECT_API_URL.value()
    if api:
        env["PREFECT_API_URL"] = api
    env.update(extra)
    return env


def start_child(config: dict, env: dict[str, str], log_path: Path) -> subprocess.Popen:
    """Start ``child_main(config)`` in a fresh Python process; stdout+stderr go to ``log_path``."""
    log = open(log_path, "wb")  # noqa: SIM115 - closed by the OS when the child ends
    return subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), json.dumps(config)],
        env=env,
        cwd=str(ROOT),
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def run_child(config: dict, env: dict[str, str], log_path: Path, timeout: float = 600) -> int:
    """Run a child to its end; return its exit status (``-9`` when the hook killed it)."""
    proc = start_child(config, env, log_path)
    try:
        return proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


def wait_reached(signal_path: Path, proc: subprocess.Popen, log_path: Path, timeout: float = 300) -> None:
    """Wait until a pause hook was reached (fail early if the child died first)."""
    deadline = time.monotonic() + timeout
    reached = Path(f"{signal_path}.reached")
    while not reached.exists():
        if proc.poll() is not None:
            raise AssertionError(
                f"child ended ({proc.returncode}) before {reached}:\n{log_path.read_text()[-3000:]}"
            )
        if time.monotonic() > deadline:
            raise AssertionError(f"{reached} not reached in {timeout}s")
        time.sleep(0.05)


def release(signal_path: Path) -> None:
    Path(f"{signal_path}.go").touch()


# --- invariants ---------------------------------------------------------------------------


def is_temp_name(rel: Path) -> bool:
    """Temp names: dot-prefixed (``.x.tmp``, ``.tmp-step-N``), ``<key>.partial``, ``.lock``."""
    return any(p.startswith(".") or p.endswith((".partial", ".lock")) for p in rel.parts)


def visible_unmarked_files(work: Path) -> list[str]:
    """Files at final (non-temp) names under ``work`` that no complete stage folder holds.

    A stage publishes its folder (with ``_SUCCESS``) by one rename, so every visible file
    must sit under a folder holding the marker; anything else is a partial output.
    """
    bad = []
    for f in sorted(work.rglob("*")):
        rel = f.relative_to(work)
        if not f.is_file() or is_temp_name(rel):
            continue
        if not any((a / SUCCESS).exists() for a in f.parents if a == work or work in a.parents):
            bad.append(str(rel))
    return bad


def stage_dirs(work: Path, stage: str) -> list[Path]:
    """Published (non-temp) key folders of one stage: ``raw``/``clean`` are 3 deep, ``mixtures`` 2."""
    depth = {"raw": 3, "clean": 3, "mixtures": 2, "eval": 1, "models": 1, "leaderboards": 1}[stage]
    root = work / stage
    if not root.exists():
        return []
    found = root.glob("/".join(["*"] * depth))
    return sorted(p for p in found if p.is_dir() and not is_temp_name(p.relative_to(work)))


VOLATILE_COLUMNS = ("fetched_at", "output", "origin")
"""Manifest columns that differ between two equal runs: fetch time, folders read and written."""


def table_digests(folder: Path) -> dict[str, str]:
    """Relative path -> content digest of every Parquet table under ``folder`` (volatile
    columns left out)."""
    from rmcore import io

    out = {}
    for p in sorted(folder.rglob("*.parquet")):
        if not is_temp_name(p.relative_to(folder)):
            table = io.read_table(p)
            table = table.drop_columns([c for c in VOLATILE_COLUMNS if c in table.column_names])
            out[str(p.relative_to(folder))] = io.table_digest(table)
    return out


def stage_digests(work: Path) -> dict[str, list[dict[str, str]]]:
    """Per stage place (the folder path without its work-dependent key): the table digests of
    every published key folder there, sorted. Two equal runs give equal answers; a key
    folder published twice would show up twice."""
    out: dict[str, list[dict[str, str]]] = {}
    for stage in ("raw", "clean", "mixtures", "eval"):
        for d in stage_dirs(work, stage):
            name = "/".join(d.relative_to(work).parts[:-1])  # drop the key (it contains the work dir)
            out.setdefault(name, []).append(table_digests(d))
    return {k: sorted(v, key=lambda d: json.dumps(d, sort_keys=True)) for k, v in out.items()}


def merged_digests(*runs: dict[str, list[dict[str, str]]]) -> dict[str, list[dict[str, str]]]:
    """What one work dir should hold after several runs: each distinct key folder once."""
    out: dict[str, list[dict[str, str]]] = {}
    for run in runs:
        for name, entries in run.items():
            for entry in entries:
                if entry not in out.setdefault(name, []):
                    out[name].append(entry)
    return {k: sorted(v, key=lambda d: json.dumps(d, sort_keys=True)) for k, v in out.items()}


def weight_tensors(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(model_dir) / "model.safetensors"))


def same_weights(a: Path, b: Path) -> bool:
    import torch

    wa, wb = weight_tensors(a), weight_tensors(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def weight_distance(a: Path, b: Path) -> float:
    """Largest absolute difference over all weights (inf if the tensor names differ)."""
    wa, wb = weight_tensors(a), weight_tensors(b)
    if wa.keys() != wb.keys():
        return float("inf")
    return max(float((wa[k].double() - wb[k].double()).abs().max()) for k in wa)


if __name__ == "__main__":
    child_main(json.loads(sys.argv[1]))
