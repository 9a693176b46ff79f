"""Plackett-Luce over whole rankings: hand-worked values, ties, padding, and k = 2 == Bradley-Terry."""

from __future__ import annotations

import math

import pytest
import torch

from rmcore.train.listwise_loss import plackett_luce_loss
from rmcore.train.loss import bradley_terry_loss

LSE_3 = math.log(math.e + 1 + math.exp(-1))  # log(e^1 + e^0 + e^-1) = log 4.086161 = 1.407606


def test_k2_is_exactly_the_bradley_terry_loss_value_and_gradient() -> None:
    # r = (2.0, 0.5), first better: -(2.0 - log(e^2 + e^0.5)) = log(1 + e^-1.5) = 0.201413
    r = torch.tensor([[2.0, 0.5], [-0.3, 0.4]], dtype=torch.float64, requires_grad=True)
    loss, metrics = plackett_luce_loss(r, torch.tensor([[0, 1], [0, 1]]))
    loss.backward()
    pl_grad = r.grad.clone()
    assert math.isclose(math.log1p(math.exp(-1.5)), 0.2014132779827524)
    expected = (math.log1p(math.exp(-1.5)) + math.log1p(math.exp(0.7))) / 2  # second pair ranked wrong
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    rc = r.detach()[:, 0].clone().requires_grad_(True)
    rr = r.detach()[:, 1].clone().requires_grad_(True)
    bt, bt_metrics = bradley_terry_loss(rc, rr)
    bt.backward()
    assert loss.item() == pytest.approx(bt.item(), abs=1e-12)
    torch.testing.assert_close(pl_grad, torch.stack([rc.grad, rr.grad], dim=1), rtol=0, atol=1e-12)
    assert metrics["accuracy"] == bt_metrics["accuracy"] == 0.5


def test_three_ranked_responses_hand_worked() -> None:
    # r = (1, 0, -1) ranked in that order:
    #   pick 1st from all three: 1 - log(e + 1 + e^-1) = 1 - 1.407606 = -0.407606
    #   pick 2nd from the last two: 0 - log(1 + e^-1) = -0.313262
    #   loss = 0.407606 + 0.313262 = 0.720868
    r = torch.tensor([[1.0, 0.0, -1.0]], dtype=torch.float64)
    loss, metrics = plackett_luce_loss(r, torch.tensor([[0, 1, 2]]))
    assert loss.item() == pytest.approx((LSE_3 - 1) + math.log1p(math.exp(-1)), abs=1e-12)
    assert loss.item() == pytest.approx(0.720868, abs=1e-6)
    assert metrics == {"loss": pytest.approx(0.720868, abs=1e-6), "accuracy": 1.0, "top1": 1.0}
    # the order the responses come in does not matter, only their tiers
    shuffled, _ = plackett_luce_loss(torch.tensor([[-1.0, 1.0, 0.0]], dtype=torch.float64), torch.tensor([[2, 0, 1]]))
    assert shuffled.item() == pytest.approx(loss.item(), abs=1e-12)


def test_ties_share_their_competitors_and_the_last_tier_adds_nothing() -> None:
    r = torch.tensor([[1.0, 0.0, -1.0]], dtype=torch.float64)
    # tiers (0, 0, 1): both tied best responses are picked from all three (Breslow):
    #   (1 - 1.407606) + (0 - 1.407606) = -1.815212 -> loss 1.815212; the last tier adds nothing
    top_tie, metrics = plackett_luce_loss(r, torch.tensor([[0, 0, 1]]))
    assert top_tie.item() == pytest.approx(2 * LSE_3 - 1, abs=1e-12)
    assert metrics["accuracy"] == 1.0  # 2 ordered pairs (0>2, 1>2), both right; the tied pair is not counted
    # tiers (0, 1, 1): only the best response's pick counts: 1.407606 - 1 = 0.407606
    bottom_tie, _ = plackett_luce_loss(r, torch.tensor([[0, 1, 1]]))
    assert bottom_tie.item() == pytest.approx(LSE_3 - 1, abs=1e-12)
    # all tied: no preference, no loss
    none, _ = plackett_luce_loss(r, torch.tensor([[0, 0, 0]]))
    assert none.item() == 0.0


def test_padding_masks_missing_responses_and_groups_average() -> None:
    # group 1: three ranked responses (0.720868 above); group 2: a pair padded to k = 3,
    # (0.5 over -0.5): log(1 + e^-1) = 0.313262; mean = (0.720868 + 0.313262) / 2 = 0.517065
    r = torch.tensor([[1.0, 0.0, -1.0], [0.5, -0.5, 99.0]], dtype=torch.float64, requires_grad=True)
    tiers = torch.tensor([[0, 1, 2], [0, 1, 0]])
    mask = torch.tensor([[True, True, True], [True, True, False]])
    loss, metrics = plackett_luce_loss(r, tiers, mask)
    assert loss.item() == pytest.approx(((LSE_3 - 1) + 2 * math.log1p(math.exp(-1))) / 2, abs=1e-12)
    assert metrics["top1"] == 1.0  # the padded 99.0 is not a response
    loss.backward()
    assert r.grad[1, 2].item() == 0.0 and all(r.grad[0] != 0)


def test_bad_shapes_and_single_response_groups_are_refused() -> None:
    with pytest.raises(ValueError, match=r"\[groups, k\]"):
        plackett_luce_loss(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="at least 2 responses"):
        plackett_luce_loss(torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.long), torch.tensor([[True, False]]))
