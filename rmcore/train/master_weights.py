"""bf16 training with fp32 master weights: the model computes in bf16, the optimizer in fp32.

Autocast keeps the weights in fp32 and casts every matmul's inputs to bf16 on each call,
and leaves layer norms, GELU, softmax and residual adds in fp32. On a CPU those casts and
fp32 element-wise passes cost as much as the bf16 matmuls save (bench/RESULTS.md). Here
instead a bf16 working copy of the model runs forward and backward, and an fp32 copy (the
one the optimizer, checkpoints and the exported model see) is the source of truth:

- after each backward, the bf16 gradients are added into fp32 gradients of the master copy
  (accumulation over micro-batches happens in fp32);
- clipping and the AdamW step run on the fp32 master weights;
- the updated master weights are copied (rounded) into the bf16 working copy.

This is the recipe of mixed-precision training with master weights (Micikevicius et al.,
2018; DeepSpeed's bf16 mode). bf16 has fp32's exponent range, so no loss scaling is needed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch

from rmcore.model import RewardModel
from rmcore.train.config import TrainConfig
from rmcore.train.engines import TorchEngine


def bf16_working_copy(model: RewardModel) -> RewardModel:
    """A bf16 copy of ``model`` sharing its tokenizer and settings (not its tensors)."""
    hf = copy.deepcopy(model.hf).to(torch.bfloat16)
    work = RewardModel(
        hf,
        model.tokenizer,
        pooling=model.pooling,
        max_length=model.max_length,
        truncation=model.truncation,
        system_prompt=model.system_prompt,
        norm_stats=model.norm_stats,
    ).train(model.training)
    work.packed, work.combination = model.packed, model.combination
    return work


class MasterWeightsEngine(TorchEngine):
    """``TorchEngine`` for bf16 compute with fp32 master weights.

    ``model`` (fp32) is what the optimizer steps, checkpoints hold and export returns;
    ``module`` (bf16) is what the loop runs forward and backward.
    """

    autocast = False  # the working copy is already bf16

    def __init__(self, config: TrainConfig, model: RewardModel, total: int) -> None:
        super().__init__(config, model, total)
        self.module = bf16_working_copy(model)
        self.pairs = [
            (master, work)
            for master, work in zip(model.parameters(), self.module.parameters(), strict=True)
            if master.requires_grad
        ]
        self.buffers: list[torch.Tensor | None] = [None] * len(self.pairs)
        """fp32 gradient storage kept across steps: a fresh 47 MB gradient per step (the
        embedding's) costs more in page faults than the conversion itself (bench/RESULTS.md)."""

    def backward(self, loss: torch.Tensor) -> None:
        """Backward through the bf16 copy, then move its gradients into fp32 master gradients.

        A master gradient is None until its parameter gets a gradient in the current step
        (as with ``zero_grad(set_to_none=True)``); it is then written into the kept buffer.
        """
        loss.backward()
        for i, (master, work) in enumerate(self.pairs):
            if work.grad is None:
                continue
            if master.grad is not None:
                master.grad.add_(work.grad)
            elif self.buffers[i] is not None:
                master.grad = self.buffers[i].copy_(work.grad)
            else:
                master.grad = self.buffers[i] = work.grad.float()
            work.grad = None

    def step(self) -> float:
        """Clip and step in fp32, then round the new master weights into the bf16 copy: only the
        trainable ones, the rest never change (SmolLM2 with ``trainable_layers: 6`` copies 21M of
        its 135M parameters; all of them took 0.35-0.9 s per step on 2 shared cores)."""
        norm = super().step()
        self.sync(self.pairs)
        return norm

    @torch.no_grad()
    def sync(self, pairs: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> None:
        """Copy master weights into the bf16 working copy: the (master, working) ``pairs``, or
        every weight and buffer."""
        if pairs is None:
            pairs = list(zip(self.model.state_dict().values(), self.module.state_dict().values(), strict=True))
        for master, work in pairs:
            work.copy_(master)

    def restore(self, path: Path) -> dict[str, Any]:
        state = super().restore(path)
        self.sync()
        return state
