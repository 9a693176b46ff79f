"""One rank of a multi-process training run (launched by torchrun in tests/test_deepspeed_multiprocess.py).

Usage: ``torchrun --nproc_per_node 2 tests/multiprocess_worker.py CONFIG_JSON MIXTURE OUT REPORT_DIR``.
Trains with ``rmcore.train.train_reward_model`` and writes ``REPORT_DIR/rank-<r>.json``: the
metrics rank 0's sink received, the pair indices this rank trained on, the global real-token
count and the model folder it was told about.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from train_helpers import train_config

from rmcore.train import ListSink, train_reward_model
from rmcore.train.distributed import rank


def main(config_json: str, mixture: str, out: str, report_dir: str) -> None:
    config = train_config(**json.loads(Path(config_json).read_text()))
    sink = ListSink()
    result = train_reward_model(config, mixture_path=Path(mixture), output_dir=Path(out), sink=sink)
    report = {
        "records": sink.records,
        "seen_pairs": result.seen_pairs,
        "real_tokens": result.real_tokens,
        "model_dir": str(result.model_dir),
        "metrics": result.metrics,
    }
    Path(report_dir, f"rank-{rank()}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:5])
