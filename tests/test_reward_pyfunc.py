"""The raw-reward pyfunc: input forms, and a saved MLflow model scoring exactly like the folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow_helpers import ROWS, direct_rewards, tiny_reward_dir

from tracking.reward_pyfunc import row_to_conversation, rows_to_conversations

USER_HI = {"role": "user", "content": "hi"}
ASSISTANT_YO = {"role": "assistant", "content": "yo"}


def test_prompt_response_row_becomes_user_then_assistant():
    assert row_to_conversation({"prompt": "hi", "response": "yo"}) == [USER_HI, ASSISTANT_YO]


def test_prompt_given_as_messages_keeps_its_turns():
    system = {"role": "system", "content": "be brief"}
    row = {"prompt": [system, USER_HI], "response": "yo"}
    assert row_to_conversation(row) == [system, USER_HI, ASSISTANT_YO]


def test_messages_row_and_numpy_cells_from_parquet():
    assert row_to_conversation({"messages": [USER_HI, ASSISTANT_YO]}) == [USER_HI, ASSISTANT_YO]
    cell = np.array([USER_HI, ASSISTANT_YO], dtype=object)  # what pandas gives for a Parquet list column
    assert row_to_conversation({"messages": cell}) == [USER_HI, ASSISTANT_YO]


def test_dataframe_dict_and_list_inputs_give_the_same_conversations():
    frame = pd.DataFrame([{"prompt": "hi", "response": "yo"}, {"prompt": "a", "response": "b"}])
    from_frame = rows_to_conversations(frame)
    assert from_frame == rows_to_conversations(frame.to_dict(orient="records"))
    assert from_frame[0] == rows_to_conversations({"prompt": "hi", "response": "yo"})[0]
    assert len(from_frame) == 2


def test_bad_rows_are_named():
    with pytest.raises(ValueError, match=r"row 1: expected keys 'prompt' and 'response', or 'messages'; got \['text'\]"):
        rows_to_conversations([{"prompt": "a", "response": "b"}, {"text": "x"}])
    with pytest.raises(ValueError, match=r"row 0\.messages: message 0 must have 'role' and 'content'"):
        rows_to_conversations([{"messages": [{"content": "x"}]}])
    with pytest.raises(ValueError, match="'response' must be a string"):
        rows_to_conversations([{"prompt": "a", "response": 3}])
    with pytest.raises(TypeError, match="got str"):
        rows_to_conversations("prompt")


@pytest.mark.parametrize("arch", ["bert", "llama"])
def test_saved_pyfunc_returns_the_folders_raw_rewards(tmp_path: Path, arch: str):
    import mlflow.pyfunc

    from tracking.registry import pyfunc_model_kwargs

    folder = tiny_reward_dir(tmp_path / "model", arch=arch)
    expected = direct_rewards(folder, ROWS)
    mlflow.pyfunc.save_model(str(tmp_path / "pyfunc"), **pyfunc_model_kwargs(folder))
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    # a schema the MLflow UI shows: three optional input columns, one float output
    assert [(c.name, c.required) for c in loaded.metadata.get_input_schema().inputs] == [
        ("prompt", False), ("response", False), ("messages", False)]
    assert loaded.metadata.get_output_schema().input_names() == ["reward"]
    out = loaded.predict(ROWS)
    assert list(out.columns) == ["reward"]
    np.testing.assert_allclose(out["reward"].to_numpy(), expected, rtol=0, atol=1e-6)
    # raw rewards, not sigmoid probabilities: a tiny random head gives values that differ per row
    assert len(set(np.round(expected, 7))) == 3
    # the DataFrame form gives the same numbers as the list form
    frame = loaded.predict(pd.DataFrame(ROWS[:2]))
    np.testing.assert_allclose(frame["reward"].to_numpy(), expected[:2], rtol=0, atol=1e-6)


_FRESH_PROCESS = """
import json, sys
import mlflow.pyfunc
model = mlflow.pyfunc.load_model(sys.argv[1])
rewards = model.predict(json.loads(sys.argv[2]))["reward"].tolist()
print(json.dumps({"rewards": rewards, "rmcore": sys.modules["rmcore"].__file__}))
"""


@pytest.mark.slow  # a fresh interpreter imports torch + mlflow again (~15-40 s on 2 busy cores)
def test_saved_pyfunc_brings_its_own_rmcore_to_a_fresh_process(tmp_path: Path):
    """The model's code/ directory holds rmcore: a new process loads it from there, not the checkout."""
    import json
    import os
    import subprocess
    import sys

    import mlflow.pyfunc

    from tracking.registry import pyfunc_model_kwargs

    folder = tiny_reward_dir(tmp_path / "model")
    saved = tmp_path / "pyfunc"
    mlflow.pyfunc.save_model(str(saved), **pyfunc_model_kwargs(folder))
    out = subprocess.run(
        [sys.executable, "-c", _FRESH_PROCESS, str(saved), json.dumps(ROWS)],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env=os.environ.copy(), check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert Path(result["rmcore"]).is_relative_to(saved / "code" / "rmcore")
    np.testing.assert_allclose(result["rewards"], direct_rewards(folder, ROWS), rtol=0, atol=1e-6)
