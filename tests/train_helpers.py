"""Helpers for training tests: small mixture Parquet files, real hh-rlhf pairs parsed here.

The hh-rlhf parsing below is deliberately independent of ``rmcore.data.sources`` (built in
parallel): a transcript ``\\n\\nHuman: ...\\n\\nAssistant: ...`` becomes a message list.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import re
from pathlib import Path

import pyarrow as pa

from rmcore.io import write_table

_TURN = re.compile(r"\n\n(Human|Assistant): ")

TINY_TRAINING = {
    "max_length": 64, "lr": 3e-3, "micro_batch": 4, "global_batch": 8, "epochs": 1,
    "warmup_ratio": 0.1, "log_every": 1, "eval_fraction": 0.2, "seed": 7, "bf16": False,
}  # fmt: skip
"""Settings under which a tiny model learns the toy pairs within a few steps (fp32: the
tests' numbers must not depend on whether this CPU's bf16 is fast; tests/test_precision.py
covers ``bf16: auto``)."""


def grouped(flat: dict) -> dict:
    """Flat training keys (``lr``, ``micro_batch``, ...) -> TrainConfig's groups (``optim.lr``, ...).

    Tests spell settings flat for brevity; recipes and YAML files spell them grouped."""
    import dataclasses

    from rmcore.train.config import TrainConfig

    places = dict(TrainConfig.MOVED_KEYS)  # the old flat names, and each group's own field names
    for group in dataclasses.fields(TrainConfig):
        if dataclasses.is_dataclass(group.default_factory) and group.name != "loss":
            for f in dataclasses.fields(group.default_factory):
                places.setdefault(f.name, f"{group.name}.{f.name}")
    out: dict = {}
    for key, value in flat.items():
        group, _, name = places.get(key, key).rpartition(".")
        if group:
            out.setdefault(group, {})[name] = value
        elif isinstance(value, dict):
            out.setdefault(key, {}).update(value)
        else:
            out[key] = value
    return out


def train_config(**flat):
    """A TrainConfig from flat keys (``train_config(model="m", lr=1e-3)``), validated as a recipe's is."""
    from rmcore.config import from_mapping
    from rmcore.train.config import TrainConfig

    return from_mapping(TrainConfig, grouped(flat))


def update_train(section: dict, **flat) -> dict:
    """Merge flat keys into a recipe's grouped ``train`` section (a dict from YAML), in place."""
    for key, value in grouped(flat).items():
        if isinstance(value, dict):
            section[key] = {**(section.get(key) or {}), **value}
        else:
            section[key] = value
    return section


def tiny_config(model: Path, **overrides):
    """A TrainConfig for a tiny model folder: ``TINY_TRAINING`` with ``overrides`` (flat keys)."""
    return train_config(**{"model": str(model), **TINY_TRAINING, **overrides})


def changed(config, **overrides):
    """``config`` with some settings replaced, given as flat keys (``changed(cfg, max_steps=2)``)."""
    from rmcore.config import from_mapping, to_dict

    data = to_dict(config)
    for group, values in grouped(overrides).items():
        data[group] = {**data[group], **values} if isinstance(values, dict) else values
    return from_mapping(type(config), data)


def hh_messages(transcript: str) -> list[dict[str, str]]:
    parts = _TURN.split(transcript)
    return [
        {"role": "user" if parts[i] == "Human" else "assistant", "content": parts[i + 1].strip()}
        for i in range(1, len(parts) - 1, 2)
    ]


def hh_pairs(data_dir: Path, subset: str = "helpful-base", n: int | None = None) -> list[dict]:
    """Real hh-rlhf pairs (test split file) as {chosen, rejected} message lists, file order."""
    path = data_dir / "Anthropic" / "hh-rlhf" / subset / "test.jsonl.gz"
    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            row = json.loads(line)
            c, r = hh_messages(row["chosen"]), hh_messages(row["rejected"])
            if c and r and c != r and c[-1]["role"] == "assistant" and r[-1]["role"] == "assistant":
                out.append({"chosen": c, "rejected": r})
            if n is not None and len(out) >= n:
                break
    return out


def toy_pairs(n: int) -> list[dict]:
    """Synthetic pairs a tiny model can learn: the chosen answer is polite, the rejected rude."""
    good = [
        "sure , happy to help",
        "yes , thank you",
        "okay , here is a good answer",
        "thanks , that is right",
    ]
    bad = ["no go away", "bad question", "i hate this", "wrong , do not ask"]
    topics = ["time", "day", "people", "work", "question", "thing", "way", "answer"]
    pairs = []
    for i in range(n):
        prompt = [{"role": "user", "content": f"please help with the {topics[i % len(topics)]} number {i}"}]
        pairs.append(
            {
                "chosen": prompt + [{"role": "assistant", "content": good[i % len(good)] + " " * (i % 3)}],
                "rejected": prompt + [{"role": "assistant", "content": bad[(i * 7) % len(bad)]}],
            }
        )
    return pairs


def write_mixture(path: Path, pairs: list[dict], *, splits: list[str] | None = None, scores=None) -> Path:
    """A MIXTURE-contract Parquet of ``pairs`` (split "train" unless ``splits`` says otherwise)."""
    rows = []
    for i, p in enumerate(pairs):
        cs, rs = scores[i] if scores is not None else (None, None)
        rows.append(
            {
                "pair_id": hashlib.sha256(json.dumps([i, p["chosen"], p["rejected"]]).encode()).hexdigest()[
                    :16
                ],
                "source": "test",
                "prompt": p["chosen"][:-1],
                "chosen": p["chosen"],
                "rejected": p["rejected"],
                "chosen_score": cs,
                "rejected_score": rs,
                "split": splits[i] if splits is not None else "train",
                "subset": "test/train",
            }
        )
    from data_contracts import MIXTURE

    write_table(pa.Table.from_pylist(rows, schema=MIXTURE.schema), path, MIXTURE)
    return path
