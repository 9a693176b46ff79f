"""A recipe: one YAML that says what data, which model and how to evaluate and register.

``load_recipe`` validates every section before any work starts (unknown keys, wrong
types, unknown sources), naming the key and the fix.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rmcore.config import (
    PROJECT_ROOT,
    ConfigError,
    allowed_roots,
    confined_path,
    from_mapping,
    load_yaml,
    looks_like_path,
)
from rmcore.data.mixtures import MixtureConfig, SourceSpec
from rmcore.evaluate.config import EvalConfig
from rmcore.train.config import TrainConfig

RECIPES_DIR = Path(__file__).resolve().parent.parent / "deployments" / "recipes"


@dataclass(frozen=True)
class RegisterConfig:
    model_name: str = "rmflow-reward"
    """Registered model name in the MLflow model registry."""
    promote: bool = True
    """Move alias ``champion`` when the RewardBench overall is not lower than the champion's."""


@dataclass(frozen=True)
class Recipe:
    """One pipeline run, every section typed: built once by ``recipe_from_mapping`` and passed on
    as these objects (stages are keyed by their ``config_hash``, so ``{model: x}`` and
    ``{model: x, max_length: 512}`` are the same training when 512 is the default)."""

    name: str
    data: MixtureConfig
    train: TrainConfig | None = None
    """None: the recipe only prepares data (``rmflow mix``); the pipeline refuses it (``require_train``)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    register: RegisterConfig = field(default_factory=RegisterConfig)
    description: str = ""
    path: str = ""


NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9-]*$")
"""Recipe names become Prefect artifact keys (lowercase letters, digits, dashes)."""


def _check_sources(specs: tuple[SourceSpec, ...], where: str) -> None:
    from rmcore.data.sources.base import check_options
    from rmcore.data.sources.catalog import SOURCE_NAMES, get_adapter

    for i, spec in enumerate(specs):
        if spec.source not in SOURCE_NAMES:
            raise ConfigError(
                f"{where}[{i}].source: unknown source {spec.source!r}; valid sources: {', '.join(SOURCE_NAMES)}"
            )
        adapter = get_adapter(spec.source)
        try:
            check_options(adapter, spec.clean_options(0), f"{where}[{i}]")
        except ValueError as e:
            raise ConfigError(str(e)) from None
        splits = adapter.splits
        if spec.split not in splits:  # also keeps '../x' out of the mirror's file globs
            raise ConfigError(
                f"{where}[{i}].split: {spec.split!r} is not a split of {spec.source}; use one of: {', '.join(splits)}"
            )


def is_local_model(model: str, base: Path) -> bool:
    """A recipe's ``model`` names a local folder or file, not a hub id or an alias: it is written as
    a path (``./x``, ``/x``, ``~/x``, ``../x``) or names something that exists, relative to ``base``
    or to the current directory (where ``from_pretrained`` would find ``tmp/x`` first)."""
    from rmcore.model_import import ALIASES

    if not model.strip() or model in ALIASES:
        return False
    return looks_like_path(model) or (base / model).exists() or Path(model).exists()


def _existing(path: Path, value: str, where: str, base: Path) -> Path:
    if path.exists():
        return path
    raise ConfigError(
        f"{where}: {value!r} resolves to {path}, which does not exist (relative paths in a recipe are "
        f"relative to {base}). Fix: give the absolute path of the file or folder, or a hub id"
    )


def check_train_paths(
    train: dict[str, Any], where: str, roots: tuple[Path, ...], base: Path = PROJECT_ROOT
) -> dict[str, Any]:
    """``train`` with ``deepspeed`` and a local ``model`` resolved once (relative to ``base``, symlinks
    followed), confined under ``roots`` (``confined_path``) and present, as absolute paths: what
    training loads is what was checked, whatever the current directory of the process that loads it.
    A missing file is refused here, before any stage runs."""
    train = dict(train)
    deepspeed = train.get("deepspeed")
    if isinstance(deepspeed, str):
        path = confined_path(deepspeed, where=f"{where}.deepspeed", base=base, roots=roots)
        train["deepspeed"] = str(_existing(path, deepspeed, f"{where}.deepspeed", base))
    model = train.get("model")
    if isinstance(model, str) and is_local_model(model, base):
        path = confined_path(model, where=f"{where}.model", base=base, roots=roots)
        train["model"] = str(_existing(path, model, f"{where}.model", base))
    return train


def recipe_from_mapping(
    raw: dict[str, Any], *, where: str = "recipe", roots: tuple[Path, ...] | None = None
) -> Recipe:
    """Validate a recipe mapping; ``roots``: where paths inside it may point (default: ``allowed_roots()``)."""
    raw = dict(raw)
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: 'name' is required (a short string such as 'v1')")
    if not NAME.match(name):
        raise ConfigError(
            f"{where}.name: {name!r} may hold only letters, digits and '-' (it names Prefect artifacts); e.g. 'v1-small'"
        )
    data = dict(raw.get("data") or {})
    data.setdefault("name", name)
    raw["data"] = from_mapping(MixtureConfig, data, where=f"{where}.data")
    _check_sources(raw["data"].sources, f"{where}.data.sources")
    _check_sources(raw["data"].heldout, f"{where}.data.heldout")
    for section in ("train", "eval"):
        if section in raw and not isinstance(raw[section], dict):
            raise ConfigError(f"{where}.{section}: expected a mapping")
    if raw.get("train") is not None:
        raw["train"] = check_train_paths(raw["train"], f"{where}.train", roots or allowed_roots())
    recipe = from_mapping(Recipe, raw, where=where)  # train -> TrainConfig, eval -> EvalConfig
    if recipe.train is not None and recipe.train.model_type == "regression":
        _check_regression_data(recipe.data, where)
    if not recipe.register.model_name.strip():
        raise ConfigError(
            f"{where}.register.model_name: must not be empty (the MLflow registered model name)"
        )
    return recipe


def _check_regression_data(data: MixtureConfig, where: str) -> None:
    """A regression model trains on rated responses and is scored on the held-out pairs: it needs
    a rated source, and the held-out pairs' prompts held out of its training responses too."""
    from rmcore.data.rated_mixture import RATED_SOURCES, rated_specs

    if not rated_specs(data):
        raise ConfigError(
            f"{where}.train.model_type: regression trains on rated responses, and none of data.sources is "
            f"rated; add one of: {', '.join(RATED_SOURCES)} (e.g. {{source: helpsteer, pairing: all-pairs}})"
        )
    if data.validation_unit != "prompt":
        raise ConfigError(
            f"{where}.data.validation_unit: model_type regression needs `prompt` (it is {data.validation_unit!r}): "
            "the rated responses are held out by prompt, so the held-out pairs must be too, or the model "
            "is scored on pairs of prompts it trained on"
        )


def require_train(recipe: Recipe) -> Recipe:
    """The end-to-end pipeline trains: refuse a recipe without a ``train`` section up front.

    (``rmflow mix`` and the data flows do not need one.) Without this check the pipeline ran
    download, cleaning and the mixture, then failed on ``train["model"]``.
    """
    if recipe.train is None:
        raise ConfigError(
            f"{recipe.path or recipe.name}: no 'train' section, and the pipeline trains a model. "
            "Fix: add one (at least train.model), e.g. as in deployments/recipes/demo.yaml"
        )
    return recipe


def resolve_recipe_path(recipe: str | Path) -> Path:
    """A path, or a bare name of a shipped recipe (``v1`` -> deployments/recipes/v1.yaml)."""
    path = Path(recipe)
    if path.exists():
        return path
    shipped = RECIPES_DIR / f"{recipe}.yaml"
    if shipped.exists():
        return shipped
    raise ConfigError(
        f"recipe {recipe!r} not found; give a YAML path or one of: "
        + ", ".join(sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
    )


def load_recipe(recipe: str | Path, *, extra_roots: tuple[str | Path, ...] = (), **overrides: Any) -> Recipe:
    """Read and validate a recipe (a path or a shipped name); paths inside it may point into the
    project, the recipe's folder and ``extra_roots`` (the CLI and flows pass ``env_roots(os.environ)``)."""
    path = resolve_recipe_path(recipe)
    roots = allowed_roots(path.resolve().parent, *extra_roots)
    loaded = recipe_from_mapping(load_yaml(path), where=str(path), roots=roots)
    loaded = replace(loaded, path=str(path.resolve()))
    return replace(loaded, **overrides) if overrides else loaded
