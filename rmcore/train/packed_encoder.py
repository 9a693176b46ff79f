"""One encoder pass over all length groups of a micro-batch (BERT encoders, mean pooling).

A micro-batch is split into length groups to keep padding low (rmcore.train.batching); run one by
one, every group pays its own pass through each layer, and groups of a few short sequences
make small matrices: on a 2-core CPU a BERT layer runs about 25% slower per token at 500
rows than at 2,000 (bench/RESULTS.md). Everything in a BERT layer except the attention
scores works token by token (linear layers, GELU, layer norms, residual adds, dropout), so
here all groups' tokens are laid end to end in one ``[tokens, hidden]`` matrix: those parts
run once per micro-batch on all rows, and only attention runs per group, on views of that
matrix (no copies, still no attention across sequences). The modules called are the
model's own, so the weights, the checkpoint and the exported model are unchanged; only the
order of the work differs (results equal the stock forward to float rounding: tests).

Used by training when ``TrainConfig.compute.packed_encoder`` allows it and :func:`unsupported_reason`
returns None; any other model runs the stock forward.
"""

from __future__ import annotations

from typing import Any

import torch

from rmcore.train.embedding_grad import lookup_rows

Groups = list[tuple[torch.Tensor, torch.Tensor]]


def checkpointing_on(hf: torch.nn.Module) -> bool:
    """Whether activation (gradient) checkpointing is on: backward then recomputes each layer
    through the stock forward, which a packed pass cannot share."""
    on = getattr(hf, "is_activation_checkpointing", None)  # transformers >= 5.x name
    return bool(getattr(hf, "is_gradient_checkpointing", False) if on is None else on)


def unsupported_reason(hf: torch.nn.Module, pooling: str) -> str | None:
    """Why the packed pass cannot run ``hf`` (None when it can): it mirrors BertModel exactly."""
    base = getattr(hf, "base_model", None)
    config = getattr(hf, "config", None)
    if pooling != "mean":
        return f"pooling is {pooling!r} (the packed pass implements mean pooling)"
    if type(base).__name__ != "BertModel" or config is None:
        return f"backbone is {type(base).__name__}, not BertModel"
    if config.is_decoder or config.add_cross_attention:
        return "a decoder/cross-attention BERT"
    if getattr(config, "chunk_size_feed_forward", 0):
        return "chunked feed-forward"
    if getattr(config, "position_embedding_type", "absolute") != "absolute":
        return f"position_embedding_type {config.position_embedding_type!r}"
    if getattr(config, "_attn_implementation", None) not in ("eager", "sdpa"):
        return f"attention implementation {getattr(config, '_attn_implementation', None)!r}"
    if checkpointing_on(hf):
        return "gradient checkpointing is on"
    return None


def _attention_fn(config: Any):
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.bert.modeling_bert import eager_attention_forward

    return ALL_ATTENTION_FUNCTIONS.get_interface(config._attn_implementation, eager_attention_forward)


def _embed(base: torch.nn.Module, groups: Groups) -> torch.Tensor:
    """BertEmbeddings on all tokens: word + token type (0) + position, layer norm, dropout."""
    emb = base.embeddings
    ids = torch.cat([g.reshape(-1) for g, _ in groups])
    device = ids.device
    positions = torch.cat([torch.arange(g.shape[1], device=device).repeat(g.shape[0]) for g, _ in groups])
    token_types = torch.zeros_like(ids)
    x = lookup_rows(emb.word_embeddings, ids) + emb.token_type_embeddings(token_types)
    x = x + emb.position_embeddings(positions)
    return emb.dropout(emb.LayerNorm(x))


def _key_bias(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Additive ``[batch, 1, 1, keys]`` mask: 0 for real tokens, the dtype's minimum for padding."""
    zero = torch.zeros((), dtype=dtype, device=mask.device)
    low = torch.tensor(torch.finfo(dtype).min, dtype=dtype, device=mask.device)
    return torch.where(mask.bool(), zero, low)[:, None, None, :]


def _eager_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """transformers' eager attention without dropout, for a query already scaled by 1/sqrt(d):
    the mask is added in place and no separate pass scales the (length x length) scores."""
    scores = torch.matmul(q, k.transpose(-1, -2)).add_(bias)
    return torch.matmul(torch.softmax(scores, dim=-1), v).transpose(1, 2)


def _layer(
    layer: torch.nn.Module, x: torch.Tensor, shapes: list[torch.Size], biases: list, attend, eager: bool
) -> torch.Tensor:
    """One BertLayer on the packed rows; attention per group on views of q, k and v.

    The groups are cut with ``split`` (whose backward is one concatenation), not by slicing
    (whose backward writes each group's gradient into a zero-filled full-size tensor).
    """
    sa = layer.attention.self
    sizes = [batch * length for batch, length in shapes]
    dropout = sa.dropout.p if sa.training else 0.0
    plain = eager and not dropout
    query = sa.query(x) * sa.scaling if plain else sa.query(x)  # scale n x hidden, not n x length
    q, k, v = (t.split(sizes) for t in (query, sa.key(x), sa.value(x)))
    outs = []
    for i, ((batch, length), bias) in enumerate(zip(shapes, biases, strict=True)):

        def heads(t: torch.Tensor, n: int = batch, s: int = length) -> torch.Tensor:
            return t.view(n, s, -1, sa.attention_head_size).transpose(1, 2)

        if plain:
            out = _eager_attention(heads(q[i]), heads(k[i]), heads(v[i]), bias)
        else:
            out, _ = attend(
                sa, heads(q[i]), heads(k[i]), heads(v[i]), bias, dropout=dropout, scaling=sa.scaling
            )
        outs.append(out.reshape(batch * length, -1))
    attended = layer.attention.output(torch.cat(outs), x)
    return layer.output(layer.intermediate(attended), attended)


def reward_columns(logits: torch.Tensor) -> torch.Tensor:
    """A head's outputs as rewards (float32): [n] for a one-output head, [n, outputs] for a
    multi-output one (the regression model's attributes, ``RewardModel`` combines them)."""
    logits = logits.float()
    return logits[:, 0] if logits.shape[1] == 1 else logits


def packed_mean_rewards(hf: torch.nn.Module, head: torch.nn.Linear, groups: Groups) -> list[torch.Tensor]:
    """Mean-pooled rewards (float32) of each (input_ids, attention_mask) group, one pass for all."""
    base = hf.base_model
    x = _embed(base, groups)
    shapes = [ids.shape for ids, _ in groups]
    biases = [_key_bias(mask, x.dtype) for _, mask in groups]
    attend, eager = _attention_fn(hf.config), hf.config._attn_implementation == "eager"
    for layer in base.encoder.layer:
        x = _layer(layer, x, shapes, biases, attend, eager)
    pooled = []
    parts = x.split([batch * length for batch, length in shapes])
    for (batch, length), part, (_, mask) in zip(shapes, parts, groups, strict=True):
        hidden = part.view(batch, length, -1)
        m = mask.unsqueeze(-1).to(hidden.dtype)
        pooled.append((hidden * m).sum(1) / m.sum(1).clamp(min=1.0))
    rewards = reward_columns(head(torch.cat(pooled)))
    return list(rewards.split([s[0] for s in shapes]))
