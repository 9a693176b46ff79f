"""Bradley-Terry loss: values and gradients worked out by hand (seed 000)."""

from __future__ import annotations

import math

import pytest
import torch

from rmcore.train.loss import bradley_terry_loss, split_rewards

LN2 = math.log(2.0)


def test_loss_and_gradient_of_seed_000():
    # One pair, r_c = 2, r_r = 0: sigmoid(2) = 0.8807970779778823,
    # L = -log sigmoid(2) = log(1 + e^-2) = 0.12692801104297263,
    # dL/dr_c = -(1 - sigmoid(2)) = -0.11920292202211757, dL/dr_r = +0.11920292202211757.
    r_c = torch.tensor([2.0], dtype=torch.float64, requires_grad=True)
    r_r = torch.tensor([0.0], dtype=torch.float64, requires_grad=True)
    loss, metrics = bradley_terry_loss(r_c, r_r)
    loss.backward()
    assert loss.item() == pytest.approx(0.12692801104297263, abs=1e-12)
    assert r_c.grad.item() == pytest.approx(-0.11920292202211757, abs=1e-12)
    assert r_r.grad.item() == pytest.approx(0.11920292202211757, abs=1e-12)
    assert metrics["accuracy"] == 1.0 and metrics["mean_margin"] == 2.0


def test_batch_mean_metrics_and_tie_counts_as_wrong():
    # Pairs (2, 0) and (0, 0): L = (0.12692801104297263 + ln 2) / 2 = 0.41003759580145896.
    # Gradients are divided by N = 2: dL/dr_c = [-0.11920292/2, -0.5/2].
    r_c = torch.tensor([2.0, 0.0], dtype=torch.float64, requires_grad=True)
    r_r = torch.tensor([0.0, 0.0], dtype=torch.float64, requires_grad=True)
    loss, m = bradley_terry_loss(r_c, r_r)
    loss.backward()
    assert loss.item() == pytest.approx(0.41003759580145896, abs=1e-12)
    assert r_c.grad.tolist() == pytest.approx([-0.059601461011058785, -0.25], abs=1e-12)
    assert m["accuracy"] == 0.5  # the tie is not a correct ranking
    assert m["mean_margin"] == 1.0
    # rewards [2, 0, 0, 0]: mean 0.5, population std sqrt((1.5^2 + 3 * 0.5^2) / 4) = sqrt(0.75)
    assert m["reward_mean"] == pytest.approx(0.5)
    assert m["reward_std"] == pytest.approx(math.sqrt(0.75))


def test_equal_rewards_give_ln2():
    loss, m = bradley_terry_loss(torch.zeros(4), torch.zeros(4))
    assert loss.item() == pytest.approx(LN2)
    assert m["accuracy"] == 0.0


def test_margin_is_subtracted_from_the_reward_gap():
    # r_c - r_r = 1 and margin 1: -log sigmoid(0) = ln 2; margin 0 gives log(1 + e^-1).
    loss, _ = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=torch.tensor([1.0]))
    assert loss.item() == pytest.approx(LN2)
    loss, _ = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), margin=0.0)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)))


def test_centering_term_adds_coef_times_mean_square_sum():
    # log(1 + e^-1) = 0.31326168751822286; (r_c + r_r)^2 = 1; 0.5 * 1 = 0.5.
    loss, _ = bradley_terry_loss(torch.tensor([1.0]), torch.tensor([0.0]), center_coef=0.5)
    assert loss.item() == pytest.approx(0.8132616875182229)


def test_hinge_is_zero_beyond_the_margin():
    # max(0, 1 - 0.25) = 0.75 and max(0, 1 - 3) = 0 -> mean 0.375; with margin 2 and gap 1: 1.
    loss, _ = bradley_terry_loss(torch.tensor([0.25, 3.0]), torch.tensor([0.0, 0.0]), hinge=True)
    assert loss.item() == pytest.approx(0.375)
    loss, _ = bradley_terry_loss(
        torch.tensor([1.0]), torch.tensor([0.0]), margin=torch.tensor([2.0]), hinge=True
    )
    assert loss.item() == pytest.approx(1.0)


def test_one_forward_is_split_chosen_block_then_rejected_block():
    rewards = torch.tensor([1.0, 2.0, 3.0, -1.0, -2.0, -3.0])
    r_c, r_r = split_rewards(rewards)
    assert r_c.tolist() == [1.0, 2.0, 3.0] and r_r.tolist() == [-1.0, -2.0, -3.0]
    with pytest.raises(ValueError, match="even number"):
        split_rewards(torch.zeros(3))
