"""The layer rule of STYLE.md, checked on the import graph: rmcore is a plain library.

rmcore imports neither Prefect nor MLflow (nor the layers above it: tasks, flows, rmflow),
at module level or inside a function. Checked two ways: statically, every ``import`` node of
every rmcore file (function-level imports included, which a runtime check would miss), and at
run time, importing every rmcore module in a fresh interpreter loads neither package.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("prefect", "mlflow", "tasks", "flows", "rmflow")


def imported_modules(path: Path) -> set[str]:
    """Every module an rmcore file imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    inside = path.is_relative_to(REPO)
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1]) if inside else ""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join([*base, node.module] if node.module else base))
            elif node.module:
                names.add(node.module)
    return names


def test_no_rmcore_file_imports_an_upper_layer_or_prefect_or_mlflow():
    offenders = {}
    for path in sorted((REPO / "rmcore").rglob("*.py")):
        bad = sorted(m for m in imported_modules(path) if m.split(".")[0] in FORBIDDEN)
        if bad:
            offenders[str(path.relative_to(REPO))] = bad
    assert offenders == {}


def test_importing_all_of_rmcore_loads_neither_prefect_nor_mlflow():
    code = (
        "import importlib, pkgutil, sys, rmcore\n"
        "for m in pkgutil.walk_packages(rmcore.__path__, 'rmcore.'):\n"
        "    importlib.import_module(m.name)\n"
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'prefect', 'mlflow', 'tasks', 'flows', 'rmflow'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_checker_sees_function_level_imports(tmp_path):
    """Protection check: an import hidden inside a function is still found."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    import mlflow\n    from prefect import flow\n")
    assert {"mlflow", "prefect"} <= imported_modules(probe)
