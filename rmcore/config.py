"""Typed configuration: frozen dataclasses built from YAML/dicts, with strict key checks.

``from_mapping`` refuses unknown keys and wrong types before any work starts, naming
the key, what was expected and where it came from. ``config_hash`` is the stable digest
used in cache keys.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar, get_args, get_origin, get_type_hints

import yaml

T = TypeVar("T")

PROJECT_ROOT = Path(__file__).resolve().parent.parent
"""The checkout: shipped recipes name files relative to it (deployments/deepspeed/zero3.json)."""
ALLOWED_ROOTS_ENV = "RMFLOW_ALLOWED_ROOTS"
"""Extra folders (os.pathsep-separated) that paths inside recipes and configs may point into."""


class ConfigError(ValueError):
    """A recipe or config is invalid; the message names the key and the fix."""


def allowed_roots(*extra: str | Path) -> tuple[Path, ...]:
    """Folders a path written inside a recipe/config may resolve into: the project and ``extra``
    (the recipe's own folder, and what the caller's environment adds: ``env_roots``). Paths
    given on the command line are the user's own and are not checked."""
    return tuple(dict.fromkeys(Path(r).expanduser().resolve() for r in (PROJECT_ROOT, *extra)))


def env_roots(env: Mapping[str, str]) -> tuple[str, ...]:
    """The folders an environment allows besides the project: $RMFLOW_WORK_DIR, $RMFLOW_DATA_DIR
    (unless "hub") and $RMFLOW_ALLOWED_ROOTS (os.pathsep-separated). rmcore reads no environment:
    the edges (CLI commands, flows) pass ``os.environ`` here."""
    roots = [env[v] for v in ("RMFLOW_WORK_DIR", "RMFLOW_DATA_DIR") if env.get(v, "hub") not in ("hub", "")]
    return (*roots, *(p for p in env.get(ALLOWED_ROOTS_ENV, "").split(os.pathsep) if p))


def looks_like_path(value: str) -> bool:
    """A local path rather than a hub id (``google/gemma-2b-it``) or an alias."""
    return value.startswith(("/", ".", "~")) or ".." in Path(value).parts


def confined_path(value: str, *, where: str, base: Path, roots: tuple[Path, ...]) -> Path:
    """``value`` (relative to ``base``) resolved, symlinks followed; ConfigError unless under a root.

    Keeps a recipe from reading or writing outside the project's folders with ``..``, an
    absolute path or a symlink that escapes.
    """
    path = Path(value).expanduser()
    resolved = (path if path.is_absolute() else base / path).resolve()
    if any(resolved.is_relative_to(root) for root in roots):
        return resolved
    raise ConfigError(
        f"{where}: {value!r} resolves to {resolved}, outside the folders a recipe may use "
        f"({', '.join(map(str, roots))}). Fix: move the file under one of them, or add its folder to "
        f"${ALLOWED_ROOTS_ENV} (separated by {os.pathsep!r})"
    )


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arm in get_args(tp):
            if arm is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, arm, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: must not be null")
    if origin is typing.Literal:
        if value not in get_args(tp):
            raise ConfigError(f"{where}: {value!r} is not one of {list(get_args(tp))}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return from_mapping(tp, value, where=where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {type(value).__name__}")
        (arm, *_) = get_args(tp) or (Any,)
        return tuple(_check_type(v, arm, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {type(value).__name__}")
        return dict(value)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_mapping(cls: type[T], data: dict[str, Any] | None, *, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``data``; unknown keys and wrong types raise ConfigError."""
    data = dict(data or {})
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        moved = getattr(cls, "MOVED_KEYS", {})
        hint = "; ".join(f"{k!r} is now {moved[k]!r}" for k in unknown if k in moved)
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(map(repr, unknown))}; "
            + (f"{hint} (keys are grouped: see rmcore/train/config.py)" if hint else f"valid keys: {', '.join(sorted(fields))}")
        )
    kwargs = {name: _check_type(value, hints[name], f"{where}.{name}") for name, value in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:  # a required key is missing
        raise ConfigError(f"{where}: {e}") from None
    except ConfigError as e:  # a value check in __post_init__: say where it came from
        raise ConfigError(f"{where}: {e}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such recipe/config file") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


PLACEMENT = {"placement": True}
"""Field metadata of a setting that says where work runs, not what it computes (a work pool, a
process count, a launcher): ``to_dict(keyed=True)`` and so ``config_hash`` and the stage keys leave
it out, so moving training to another pool or to N processes reuses the cached model."""


def to_dict(obj: Any, *, keyed: bool = False) -> Any:
    """Plain data of a (nested) config; ``keyed``: without PLACEMENT fields (the cache-key view)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {
            f.name: to_dict(getattr(obj, f.name), keyed=keyed)
            for f in dataclasses.fields(obj)
            if not (keyed and f.metadata.get("placement"))
        }
    if isinstance(obj, (list, tuple)):
        return [to_dict(v, keyed=keyed) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v, keyed=keyed) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


def config_hash(obj: Any) -> str:
    """Stable sha256 (first 16 hex) of a config's canonical JSON."""
    blob = json.dumps(to_dict(obj, keyed=True), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
