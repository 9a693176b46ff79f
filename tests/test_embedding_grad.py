"""The word-embedding gradient kept in one buffer (rmcore.train.embedding_grad) equals the stock one."""

from __future__ import annotations

import copy

import torch

from rmcore.train.embedding_grad import lookup_rows


def test_kept_buffer_gives_the_stock_gradient_over_accumulation_and_steps():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 8, padding_idx=0)
    ref = copy.deepcopy(emb)
    buffers = set()
    for step in range(4):
        for _micro in range(2):  # gradient accumulation within a step
            ids = torch.randint(0, 50, (30,))
            ids[:3] = 0  # padding tokens: the stock backward leaves the padding row at zero
            weights = torch.randn(30, 8)
            (lookup_rows(emb, ids) * weights).sum().backward()
            (ref(ids) * weights).sum().backward()
        assert torch.allclose(emb.weight.grad, ref.weight.grad, atol=1e-6)
        assert emb.weight.grad[0].abs().sum() == 0 and (emb.weight.grad != 0).any()
        buffers.add(emb.weight.grad.data_ptr())
        emb.weight.grad.mul_(0.5)  # clipping scales in place; the next step must not see it
        emb.weight.grad = ref.weight.grad = None  # zero_grad(set_to_none=True)
    assert len(buffers) == 1  # one buffer, reused every step


def test_without_grad_or_with_max_norm_the_stock_module_runs():
    emb = torch.nn.Embedding(10, 4, max_norm=1.0)
    ids = torch.tensor([1, 2, 3])
    assert torch.equal(lookup_rows(emb, ids), emb(ids))
    plain = torch.nn.Embedding(10, 4)
    with torch.no_grad():
        out = lookup_rows(plain, ids)
    assert not out.requires_grad and "_rmflow_row_grad" not in plain.__dict__
