"""Helpers for the MLflow tests: tiny reward-model folders, their directly computed rewards and
a registered version's lineage (the per-test MLflow store is conftest's ``mlflow_uri``)."""

from __future__ import annotations

import json
from pathlib import Path

from tiny import build_tiny_model_dir

# Rows in both input forms the pyfunc and `rmflow score` accept.
ROWS = [
    {"prompt": "how do i say thanks", "response": "you can say thank you"},
    {"prompt": "what is the best way to help", "response": "ask what they need first and then help"},
    {
        "messages": [
            {"role": "user", "content": "hello"},
            {"role": "assistant", "content": "hi there how can i help"},
            {"role": "user", "content": "tell me something good"},
            {"role": "assistant", "content": "people are very kind"},
        ]
    },
]


def tiny_reward_dir(path: Path, *, arch: str = "bert", seed: int = 0) -> Path:
    """A tiny saved reward model (mean pooling for bert, last token for llama)."""
    pooling = "mean" if arch == "bert" else "last"
    return build_tiny_model_dir(path, arch, pooling=pooling, seed=seed)


def direct_rewards(folder: Path, rows: list[dict]) -> list[float]:
    """Rewards of ``rows`` from the folder loaded with rmcore directly (no MLflow)."""
    from rmcore.model import load_reward_model
    from rmcore.scoring import score_conversations
    from tracking.reward_pyfunc import rows_to_conversations

    model = load_reward_model(folder)
    return [float(r) for r in score_conversations(model, rows_to_conversations(rows))]


def model_lineage(name: str, version: int | str) -> dict:
    """Where a registered version came from: its tags and aliases, its run, and the run's
    dataset inputs (path, digest, manifest; the manifest's own content when the file is there)."""
    import tracking

    c = tracking.client()
    if isinstance(version, str) and not version.isdigit():
        mv = c.get_model_version_by_alias(name, version)
    else:
        mv = c.get_model_version(name, str(version))
    inputs = tracking.run_inputs(mv.run_id) if mv.run_id else []
    for entry in inputs:
        manifest = entry["tags"].get("rmflow.manifest")
        if manifest and Path(manifest).is_file():
            entry["manifest"] = json.loads(Path(manifest).read_text())
    return {
        "name": name,
        "version": int(mv.version),
        "aliases": sorted(mv.aliases),
        "tags": dict(mv.tags),
        "run_id": mv.run_id,
        "inputs": inputs,
    }
