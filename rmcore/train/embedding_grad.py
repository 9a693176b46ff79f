"""Word-embedding lookup whose gradient is written into a kept buffer, row by row.

The stock embedding backward builds a dense (vocab x hidden) gradient every micro-batch:
for MiniLM a fresh 47 MB tensor zero-filled in full (``aten::fill_`` on [30522, 384]),
although a micro-batch touches a few hundred rows. Profiled on a 2-core AVX2 CPU in fp32
that fill took 5% of a training step (bench/RESULTS.md). Here the gradient lives in one
buffer kept across steps: backward adds into the rows the batch used (``index_add_``), and
when a new step starts (the parameter's ``.grad`` was set to None by ``zero_grad`` or moved
away by the master-weights engine) only the rows written since the last reset are zeroed.

The values are exactly the stock gradient (dense, zeros elsewhere), so clipping, AdamW and
weight decay see the same tensor; only the memory traffic differs. Use it for one
``torch.nn.Embedding`` weight at a time (``RowGradBuffer`` per weight).
"""

from __future__ import annotations

import torch


class RowGradBuffer:
    """The kept gradient buffer of one embedding weight and the rows written into it."""

    def __init__(self) -> None:
        self.buffer: torch.Tensor | None = None
        self.dirty: list[torch.Tensor] = []

    def attach(self, weight: torch.Tensor) -> torch.Tensor:
        """``weight.grad``, (re)attaching the buffer with its written rows zeroed when it is None."""
        if weight.grad is not None:
            return weight.grad
        buf = self.buffer
        if (
            buf is None
            or buf.shape != weight.shape
            or buf.dtype != weight.dtype
            or buf.device != weight.device
        ):
            buf = self.buffer = torch.zeros_like(weight)
        elif self.dirty:
            buf.index_fill_(0, torch.cat(self.dirty).unique(), 0)
        self.dirty = []
        weight.grad = buf
        return buf


class _Lookup(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx, ids: torch.Tensor, weight: torch.Tensor, rows: RowGradBuffer, padding_idx: int | None
    ) -> torch.Tensor:
        ctx.save_for_backward(ids)
        ctx.weight, ctx.rows, ctx.padding_idx = weight, rows, padding_idx
        return weight.index_select(0, ids)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (ids,) = ctx.saved_tensors
        grad = ctx.rows.attach(ctx.weight)
        grad.index_add_(0, ids, grad_out.to(grad.dtype))
        if ctx.padding_idx is not None:
            grad[ctx.padding_idx] = 0  # as the stock backward: the padding row gets no gradient
        ctx.rows.dirty.append(ids)
        return None, None, None, None  # the gradient is already in weight.grad


def lookup_rows(embedding: torch.nn.Embedding, ids: torch.Tensor) -> torch.Tensor:
    """``embedding(ids)`` for 1-D ``ids``; the weight's gradient goes to its kept row buffer.

    Falls back to the stock module when the weight needs no gradient or the module has
    options this lookup does not implement (max_norm, sparse gradients)."""
    weight = embedding.weight
    if (
        not (torch.is_grad_enabled() and weight.requires_grad)
        or embedding.max_norm is not None
        or embedding.sparse
    ):
        return embedding(ids)
    rows = embedding.__dict__.get("_rmflow_row_grad")
    if rows is None:
        rows = embedding.__dict__["_rmflow_row_grad"] = RowGradBuffer()
    return _Lookup.apply(ids, weight, rows, embedding.padding_idx)
