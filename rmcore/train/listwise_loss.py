"""The Plackett-Luce listwise loss: one ranking of k >= 2 responses to a prompt, all k scored
in one forward pass, instead of the k(k-1)/2 pairs Bradley-Terry would need.

A ranking ``y_1 > y_2 > ... > y_k`` (best first) with rewards ``r`` has Plackett-Luce
likelihood ``prod_{j<k} exp(r_j) / sum_{l>=j} exp(r_l)``: the best response is picked first
from all k, the next best from the rest, and so on. The loss of one ranking is its negative
log-likelihood ``-sum_{j<k} (r_j - logsumexp(r_j, ..., r_k))``; a batch's loss is the mean over
its rankings. For k = 2 this is ``-(r_1 - log(e^r_1 + e^r_2)) = -log sigmoid(r_1 - r_2)``,
exactly the Bradley-Terry loss of the pair (rmcore.train.loss).

Ties, handled explicitly (Breslow's rule for tied events in a proportional-hazards model):
responses are given as tiers (0 = best); every response of a tier is picked against the same
competitors, its own tier and every tier below it; the last tier adds no term (being below
the others is already said by the earlier tiers' terms, and nothing ranks its members among
themselves). Without ties this is exactly Plackett-Luce. A ranking whose responses are all
tied says nothing and adds 0 (but counts in the batch mean): the grouping rules drop such
groups before training, as the pairing rules drop tied pairs.
"""

from __future__ import annotations

import torch


def plackett_luce_loss(
    rewards: torch.Tensor, tiers: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean Plackett-Luce negative log-likelihood over a batch of rankings, and metrics.

    ``rewards``: [groups, k] rewards of each group's responses (any order);
    ``tiers``: [groups, k] integer rank tier of each response, 0 for the best, equal tiers tied;
    ``mask``: [groups, k] bool, False where a group has fewer than k responses (padding).
    Metrics: ``loss``, ``accuracy`` (pairs of different tiers ordered right, ties in reward
    wrong) and ``top1`` (the best tier holds the highest reward).
    """
    if rewards.shape != tiers.shape or rewards.dim() != 2:
        raise ValueError(f"rewards and tiers must both be [groups, k]; got {tuple(rewards.shape)}, {tuple(tiers.shape)}")
    mask = torch.ones_like(tiers, dtype=torch.bool) if mask is None else mask.bool()
    if mask.shape != rewards.shape:
        raise ValueError(f"mask must be [groups, k] like rewards; got {tuple(mask.shape)}")
    if bool((mask.sum(dim=1) < 2).any()):
        raise ValueError("every ranking needs at least 2 responses")
    r = rewards.to(torch.promote_types(rewards.dtype, torch.float32))
    neg_inf = torch.finfo(r.dtype).min
    # competitors[g, i, l]: response l is in i's tier or below it (and is a real response)
    competitors = (tiers.unsqueeze(1) >= tiers.unsqueeze(2)) & mask.unsqueeze(1) & mask.unsqueeze(2)
    logits = r.unsqueeze(1).expand(-1, r.shape[1], -1).masked_fill(~competitors, neg_inf)
    log_pick = r - torch.logsumexp(logits, dim=2)  # [groups, k]: log P(i picked from its competitors)
    last = tiers.masked_fill(~mask, torch.iinfo(tiers.dtype).min).amax(dim=1, keepdim=True)
    counted = mask & (tiers < last)
    loss = -(log_pick * counted).sum(dim=1).mean()
    with torch.no_grad():
        better = (tiers.unsqueeze(2) < tiers.unsqueeze(1)) & mask.unsqueeze(1) & mask.unsqueeze(2)
        right = (r.unsqueeze(2) > r.unsqueeze(1)) & better
        best = tiers.masked_fill(~mask, torch.iinfo(tiers.dtype).max).amin(dim=1, keepdim=True)
        top = r.masked_fill(~mask, neg_inf).argmax(dim=1, keepdim=True)
        metrics = {
            "loss": float(loss.detach()),
            "accuracy": float(right.sum() / better.sum().clamp(min=1)),
            "top1": float((tiers.gather(1, top) == best).float().mean()),
        }
    return loss, metrics
