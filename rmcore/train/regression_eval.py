"""The regression model after training: its attributes scored on held-out rated responses, the
verbosity debiasing fitted, and the export as a plain one-output reward model.

The reward ``sum_a w_a * output_a`` (minus ``lambda * verbosity`` when debiased) is linear in the
head's outputs, so it folds into a one-output head: the exported folder is a stock
``AutoModelForSequenceClassification`` with ``num_labels=1`` that every scorer reads (the
transformers pipeline, ``rmflow score``, the MLflow pyfunc), and ``rmflow_reward.json`` records
the attributes, the weights and lambda; the five-output head is kept beside it
(``attribute_head.safetensors``) for per-attribute scores.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from data_contracts import RATED_ATTRIBUTES
from rmcore.encoding import collate_sequences
from rmcore.model import RewardModel, _linear_head
from rmcore.train.batching import pair_rewards
from rmcore.train.evaluation import autocast_context
from rmcore.train.items import EncodedRated
from rmcore.train.pairs import to_device
from rmcore.train.regression import (
    attribute_metrics,
    fit_verbosity_debias,
    fold_head,
    spearman,
    weights_with_debias,
)

log = logging.getLogger(__name__)
ATTRIBUTE_HEAD = "attribute_head.safetensors"


@torch.no_grad()
def init_attribute_bias(model: RewardModel, rated: EncodedRated) -> None:
    """Start each attribute's output at its mean training rating (the head's bias), so the first
    steps learn the differences between responses, not the 0-4 scale's offset."""
    head = _linear_head(model.hf)
    means = (
        np.nan_to_num(np.nanmean(rated.targets, axis=0), nan=0.0)
        if len(rated)
        else np.zeros(head.out_features)
    )
    if head.bias is not None:
        head.bias.copy_(torch.as_tensor(means, dtype=head.bias.dtype))
        log.info(
            "regression head: biases start at the mean training ratings %s",
            dict(zip(RATED_ATTRIBUTES, np.round(means, 3))),
        )


@torch.no_grad()
def rated_outputs(
    model: torch.nn.Module, rated: EncodedRated, *, pad_id: int, batch: int, device: torch.device, bf16: bool
) -> np.ndarray:
    """The head's outputs ([n, attributes], float64) for every rated response."""
    inner = getattr(model, "module", model)
    was_training, inner.raw_outputs = inner.training, True
    inner.eval()
    out = np.zeros((len(rated), len(RATED_ATTRIBUTES)))
    order = sorted(range(len(rated)), key=lambda i: -len(rated.seqs[i]))
    try:
        for start in range(0, len(order), batch):
            idx = order[start : start + batch]
            b = to_device(collate_sequences([rated.seqs[i] for i in idx], pad_id=pad_id, max_groups=4), device)
            with autocast_context(device, bf16):
                out[idx] = pair_rewards(model, b).float().cpu().numpy()
    finally:
        inner.raw_outputs = False
        inner.train(was_training)
    return out


def regression_report(
    model: RewardModel,
    config: Any,
    train: EncodedRated,
    held: EncodedRated,
    outputs: tuple[np.ndarray, np.ndarray],
) -> tuple[dict[str, float], dict[str, Any]]:
    """Set the model's final combination (debiased when the recipe asks) and report: metrics (per
    attribute Spearman on the held-out responses, the reward's Spearman with length before and
    after debiasing) and the details (every attribute's Pearson/Spearman with 95% intervals)."""
    train_out, held_out = outputs
    vector = model.combination.detach().cpu().double()
    details: dict[str, Any] = {"attributes": attribute_metrics(held_out, held.targets.astype(np.float64))}
    verbosity = RATED_ATTRIBUTES.index("verbosity")
    metrics = {f"eval/{a}_spearman": m["spearman"] for a, m in details["attributes"].items()}
    combined_held = held_out @ vector.numpy()
    metrics["eval/reward_length_spearman"] = (
        spearman(combined_held, held.words) if len(held) > 2 else float("nan")
    )
    lam = 0.0
    if config.regression.debias_verbosity:
        fit = fit_verbosity_debias(train_out @ vector.numpy(), train_out[:, verbosity], train.words)
        lam = fit.lam
        vector = weights_with_debias(vector, lam).double()
        debiased_held = held_out @ vector.numpy()
        details["debias"] = {
            "lambda": lam,
            "train_spearman_before": fit.spearman_before,
            "train_spearman_after": fit.spearman_after,
            "heldout_spearman_before": metrics["eval/reward_length_spearman"],
            "heldout_spearman_after": spearman(debiased_held, held.words) if len(held) > 2 else float("nan"),
        }
        metrics["eval/reward_length_spearman_debiased"] = details["debias"]["heldout_spearman_after"]
        log.info(
            "verbosity debiasing: lambda %.4f; Spearman(reward, length) on the training responses %.3f -> %.3f, "
            "held out %.3f -> %.3f",
            lam, fit.spearman_before, fit.spearman_after, details["debias"]["heldout_spearman_before"],
            details["debias"]["heldout_spearman_after"],
        )  # fmt: skip
    model.combination = vector.float()
    details["weights"] = dict(zip(RATED_ATTRIBUTES, (round(float(v), 6) for v in vector)))
    details["lambda"] = lam
    for a, m in details["attributes"].items():
        log.info(
            "held-out %s: Pearson %.3f [%.3f, %.3f], Spearman %.3f [%.3f, %.3f] (n=%d)",
            a, m["pearson"], m["pearson_low"], m["pearson_high"], m["spearman"], m["spearman_low"],
            m["spearman_high"], m["n"],
        )  # fmt: skip
    return metrics, details


def export_regression(model: RewardModel, out_dir: Path, details: dict[str, Any]) -> None:
    """Fold the combination into a one-output head in place, keeping the attribute head beside it."""
    from safetensors.torch import save_file

    head = _linear_head(model.hf)
    out_dir.mkdir(parents=True, exist_ok=True)
    tensors = {"weight": head.weight.detach().float().cpu().contiguous()}
    if head.bias is not None:
        tensors["bias"] = head.bias.detach().float().cpu().contiguous()
    save_file(tensors, str(out_dir / ATTRIBUTE_HEAD), metadata={"attributes": ",".join(RATED_ATTRIBUTES)})
    folded = fold_head(head, model.combination.to(head.weight))
    for name in ("classifier", "score"):
        if getattr(model.hf, name, None) is head:
            setattr(model.hf, name, folded)
    model.hf.config.num_labels = 1
    model.hf.config.id2label, model.hf.config.label2id = {0: "LABEL_0"}, {"LABEL_0": 0}
    model.combination = None
    model.reward_head = {
        "model_type": "regression",
        "attributes": list(RATED_ATTRIBUTES),
        "weights": details["weights"],
        "verbosity_lambda": details["lambda"],
        "attribute_head": ATTRIBUTE_HEAD,
    }
