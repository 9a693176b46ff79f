"""The Bradley-Terry pairwise loss and its batch metrics (SPEC section 4, seeds 000/001).

``L = -log sigmoid(r_c - r_r - m)`` averaged over pairs, where ``m`` is an optional
per-pair margin (e.g. from the score gap). Its gradient is
``dL/dr_c = -(1 - sigmoid(r_c - r_r - m)) / N`` and ``dL/dr_r = -dL/dr_c``: pairs the model
already ranks well barely move. Options: a reward-centering term
``center_coef * mean((r_c + r_r)^2)`` that keeps rewards near zero, and a hinge form
``max(0, m - (r_c - r_r))`` with ``m`` = margin or 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def bradley_terry_loss(
    r_chosen: torch.Tensor,
    r_rejected: torch.Tensor,
    *,
    margin: torch.Tensor | float | None = None,
    center_coef: float = 0.0,
    hinge: bool = False,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss over a batch of pairs, and metrics: accuracy, mean margin, reward mean/std.

    ``accuracy`` counts ties as wrong (a model that scores everything equal is at 0).
    """
    if r_chosen.shape != r_rejected.shape:
        raise ValueError(
            f"chosen and rejected rewards differ in shape: {r_chosen.shape} vs {r_rejected.shape}"
        )
    dtype = torch.promote_types(r_chosen.dtype, torch.float32)  # bf16 rewards -> fp32 loss
    r_chosen, r_rejected = r_chosen.to(dtype), r_rejected.to(dtype)
    diff = r_chosen - r_rejected
    m = (
        torch.zeros_like(diff)
        if margin is None
        else torch.as_tensor(margin, dtype=diff.dtype).expand_as(diff)
    )
    if hinge:
        gap = m if margin is not None else torch.ones_like(diff)
        loss = F.relu(gap - diff).mean()
    else:
        loss = -F.logsigmoid(diff - m).mean()
    if center_coef:
        loss = loss + center_coef * ((r_chosen + r_rejected) ** 2).mean()
    with torch.no_grad():
        rewards = torch.cat([r_chosen.detach(), r_rejected.detach()])
        metrics = {
            "loss": float(loss.detach()),
            "accuracy": float((diff.detach() > 0).float().mean()),
            "mean_margin": float(diff.detach().mean()),
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std(unbiased=False)),
        }
    return loss, metrics


def split_rewards(rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards of one forward over [chosen block; rejected block] -> (r_chosen, r_rejected)."""
    if rewards.shape[0] % 2:
        raise ValueError(f"expected an even number of rewards (chosen then rejected), got {rewards.shape[0]}")
    r_chosen, r_rejected = torch.chunk(rewards, 2)
    return r_chosen, r_rejected
