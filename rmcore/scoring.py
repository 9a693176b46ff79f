"""Score many conversations with a reward model: length-sorted batches, original order back.

Sorting by token length before batching means each batch pads to nearly its own length,
so little compute goes to padding; the rewards are put back in the caller's order. The
result does not depend on the batch size beyond float noise (padding is masked). On CPU,
``autocast_dtype=torch.bfloat16`` roughly halves the time (bf16 matmuls run ~2.2x faster
here); on a GPU the same code batches and autocasts on the model's device.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from contextlib import contextmanager, nullcontext
from typing import TYPE_CHECKING

import numpy as np

from rmcore.progress import Progress

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

Message = dict[str, str]


def resolve_max_length(model, max_length: int | None) -> int:
    """The token budget: the caller's, else the model's own ``max_length``."""
    budget = max_length if max_length is not None else getattr(model, "max_length", None)
    if budget is None:
        raise ValueError("no max_length: pass one, or load the model with a max_length")
    return int(budget)


def encode_conversations(
    model, conversations: Sequence[Sequence[Message]], *, max_length: int | None = None
) -> list[list[int]]:
    """Token ids per conversation (chat template, left-truncated to the budget)."""
    from rmcore import encoding

    budget = resolve_max_length(model, max_length)
    encoded = encoding.encode_conversations(
        model.tokenizer,
        list(conversations),
        max_length=budget,
        truncation="left",
        system_prompt=getattr(model, "system_prompt", "template"),
    )
    for i, ids in enumerate(encoded):
        if not ids:
            raise ValueError(f"conversation {i} encodes to no tokens; it cannot be scored")
    return encoded


def length_sorted_batches(lengths: Sequence[int], batch_size: int) -> list[np.ndarray]:
    """Index batches, longest first (a memory problem shows at once), stable for equal lengths."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = np.argsort(-np.asarray(lengths, dtype=np.int64), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def _pad_batch(batch: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    import torch

    width = max(len(ids) for ids in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    for row, ids in enumerate(batch):  # right padding: the last real token is where the mask ends
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention[row, : len(ids)] = 1
    return input_ids.to(device), attention.to(device)


def _reward_head(model):
    """The final Linear(hidden -> 1) of a reward model (``classifier`` or ``score``), if any."""
    import torch

    hf = getattr(model, "hf", model)
    for name in ("classifier", "score"):
        head = getattr(hf, name, None)
        if isinstance(head, torch.nn.Linear) and head.out_features == 1:
            return head
    return None


@contextmanager
def fp32_reward_head(model, *, low_precision: bool):
    """Compute the reward head's output in fp32 while the backbone runs in bf16.

    A bf16 output keeps ~3 significant digits, so rewards of similar answers collapse onto
    the same bf16 value: measured on 460 RewardBench pairs, ties went from 3 (fp32) to 21
    (bf16 autocast), and a tie counts as wrong. The hook recomputes the (tiny) last Linear
    from its input in fp32; the backbone keeps its bf16 speed.
    """
    import torch

    head = _reward_head(model) if low_precision else None
    if head is None:
        yield
        return

    def hook(module, args, output):
        with torch.autocast(device_type=args[0].device.type, enabled=False):
            bias = None if module.bias is None else module.bias.float()
            return torch.nn.functional.linear(args[0].float(), module.weight.float(), bias)

    handle = head.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def _param_dtype(model):
    import torch

    try:
        return next(model.parameters()).dtype
    except (AttributeError, StopIteration):
        return torch.float32


def _model_device(model):
    import torch

    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return torch.device("cpu")


def unique_sequences(encoded: Sequence[Sequence[int]]) -> tuple[list[tuple[int, ...]], np.ndarray]:
    """Distinct token sequences (first-seen order) and, per input, the index of its sequence."""
    index: dict[tuple[int, ...], int] = {}
    inverse = np.fromiter(
        (index.setdefault(tuple(ids), len(index)) for ids in encoded), np.int64, len(encoded)
    )
    return list(index), inverse


def score_token_ids(
    model,
    encoded: Sequence[Sequence[int]],
    *,
    batch_size: int = 16,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Raw rewards (float64, input order) for already-encoded conversations.

    Identical token sequences are scored once and share the reward, so two inputs the
    model cannot tell apart (e.g. chosen and rejected that differ only in the part cut
    off by left truncation) are an exact tie, as they are when scored one at a time,
    instead of a coin flip decided by float noise from different batch padding.
    """
    distinct, inverse = unique_sequences(encoded)
    return _score_distinct(model, distinct, batch_size=batch_size, autocast_dtype=autocast_dtype)[inverse]


def _score_distinct(
    model, encoded: list[tuple[int, ...]], *, batch_size: int, autocast_dtype: torch.dtype | None
) -> np.ndarray:
    import torch

    pad_id = model.tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError(
            "the model's tokenizer has no pad token; load it with rmcore.model.load_reward_model"
        )
    device = _model_device(model)
    rewards = np.empty(len(encoded), dtype=np.float64)
    autocast = (
        torch.autocast(device_type=device.type, dtype=autocast_dtype)
        if autocast_dtype is not None
        else nullcontext()
    )
    was_training = getattr(model, "training", False)
    if hasattr(model, "eval"):
        model.eval()
    low_precision = autocast_dtype is not None or _param_dtype(model) != torch.float32
    # a line every 15 s (none for work that ends sooner), a bar on the CLI's terminal
    progress = Progress("score", len(encoded), unit="sequence", every_seconds=15.0)
    done = 0
    try:
        with torch.inference_mode(), autocast, fp32_reward_head(model, low_precision=low_precision), progress:
            for index in length_sorted_batches([len(ids) for ids in encoded], batch_size):
                input_ids, attention = _pad_batch([list(encoded[i]) for i in index], pad_id, device)
                out = model(input_ids, attention)
                rewards[index] = out.float().reshape(-1).cpu().numpy()
                done += len(index)
                if done < len(encoded) or progress.lines:  # the closing line only after a long run
                    progress.update(done)
    finally:
        if was_training:
            model.train()
    return rewards


def score_conversations(
    model,
    conversations: Sequence[Sequence[Message]],
    *,
    batch_size: int = 16,
    max_length: int | None = None,
    autocast_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """Raw reward of each conversation (float64, same order as given).

    ``model`` is an ``rmcore.model.RewardModel`` (``forward(input_ids, attention_mask)``
    -> rewards[batch], with a ``tokenizer``); ``max_length`` defaults to the model's.
    """
    encoded = encode_conversations(model, conversations, max_length=max_length)
    log.debug("scoring %d conversations, %d tokens", len(encoded), sum(map(len, encoded)))
    return score_token_ids(model, encoded, batch_size=batch_size, autocast_dtype=autocast_dtype)
