"""The batch scorer: length-sorted batches, original order back, batch size does not matter."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import build_tiny_model_dir

from rmcore.model import load_reward_model
from rmcore.scoring import encode_conversations, length_sorted_batches, score_conversations

SENTENCE = "the good answer is here because you asked me a question about time and people"


def conversations(n: int = 11) -> list[list[dict[str, str]]]:
    """Conversations of clearly different lengths (so batches need padding)."""
    out = []
    for i in range(n):
        answer = " ".join(SENTENCE.split()[: 1 + (i * 5) % 15] * (1 + i % 3))
        out.append(
            [
                {"role": "user", "content": f"question {i} what is it"},
                {"role": "assistant", "content": answer},
            ]
        )
    return out


@pytest.fixture(
    scope="module", params=[("bert", "cls"), ("bert", "mean"), ("llama", "last")], ids=lambda p: "-".join(p)
)
def model(request, tmp_path_factory):
    arch, pooling = request.param
    folder = build_tiny_model_dir(tmp_path_factory.mktemp(arch) / "m", arch, pooling=pooling)
    return load_reward_model(str(folder), max_length=48)


def test_length_sorted_batches_longest_first_stable():
    batches = length_sorted_batches([3, 9, 3, 5, 9], 2)
    assert [b.tolist() for b in batches] == [[1, 4], [3, 0], [2]]
    with pytest.raises(ValueError):
        length_sorted_batches([1], 0)


def test_scores_do_not_depend_on_batch_size(model):
    convs = conversations()
    lengths = {len(ids) for ids in encode_conversations(model, convs)}
    assert len(lengths) > 3  # the batches really pad
    reference = score_conversations(model, convs, batch_size=1)
    for batch_size in (2, 3, 16):
        np.testing.assert_allclose(
            score_conversations(model, convs, batch_size=batch_size), reference, atol=1e-5
        )


def test_original_order_is_restored(model):
    convs = conversations()
    batched = score_conversations(model, convs, batch_size=4)
    one_by_one = np.array([score_conversations(model, [c])[0] for c in convs])
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    assert batched.dtype == np.float64 and batched.shape == (len(convs),)
    assert len(set(np.round(batched, 6))) > 1  # not a constant model


def test_bf16_autocast_is_close_to_fp32(model):
    convs = conversations()
    fp32 = score_conversations(model, convs, batch_size=4)
    bf16 = score_conversations(model, convs, batch_size=4, autocast_dtype=torch.bfloat16)
    assert not np.array_equal(fp32, bf16)  # autocast really ran in bf16
    # bf16 keeps 8 bits of mantissa: a few 1e-2 relative to the reward scale
    assert np.max(np.abs(fp32 - bf16)) < 0.05 * max(1.0, np.max(np.abs(fp32)))


def test_model_left_in_training_mode_is_restored(model):
    model.train()
    score_conversations(model, conversations(2))
    assert model.training
    model.eval()


class CountingModel(torch.nn.Module):
    """The real reward model, counting the sequences it is asked to score."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.tokenizer = inner.tokenizer
        self.max_length = inner.max_length
        self.rows = 0

    def forward(self, input_ids, attention_mask):
        self.rows += input_ids.shape[0]
        return self.inner(input_ids, attention_mask)


def test_identical_inputs_score_once_and_tie_exactly(model):
    convs = conversations(7)
    # conversation 2 repeated at the end: it lands in another batch with other padding
    convs = [*convs, convs[2], convs[2]]
    counting = CountingModel(model)
    scores = score_conversations(counting, convs, batch_size=2)
    assert counting.rows == 7  # the duplicates were not scored again
    assert scores[2] == scores[7] == scores[8]
    np.testing.assert_allclose(scores[:7], score_conversations(model, convs[:7], batch_size=1), atol=1e-5)


@pytest.mark.parametrize("bf16_weights", [False, True], ids=["autocast", "bf16-weights"])
def test_bf16_rewards_are_not_rounded_to_bf16(tmp_path, bf16_weights):
    # A bf16 head output has ~3 significant digits: similar answers would tie (= wrong).
    folder = build_tiny_model_dir(tmp_path / "m", "bert", pooling="cls")
    model = load_reward_model(str(folder), max_length=48, dtype=torch.bfloat16 if bf16_weights else None)
    dtype = None if bf16_weights else torch.bfloat16
    rewards = score_conversations(model, conversations(), batch_size=4, autocast_dtype=dtype)
    as_bf16 = torch.tensor(rewards).to(torch.bfloat16).double().numpy()
    assert (rewards != as_bf16).sum() >= len(rewards) // 2  # fp32 head: off the bf16 grid
    assert len(set(rewards.tolist())) == len(rewards)
