"""A stage is declared once (tasks.caching.Stage) and keyed by the code it runs, not the whole library."""

from __future__ import annotations

from pathlib import Path

from rmcore.fingerprint import code_fingerprint, module_closure
from tasks.caching import Stage
from tasks.data import CLEAN
from tasks.evaluate import EVALUATE
from tasks.ranking import LEADERBOARD
from tasks.train import TRAIN

REPO = Path(__file__).resolve().parents[1]


def _rel(paths) -> set[str]:
    return {str(p.relative_to(REPO)) for p in paths}


def test_each_stage_sees_only_the_code_it_runs():
    train = _rel(module_closure(TRAIN.code))
    ranking = _rel(module_closure(LEADERBOARD.code))
    clean = _rel(module_closure(CLEAN.code))
    assert "rmcore/train/loop.py" in train and "rmcore/encoding.py" in train
    assert not any(p.startswith("rmcore/ranking/") for p in train)  # a ranking edit retrains nothing
    assert "rmcore/ranking/report.py" in ranking and not any(p.startswith("rmcore/train/") for p in ranking)
    assert "rmcore/data/sources/hh_rlhf.py" in clean and not any(p.startswith("rmcore/train/") for p in clean)
    assert "rmcore/evaluate/rewardbench.py" in _rel(module_closure(EVALUATE.code))


def _library(root: Path) -> None:
    (root / "rmcore" / "a").mkdir(parents=True)
    (root / "rmcore" / "__init__.py").write_text("__version__ = 'x'\n")
    (root / "rmcore" / "a" / "__init__.py").write_text("")
    (root / "rmcore" / "a" / "run.py").write_text("def f():\n    from rmcore.b import g\n")  # function-level
    (root / "rmcore" / "b.py").write_text("def g(): pass\n")
    (root / "rmcore" / "c.py").write_text("def h(): pass\n")


def test_an_edit_changes_the_fingerprint_of_the_stages_that_import_it_only(tmp_path):
    _library(tmp_path)
    before_a, before_c = code_fingerprint("rmcore.a.run", root=tmp_path), code_fingerprint("rmcore.c", root=tmp_path)
    (tmp_path / "rmcore" / "b.py").write_text("def g(): return 1\n")  # imported by a.run, not by c
    code_fingerprint.cache_clear()
    assert code_fingerprint("rmcore.a.run", root=tmp_path) != before_a
    assert code_fingerprint("rmcore.c", root=tmp_path) == before_c


def test_a_stage_key_depends_on_its_key_params_only(tmp_path):
    stage = Stage("s", key_params=("x", "work"), folder=lambda p: Path("s") / p["x"], code=("rmcore.io",))
    a = {"x": "one", "work": str(tmp_path), "unrelated": 1}
    assert stage.key(a) == stage.key({**a, "unrelated": 2}) != stage.key({**a, "x": "two"})
    assert stage.output_dir(a) == tmp_path / "s" / "one" / stage.key(a)
