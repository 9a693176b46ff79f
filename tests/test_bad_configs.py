"""Bad recipes and configs are refused before any work starts, naming the key and the fix.

Unknown keys, wrong types, negative or zero sizes and rates, unknown sources and splits,
recipe names Prefect cannot use, and paths inside a recipe/config that leave the allowed
folders (``..``, absolute paths, symlinks that escape). The CLI checks (``rmflow run``,
``mix``, ``train``) prove nothing was started: no work folder, no Prefect database.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from train_helpers import grouped

from rmcore.config import PROJECT_ROOT, ConfigError, env_roots, from_mapping
from rmcore.data.mixtures import SourceSpec
from rmcore.evaluate.config import EvalConfig
from rmcore.recipe import load_recipe, recipe_from_mapping, require_train
from rmcore.train.config import TrainConfig

DEMO = yaml.safe_load((PROJECT_ROOT / "deployments/recipes/demo.yaml").read_text())


def _recipe(**changes) -> dict:
    """The demo recipe with sections updated (``train={'lr': -1}`` merges into train)."""
    recipe = {k: (dict(v) if isinstance(v, dict) else v) for k, v in DEMO.items()}
    for section, value in changes.items():
        if isinstance(value, dict) and isinstance(recipe.get(section), dict):
            recipe[section].update(value)
        else:
            recipe[section] = value
    return recipe


def _refused(recipe: dict, *fragments: str, roots: tuple[Path, ...] | None = None) -> str:
    with pytest.raises(ConfigError) as info:
        recipe_from_mapping(recipe, where="r.yaml", roots=roots)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in: {message}"
    return message


def test_shipped_recipes_are_valid() -> None:
    for name in ("demo", "v1", "v2", "v3", "v4"):
        assert load_recipe(name).name == name


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"trainn": {}}, ("unknown key(s) 'trainn'", "valid keys:")),
        ({"train": {"learning_rate": 1e-5}}, ("r.yaml.train: unknown key(s) 'learning_rate'", "optim")),
        ({"train": {"model": "m", "lr": 1e-5}}, ("r.yaml.train: unknown key(s) 'lr'", "'lr' is now 'optim.lr'")),
        ({"train": {"batching": {"micro_batch": "16"}}}, ("r.yaml.train.batching.micro_batch", "expected an integer")),
        ({"train": {"compute": {"bf16": "yes"}}}, ("r.yaml.train.compute.bf16",)),
        ({"train": {"optim": {"learning_rate": 1e-5}}}, ("r.yaml.train.optim: unknown key(s) 'learning_rate'", "lr")),
        ({"eval": {"batch_size": 1.5}}, ("r.yaml.eval.batch_size", "expected an integer")),
        ({"data": {"sources": "shp"}}, ("r.yaml.data.sources", "expected a list")),
        (
            {"data": {"sources": [{"source": "shp", "per_promt": 1}]}},
            ("unknown key(s) 'per_promt'", "per_prompt"),
        ),
        ({"register": {"promote": "no"}}, ("r.yaml.register.promote", "true/false")),
        ({"train": ["model"]}, ("r.yaml.train: expected a mapping",)),
    ],
)
def test_unknown_keys_and_wrong_types_name_the_key(changes: dict, fragments: tuple[str, ...]) -> None:
    _refused(_recipe(**changes), *fragments)


@pytest.mark.parametrize(
    ("train", "key"),
    [
        ({"lr": -1e-5}, "lr"),
        ({"lr": 0.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"micro_batch": -4}, "micro_batch"),
        ({"global_batch": 0}, "global_batch"),
        ({"max_length": -1}, "max_length"),
        ({"epochs": 0}, "epochs"),
        ({"max_steps": -1}, "max_steps"),
        ({"eval_batch": 0}, "eval_batch"),
        ({"log_every": 0}, "log_every"),
        ({"checkpoint_every": -20}, "checkpoint_every"),
        ({"keep_checkpoints": 0}, "keep_checkpoints"),
        ({"weight_decay": -0.1}, "weight_decay"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"adam_betas": [0.9, 1.5]}, "adam_betas"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"seed": -1}, "seed"),
        ({"loss": {"center_coef": -1.0}}, "center_coef"),
    ],
)
def test_negative_or_zero_training_sizes_and_rates_are_refused(train: dict, key: str) -> None:
    """Given flat here for brevity; each is refused in its group, named with the group's path."""
    group, _, field = TrainConfig.MOVED_KEYS.get(key, key).rpartition(".")
    nested = grouped(train)
    _refused(_recipe(train=nested), f"r.yaml.train.{group}" if group else "r.yaml.train", field)
    with pytest.raises(ConfigError, match=field):
        from_mapping(TrainConfig, {"model": "m", **nested}, where="train.yaml")


@pytest.mark.parametrize(
    ("section", "values", "key"),
    [
        ("eval", {"batch_size": -1}, "batch_size"),
        ("eval", {"max_length": 0}, "max_length"),
        ("eval", {"sample_per_subset": 0}, "sample_per_subset"),
        ("data", {"validation_fraction": -0.1}, "validation_fraction"),
        ("data", {"seed": -3}, "seed"),
        ("data", {"sources": [{"source": "shp", "max_pairs": -10}]}, "max_pairs"),
        ("data", {"sources": [{"source": "shp", "per_prompt": 0}]}, "per_prompt"),
        ("data", {"sources": []}, "sources"),
        ("register", {"model_name": " "}, "model_name"),
    ],
)
def test_bad_eval_data_and_register_values_are_refused(section: str, values: dict, key: str) -> None:
    _refused(_recipe(**{section: values}), key)


def test_unknown_source_and_split_are_refused_with_the_valid_names() -> None:
    _refused(_recipe(data={"sources": [{"source": "hh-rlhf"}]}), "sources[0].source", "hh-rlhf/helpful-base")
    _refused(
        _recipe(data={"heldout": [{"source": "shp", "split": "tset"}]}),
        "heldout[0].split",
        "validation, test",
    )
    # A split is part of the mirror's file glob: '..' there would read outside the mirror.
    _refused(
        _recipe(data={"sources": [{"source": "pku-saferlhf", "split": "../../etc/x"}]}),
        "split",
        "train, test",
    )


@pytest.mark.parametrize("name", ["my recipe", "v1/../x", "v_1", ""])
def test_recipe_names_prefect_cannot_use_are_refused(name: str) -> None:
    _refused(_recipe(name=name), "name")


def test_paths_inside_a_recipe_stay_under_the_allowed_folders(tmp_path: Path) -> None:
    roots = (PROJECT_ROOT, tmp_path / "recipes")
    (tmp_path / "recipes").mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "zero3.json").write_text("{}")
    for train, key in [
        ({"deepspeed": "../../../../etc/passwd"}, "train.deepspeed"),
        ({"deepspeed": str(outside / "zero3.json")}, "train.deepspeed"),
        ({"model": "/"}, "train.model"),
        ({"model": "../outside-model"}, "train.model"),
        ({"model": str(outside)}, "train.model"),
    ]:
        message = _refused(
            _recipe(train=train), key, "outside the folders", "RMFLOW_ALLOWED_ROOTS", roots=roots
        )
        assert "Fix:" in message
    # A symlink inside an allowed folder that points outside it escapes: refused too.
    (tmp_path / "recipes" / "model").symlink_to(outside, target_is_directory=True)
    _refused(
        _recipe(train={"model": str(tmp_path / "recipes" / "model")}),
        "train.model",
        str(outside),
        roots=roots,
    )
    # What stays inside is fine: the project's own files, a hub id, the recipe's folder.
    (tmp_path / "recipes" / "tiny").mkdir()  # a local model must exist (refused before any stage)
    for train in [
        {"deepspeed": "deployments/deepspeed/zero3.json"},
        {"model": "google/gemma-2b-it"},
        {"model": str(tmp_path / "recipes" / "tiny")},
    ]:
        recipe_from_mapping(_recipe(train=train), where="r.yaml", roots=roots)


def test_extra_roots_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = tmp_path / "recipes" / "r.yaml"
    recipe.parent.mkdir()
    models = tmp_path / "models"
    (models / "m").mkdir(parents=True)
    recipe.write_text(yaml.safe_dump(_recipe(train={"model": str(models / "m")})))
    with pytest.raises(ConfigError, match="outside the folders"):
        load_recipe(recipe)
    monkeypatch.setenv("RMFLOW_ALLOWED_ROOTS", str(models))
    with pytest.raises(ConfigError, match="outside the folders"):
        load_recipe(recipe)  # rmcore reads no environment variable ...
    loaded = load_recipe(recipe, extra_roots=env_roots(os.environ))  # ... the edges pass it
    assert loaded.train.model == str(models / "m")
    assert env_roots({"RMFLOW_DATA_DIR": "hub", "RMFLOW_WORK_DIR": "/w", "RMFLOW_ALLOWED_ROOTS": f"/a{os.pathsep}/b"}) == (
        "/w", "/a", "/b",
    )


def test_pipeline_needs_a_train_section(tmp_path: Path) -> None:
    recipe = _recipe()
    del recipe["train"]
    path = _write(tmp_path / "r.yaml", recipe)
    loaded = load_recipe(path)  # fine for the data flows (rmflow mix)
    with pytest.raises(ConfigError, match="no 'train' section.*Fix: add one"):
        require_train(loaded)
    assert require_train(load_recipe("demo")).name == "demo"


def test_typed_configs_reject_directly() -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        EvalConfig(batch_size=0)
    with pytest.raises(ConfigError, match="per_prompt"):
        SourceSpec(source="shp", per_prompt=-1)


# ---------------------------------------------------------------- the CLI: nothing starts


def _cli(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "RMFLOW_HOME": str(tmp_path / "home")}
    env.pop("RMFLOW_WORK_DIR", None)
    return subprocess.run(
        [sys.executable, "-m", "rmflow.cli", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize(
    ("command", "recipe", "fragments"),
    [
        ("run", _recipe(train={"optim": {"lr": -1.0}}), ("train.optim", "lr must be a positive number")),
        ("mix", _recipe(data={"sources": [{"source": "shp2"}]}), ("unknown source 'shp2'", "valid sources")),
        (
            "run",
            _recipe(train={"deepspeed": "../../../etc/passwd"}),
            ("train.deepspeed", "outside the folders"),
        ),
        ("run", {k: v for k, v in DEMO.items() if k != "train"}, ("no 'train' section",)),
        (
            "mix",
            _recipe(data={"sources": [{"source": "hh-rlhf/helpful-base", "files": ["extra/none.jsonl"]}]}),
            ("data.sources[0]", "'extra/none.jsonl' matches no file under the data dir"),
        ),
        (
            "run",
            _recipe(data={"sources": [{"source": "hh-rlhf/helpful-base", "files": ["../outside.jsonl"]}]}),
            ("data.sources[0]", "outside the data dir"),
        ),
    ],
    ids=["run-negative-lr", "mix-unknown-source", "run-path-escape", "run-no-train", "mix-missing-file", "run-file-escape"],
)
def test_cli_refuses_a_bad_recipe_before_any_work(
    tmp_path: Path, command: str, recipe: dict, fragments: tuple[str, ...]
) -> None:
    path = _write(tmp_path / "recipes" / "bad.yaml", recipe)
    work = tmp_path / "work"
    result = _cli([command, str(path), "--out", str(work), "--data-dir", str(tmp_path)], tmp_path)
    assert result.returncode == 1, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, result.stderr
    assert str(path) in result.stderr  # the file named
    assert not work.exists() and not (tmp_path / "runs").exists()  # no stage output
    assert not (tmp_path / "prefect").exists()  # no Prefect API started, no flow run


def test_cli_train_refuses_bad_config_and_escaping_mixture_before_any_work(tmp_path: Path) -> None:
    out = tmp_path / "out"
    mixture = tmp_path / "elsewhere" / "m.parquet"
    mixture.parent.mkdir()
    mixture.write_bytes(b"")
    bad = _write(tmp_path / "cfg" / "bad.yaml", {"model": "m", "batching": {"micro_batch": 0}, "mixture": str(mixture)})
    result = _cli(["train", str(bad), "--out", str(out)], tmp_path)
    assert result.returncode == 1 and "mixture" in result.stderr and "outside the folders" in result.stderr
    bad.write_text(yaml.safe_dump({"model": "m", "batching": {"micro_batch": -8}}))
    result = _cli(["train", str(bad), "--mixture", str(mixture), "--out", str(out)], tmp_path)
    assert result.returncode == 1 and "micro_batch" in result.stderr, result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"source": "capybara", "pairing": "all-pairs"}, r"sources\[0\]\.pairing: source 'capybara' does not use 'pairing'"),
        ({"source": "shp", "pairing": "best-vs-random"}, "options it takes: per_prompt"),
    ],
)
def test_an_option_the_source_does_not_use_is_refused(spec, message):
    raw = {"name": "r", "data": {"sources": [spec]}}
    with pytest.raises(ConfigError, match=message):
        recipe_from_mapping(raw, where="r.yaml")


def test_every_adapter_declares_its_options_columns_and_streaming():
    from rmcore.data.sources.catalog import SOURCE_NAMES, get_adapter

    multi = {n for n in SOURCE_NAMES if "pairing" in get_adapter(n).options}
    assert multi == {"ultrafeedback", "helpsteer"}
    assert all("per_prompt" in get_adapter(n).options for n in SOURCE_NAMES)
    assert {n for n in SOURCE_NAMES if get_adapter(n).streams} == {"ultrafeedback"}
