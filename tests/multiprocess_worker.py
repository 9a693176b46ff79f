"""One rank of a multi-process training run (launched by torchrun in tests/test_deepspeed_multiprocess.py).

Usage: ``torchrun --nproc_per_node 2 tests/multiprocess_worker.py CONFIG_JSON MIXTURE OUT REPORT_DIR``.
Trains with ``rmcore.train.train_reward_model`` and writes ``REPORT_DIR/rank-<r>.json``: the
metrics rank 0's sink received, the pair indices this rank trained on, the global real-token
count, the model folder it was told about and how often each module class ran with autograd
on (``grad_calls``: with gradient checkpointing a layer's submodules run again in backward).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from train_helpers import train_config

from rmcore.train import ListSink, train_reward_model
from rmcore.train.distributed import rank


@contextmanager
def grad_module_calls() -> Iterator[Counter]:
    """Count module calls started with autograd on, by class name, while the block runs.

    A checkpointed decoder layer is called once (its forward runs inside the checkpoint), but
    its MLP runs twice: in the forward and again when backward recomputes the layer. Without
    checkpointing both run once per forward, so ``MLP calls / layer calls`` says which ran.
    """
    import torch

    calls: Counter = Counter()

    def hook(module, args):
        if torch.is_grad_enabled():
            calls[type(module).__name__] += 1

    # a pre-hook: the recompute may stop early, inside the layer's last module, once every
    # tensor backward needs is back (torch.utils.checkpoint's early stop), so a forward hook
    # would not see it
    handle = torch.nn.modules.module.register_module_forward_pre_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()


def main(config_json: str, mixture: str, out: str, report_dir: str) -> None:
    config = train_config(**json.loads(Path(config_json).read_text()))
    sink = ListSink()
    with grad_module_calls() as calls:
        result = train_reward_model(config, mixture_path=Path(mixture), output_dir=Path(out), sink=sink)
    report = {
        "records": sink.records,
        "seen_pairs": result.seen_pairs,
        "real_tokens": result.real_tokens,
        "model_dir": str(result.model_dir),
        "metrics": result.metrics,
        "grad_calls": dict(calls),
    }
    Path(report_dir, f"rank-{rank()}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    main(*sys.argv[1:5])
