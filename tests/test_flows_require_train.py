"""The train and evaluate flows refuse a recipe without a train section before any data stage."""

from __future__ import annotations

import pytest

import flows.evaluate
import flows.train
from rmcore.config import ConfigError

RECIPE = """name: no-train
data:
  sources:
    - {source: hh-rlhf/helpful-base, max_pairs: 10}
"""


@pytest.mark.parametrize("flow_module", [flows.train, flows.evaluate], ids=["train", "evaluate"])
def test_no_train_section_is_refused_before_the_data_stages(flow_module, tmp_path, monkeypatch):
    recipe = tmp_path / "no-train.yaml"
    recipe.write_text(RECIPE)
    monkeypatch.setenv("RMFLOW_ALLOWED_ROOTS", str(tmp_path))
    ran = []
    monkeypatch.setattr(flow_module, "run_data_stages", lambda ctx: ran.append(ctx) or {})
    flow = flow_module.train_flow if flow_module is flows.train else flow_module.evaluate_flow
    data = tmp_path / "mirror"
    data.mkdir()
    with pytest.raises(ConfigError, match="no 'train' section"):
        flow.fn(recipe=str(recipe), data_dir=str(data), work_dir=str(tmp_path / "work"))
    assert ran == []  # refused before download, clean and mixture
