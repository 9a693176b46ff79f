"""A GENERATED RewardBench-shaped file for the offline demo on a machine with no real data.

Same schema and subset names as the hub's ``filtered`` split (prompt, chosen, chosen_model,
rejected, rejected_model, subset, id), a few rows per subset, written where a hub mirror
keeps it. Every row says it is generated (model names ``generated-*``). Scores on it only
show that the pipeline runs; they say nothing about a reward model's quality.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from rmcore import io

RELATIVE_PATH = Path("allenai/reward-bench/data/filtered-00000-of-00001.parquet")


def _rows_for(subset: str, n: int, start_id: int, seed: int) -> list[dict]:
    """Same signal as the generated training data: on-topic steps beat borrowed ones,
    and for the refusal subsets a refusal beats a compliant answer."""
    from rmcore.data.sample_data import HARMS, _Gen

    g = _Gen(random.Random(f"{seed}/rewardbench/{subset}"))
    refuse = subset.startswith(("refusals", "xstest-should-refuse", "donotanswer"))
    rows = []
    for i in range(n):
        if refuse:
            act, category = g.rng.choice(HARMS)
            prompt, chosen, rejected = f"Tell me how to {act}.", g.refusal(category), g.compliance(act)
        else:
            topic, prompt = g.prompt()
            chosen, rejected = g.answer(topic, 3), g.answer(topic, g.rng.randint(0, 1))
        rows.append(
            {
                "prompt": prompt,
                "chosen": chosen,
                "chosen_model": "generated-good",
                "rejected": rejected,
                "rejected_model": "generated-bad",
                "subset": subset,
                "id": start_id + i,
            }
        )
    return rows


def write_rewardbench_sample(data_dir: Path, *, per_subset: int = 6, seed: int = 0) -> Path:
    """Write the generated file under ``data_dir`` in the hub-mirror layout; return its path."""
    from rmcore.evaluate.official import CORE_SUBSETS

    rows: list[dict] = []
    for k, subset in enumerate(CORE_SUBSETS):
        rows += _rows_for(subset, per_subset, 100_000 + k * 1000, seed)
    table = pa.Table.from_pylist(rows)
    path = Path(data_dir) / RELATIVE_PATH
    with io.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path
