"""The layer rule of STYLE.md, checked on the import graph: rmcore is a plain library.

rmcore imports neither Prefect nor MLflow (nor the layers above it: tasks, flows, rmflow),
at module level or inside a function. Checked two ways: statically, every ``import`` node of
every rmcore file (function-level imports included, which a runtime check would miss), and at
run time, importing every rmcore module in a fresh interpreter loads neither package.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from rmcore.fingerprint import imported_names

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = ("prefect", "mlflow", "tasks", "tracking", "flows", "rmflow")


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports (rmcore.fingerprint's AST reader, shared with the cache keys)."""
    return imported_names(path, REPO)


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
        "print(sorted({n.split('.')[0] for n in sys.modules} & {'prefect', 'mlflow', 'tasks', 'tracking', 'flows', 'rmflow'}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_the_checker_sees_function_level_imports(tmp_path):
    """Protection check: an import hidden inside a function is still found."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    import mlflow\n    from prefect import flow\n")
    assert {m.split(".")[0] for m in imported_modules(probe)} == {"mlflow", "prefect"}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(packages: tuple[str, ...] = ("rmcore", "tasks", "tracking", "flows")) -> dict[str, set[str]]:
    """module -> project modules it imports (function-level imports included)."""
    files = {_module_name(p): p for pkg in packages for p in (REPO / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        edges = set()
        for target in imported_modules(path):
            # ``from pkg import mod`` names a module; ``from mod import func`` names its module
            while target and target not in files:
                target = target.rpartition(".")[0]
            if target and target != name:
                edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_in_rmcore_tasks_tracking_and_flows():
    assert find_cycle(import_graph()) is None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]


def test_no_file_in_the_library_tasks_or_flows_is_over_400_lines():
    long = {
        str(p.relative_to(REPO)): n
        for pkg in ("rmcore", "tasks", "tracking", "flows")
        for p in (REPO / pkg).rglob("*.py")
        if (n := len(p.read_text().splitlines())) > 420
    }
    assert long == {}


def test_only_the_task_layer_flows_and_the_cli_import_the_mlflow_adapters():
    """tracking/ (MLflow) is used by tasks/ and flows/, and by the CLI's ``rmflow score
    models:/...``; never by rmcore or data_contracts (they stay plain libraries)."""
    users = {
        str(p.relative_to(REPO)).split("/")[0]
        for pkg in ("rmcore", "data_contracts", "tasks", "flows", "rmflow")
        for p in (REPO / pkg).rglob("*.py")
        if any(m.split(".")[0] == "tracking" for m in imported_modules(p))
    }
    assert users <= {"tasks", "flows", "rmflow"} and {"tasks", "flows"} <= users


ENV_READ_IN_RMCORE = {
    "XDG_CACHE_HOME": "rmcore/precision.py: where the user's cache dir is (the probe's per-machine cache)",
    "ONEDNN_MAX_CPU_ISA": "rmcore/precision.py: part of the machine's identity (which kernels torch runs)",
    "WORLD_SIZE": "rmcore/train/distributed.py: the launcher's contract (torchrun, deepspeed, accelerate)",
    "MASTER_PORT": "rmcore/train/engines.py: single-process defaults of that contract",
    "LOCAL_RANK": "rmcore/train/run.py: the launcher's contract (which GPU of the node this rank uses)",
}


def test_rmcore_reads_no_configuration_from_the_environment():
    """Configuration comes from the recipe and the edges (CLI, flows); rmcore reads only the
    machine's and the launcher's facts listed above."""
    read = set()
    for path in (REPO / "rmcore").rglob("*.py"):
        text = path.read_text()
        for name in re.findall(r"os\.environ(?:\.get)?[\[(]\s*[\"']([A-Z_]+)", text):
            read.add(name)
        assert "os.getenv" not in text, path
        assert not re.search(r"os\.environ\[\w", text), f"{path}: environment read through a variable name"
    assert read <= set(ENV_READ_IN_RMCORE), read - set(ENV_READ_IN_RMCORE)
