"""An MLflow ``PythonModel`` that returns RAW rewards (``mlflow.transformers`` would give sigmoid
scores with a label, which is not a reward).

Input rows, in a DataFrame, a list of dicts or one dict, each either
``{"prompt": str | messages, "response": str}`` or ``{"messages": [{"role", "content"}, ...]}``
(the whole conversation, ending with the assistant turn). Output: a DataFrame with one
float column ``reward``, in input order.

The model's artifact ``reward_model`` is the saved HF folder; ``load_context`` loads it
with ``rmcore.model.load_reward_model`` and scoring goes through ``rmcore.scoring``, so a
registered version scores exactly like the folder loaded directly. This module imports only
mlflow, pandas, numpy and rmcore: it is shipped inside the logged model (code paths) so
the model loads where rmflow is not installed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

ARTIFACT_KEY = "reward_model"

Message = dict[str, str]


def _messages(value: Any, where: str) -> list[Message]:
    """A message list from a list/array of {role, content} mappings (Parquet gives arrays)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(
            f"{where}: expected a non-empty list of {{role, content}} messages, got {value!r:.80}"
        )
    out = []
    for j, m in enumerate(value):
        if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
            raise ValueError(f"{where}: message {j} must have 'role' and 'content', got {m!r:.80}")
        out.append({"role": str(m["role"]), "content": str(m["content"])})
    return out


def row_to_conversation(row: Mapping[str, Any], where: str = "row") -> list[Message]:
    """One input row -> the conversation to score (user prompt + assistant response)."""
    if "messages" in row and row["messages"] is not None and not _is_nan(row["messages"]):
        return _messages(row["messages"], f"{where}.messages")
    if "prompt" in row and "response" in row:
        prompt, response = row["prompt"], row["response"]
        if not isinstance(response, str):
            raise ValueError(f"{where}: 'response' must be a string, got {response!r:.80}")
        if isinstance(prompt, str):
            head = [{"role": "user", "content": prompt}]
        else:
            head = _messages(prompt, f"{where}.prompt")
        return [*head, {"role": "assistant", "content": response}]
    raise ValueError(
        f"{where}: expected keys 'prompt' and 'response', or 'messages'; got {sorted(map(str, row))}"
    )


def _is_nan(value: Any) -> bool:
    return isinstance(value, float) and math.isnan(value)


def rows_to_conversations(model_input: Any) -> list[list[Message]]:
    """DataFrame / list of dicts / one dict -> conversations, in order."""
    if isinstance(model_input, pd.DataFrame):
        rows: Sequence[Mapping[str, Any]] = model_input.to_dict(orient="records")
    elif isinstance(model_input, Mapping):
        rows = [model_input]
    elif isinstance(model_input, (list, tuple)):
        rows = list(model_input)
    else:
        raise TypeError(f"expected a DataFrame, a dict or a list of dicts, got {type(model_input).__name__}")
    return [row_to_conversation(row, f"row {i}") for i, row in enumerate(rows)]


class RewardModelPyfunc(mlflow.pyfunc.PythonModel):
    """Raw Bradley-Terry rewards from an rmflow reward model folder.

    ``model_config`` (set at log time) may hold ``batch_size`` (default 16) and ``max_length``.
    """

    def load_context(self, context) -> None:
        from rmcore.model import load_reward_model

        config = dict(context.model_config or {})
        self.batch_size = int(config.get("batch_size", 16))
        max_length = config.get("max_length")
        self.model = load_reward_model(context.artifacts[ARTIFACT_KEY], max_length=max_length)
        self.model.eval()

    def predict(self, context, model_input, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from rmcore.scoring import score_conversations

        conversations = rows_to_conversations(model_input)
        if not conversations:
            return pd.DataFrame({"reward": np.empty(0, dtype=np.float64)})
        rewards = score_conversations(self.model, conversations, batch_size=self.batch_size)
        return pd.DataFrame({"reward": np.asarray(rewards, dtype=np.float64)})
