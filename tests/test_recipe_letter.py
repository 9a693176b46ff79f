"""The recipe (seeds/003, section 3) to the letter: what the shipped v1-v4 recipes train on."""

from __future__ import annotations

from pathlib import Path

import pytest

from rmcore.recipe import load_recipe

RECIPES = Path(__file__).resolve().parents[1] / "deployments" / "recipes"
HELPFUL = ["hh-rlhf/helpful-base", "hh-rlhf/helpful-rejection-sampled", "hh-rlhf/helpful-online"]


@pytest.mark.parametrize("version", ["v1", "v2", "v3", "v4"])
def test_hh_rlhf_in_the_mixtures_is_the_helpful_data_only(version):
    """"all the base, rejection sampling, and online subsets ... leading to 115547": 43,038 +
    51,077 + 21,432 = 115,547 are the three helpful subsets; harmless-base is held out only."""
    recipe = load_recipe(str(RECIPES / f"{version}.yaml"))
    trained = [s.source for s in recipe.data.sources if s.source.startswith("hh-rlhf/")]
    assert trained == HELPFUL
    assert 43_038 + 51_077 + 21_432 == 115_547
    held_out = {s.source for s in recipe.data.heldout}
    assert "hh-rlhf/harmless-base" in held_out


def test_mix_v1_says_which_sources_the_mirror_lacks_and_why(shared_data):
    from rmflow.commands.mix import _why_missing

    recipe = load_recipe(str(RECIPES / "v1.yaml"))
    missing = ["hh-rlhf/helpful-base/train", "orca/train", "shp/train/1-per-prompt"]
    why = _why_missing(recipe, missing, str(shared_data))
    assert why["hh-rlhf/helpful-base/train"] == (
        "no helpful-base/train.jsonl.gz, data/train-*.parquet, default/train/*.parquet under "
        f"{shared_data.resolve() / 'Anthropic/hh-rlhf'}"
    )
    assert why["orca/train"].startswith("no data/train-*.parquet, default/train/*.parquet under ")
    assert "stanfordnlp/SHP" in why["shp/train/1-per-prompt"]
    assert _why_missing(recipe, ["orca/train"], "hub") == {"orca/train": "not loadable from the hub here (offline?)"}
