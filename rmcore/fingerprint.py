"""The code a cache key sees: release version + a digest of the library source a stage runs.

A Prefect task's own source hash does not see changes inside rmcore, so every cache key
includes a code fingerprint: editing a cleaning rule invalidates the caches that depend on it.
The fingerprint is scoped per stage: ``code_fingerprint("rmcore.train.run")`` digests that
module and every rmcore module it imports, directly or through others (function-level
imports included), plus data_contracts; so an edit to the ranking report does not retrain a
model, and an edit to the training loop does not re-clean the data.
"""

from __future__ import annotations

import ast
import hashlib
from functools import lru_cache
from pathlib import Path

import rmcore

_ROOT = Path(rmcore.__file__).parent.parent
_CONTRACTS = "data_contracts"


def rmcore_fingerprint() -> str:
    """The whole library's fingerprint (every rmcore module): for outputs that record the code
    version as a whole, such as the mixture manifest."""
    return code_fingerprint("rmcore")


@lru_cache(maxsize=64)
def code_fingerprint(*entry_modules: str, root: Path = _ROOT) -> str:
    """``<version>+<digest>`` of ``entry_modules`` (a package means all its modules), every
    rmcore module they import transitively, and data_contracts, all under ``root``."""
    files = sorted(module_closure(entry_modules, root) | _package_files(_CONTRACTS, root))
    h = hashlib.sha256(rmcore.__version__.encode())
    for path in files:
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return f"{rmcore.__version__}+{h.hexdigest()[:12]}"


def module_closure(entry_modules: tuple[str, ...] | list[str], root: Path = _ROOT) -> set[Path]:
    """The source files of ``entry_modules`` (a package: all its modules) and of every ``rmcore``
    module they import, directly or through others."""
    todo = [f for name in entry_modules for f in _files_of(name, root, whole_package=True)]
    seen: set[Path] = set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for name in _rmcore_imports(path, root):
            todo.extend(_files_of(name, root))
    return seen


def _files_of(name: str, root: Path, *, whole_package: bool = False) -> list[Path]:
    """Files that importing ``name`` runs: the module, or a package's ``__init__.py`` (all its
    modules with ``whole_package``), and the ``__init__.py`` of every package above it. A name
    that is not a module (``from rmcore.io import write_json``) resolves to its module."""
    parts = name.split(".")
    while parts:
        base = root.joinpath(*parts)
        if base.with_suffix(".py").is_file():
            found = [base.with_suffix(".py")]
            break
        if (base / "__init__.py").is_file():
            found = sorted(base.rglob("*.py")) if whole_package else [base / "__init__.py"]
            break
        parts = parts[:-1]
    else:
        return []
    inits = [root.joinpath(*parts[:i], "__init__.py") for i in range(1, len(parts))]
    return found + [p for p in inits if p.is_file()]


def _package_files(package: str, root: Path) -> set[Path]:
    folder = root / package
    return set(folder.rglob("*.py")) if folder.is_dir() else set()


def imported_names(path: Path, root: Path = _ROOT) -> set[str]:
    """Every module ``path`` imports anywhere in its body (function-level imports included), as
    absolute names; ``from a.b import c`` gives ``a.b.c`` (c may be a module or a name in a.b),
    and a package's lazy re-exports (``_EXPORTS = {name: submodule}``) count as imports."""
    inside = path.is_relative_to(root)
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1]) if inside else ""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            names |= {f"{module}.{a.name}" for a in node.names}
        elif (
            isinstance(node, ast.Assign)
            and isinstance(node.value, ast.Dict)
            and any(getattr(t, "id", "") == "_EXPORTS" for t in node.targets)
        ):
            names |= {f"{package}.{v.value}" for v in node.value.values if isinstance(v, ast.Constant)}
    return names


def _rmcore_imports(path: Path, root: Path) -> set[str]:
    return {n for n in imported_names(path, root) if n == "rmcore" or n.startswith("rmcore.")}
