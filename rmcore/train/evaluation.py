"""Held-out pairs during and after training: loss, accuracy with a Wilson interval, length rule."""

from __future__ import annotations

from contextlib import nullcontext

import torch

from rmcore.encoding import EncodedPairs
from rmcore.evaluate.intervals import wilson_interval
from rmcore.train.batching import pair_rewards
from rmcore.train.loss import bradley_terry_loss, split_rewards
from rmcore.train.pairs import collate_micro_batch, to_device


def autocast_context(device: torch.device, enabled: bool):
    return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else nullcontext()


@torch.no_grad()
def evaluate_pairs(
    model: torch.nn.Module,
    pairs: EncodedPairs,
    *,
    pad_id: int,
    batch: int,
    device: torch.device,
    bf16: bool,
    config,
) -> tuple[dict[str, float], dict[str, float] | None]:
    """Held-out loss/accuracy (with a Wilson 95% interval) beside the length-only rule; norm stats."""
    if not len(pairs):
        return {}, None
    was_training = model.training
    model.eval()
    lengths = [max(len(c), len(r)) for c, r in zip(pairs.chosen, pairs.rejected)]
    order = sorted(range(len(pairs)), key=lambda i: -lengths[i])
    r_c, r_r = torch.empty(len(pairs)), torch.empty(len(pairs))
    for start in range(0, len(order), batch):
        idx = order[start : start + batch]
        # Evaluation has no gradient: 4 length groups already keep its padding low, and fewer
        # groups mean fewer attention calls; the result does not depend on the grouping.
        b = collate_micro_batch(pairs, idx, pad_id, 4)
        with autocast_context(device, bf16):
            rc, rr = split_rewards(pair_rewards(model, to_device(b, device)).float().cpu())
        r_c[idx], r_r[idx] = rc, rr
    model.train(was_training)
    margins = torch.as_tensor(pairs.margins) if pairs.margins is not None else None
    _, m = bradley_terry_loss(
        r_c, r_r, margin=margins, center_coef=config.loss.center_coef, hinge=config.loss.hinge
    )
    n = len(pairs)
    low, high = wilson_interval(round(m["accuracy"] * n), n)  # the count of pairs ranked right
    longer = sum(len(c) > len(r) for c, r in zip(pairs.chosen, pairs.rejected)) / n
    metrics = {f"eval/{k}": v for k, v in m.items()}
    metrics |= {
        "eval/accuracy_low": low,
        "eval/accuracy_high": high,
        "eval/length_baseline": longer,
        "eval/pairs": n,
    }
    rewards = torch.cat([r_c, r_r])
    return metrics, {"mean": float(rewards.mean()), "std": float(rewards.std(unbiased=False))}
