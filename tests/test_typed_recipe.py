"""Recipe sections are typed objects, built once; stages are keyed by their content."""

from __future__ import annotations

from rmcore.config import config_hash
from rmcore.evaluate.config import EvalConfig
from rmcore.recipe import load_recipe, recipe_from_mapping
from rmcore.train.config import TrainConfig
from tasks.caching import stage_key

BASE = {"name": "r", "data": {"sources": [{"source": "hh-rlhf/helpful-base"}]}}


def test_sections_are_typed_configs():
    demo = load_recipe("demo")
    assert isinstance(demo.train, TrainConfig) and isinstance(demo.eval, EvalConfig)
    assert demo.train.backbone.max_length == 256 and demo.eval.sample_per_subset == 5
    data_only = recipe_from_mapping(BASE)
    assert data_only.train is None and data_only.eval == EvalConfig()


def test_a_spelled_out_default_is_the_same_training_and_the_same_cache_entry():
    short = recipe_from_mapping({**BASE, "train": {"model": "x"}})
    spelled = recipe_from_mapping({**BASE, "train": {"model": "x", "backbone": {"max_length": 512}}})  # 512: the default
    other = recipe_from_mapping({**BASE, "train": {"model": "x", "backbone": {"max_length": 256}}})
    assert short.train == spelled.train and config_hash(short.train) == config_hash(spelled.train)
    key = lambda r: stage_key("train", train=r.train, mixture_digest="m", work="/w")
    assert key(short) == key(spelled) != key(other)
