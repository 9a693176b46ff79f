"""Multi-objective regression model (ArmoRM stage 1): masked MSE, correlations, debiasing, head folding.

Expected values are worked out by hand in the comments.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from data_contracts import RATED_ATTRIBUTES
from rmcore.train.regression import (
    VerbosityDebias,
    attribute_metrics,
    average_ranks,
    combination_vector,
    correlation_interval,
    fit_verbosity_debias,
    fold_head,
    masked_mse_loss,
    pearson,
    spearman,
    weights_with_debias,
)

NAN = float("nan")


def test_masked_mse_value_and_gradient_by_hand():
    # pred   = [[1, 2, 3, 4, 0], [0, 1, 2, 3, 4]]
    # target = [[2, -, 3, 2, 1], [-, 1, 4, -, 2]]       (- = NaN, 3 masked, k = 7 labelled)
    # p - t on labelled entries: (0,0) -1, (0,2) 0, (0,3) 2, (0,4) -1, (1,1) 0, (1,2) -2, (1,4) 2
    # sum of squares = 1 + 0 + 4 + 1 + 0 + 4 + 4 = 14, L = 14 / 7 = 2, rmse = sqrt(2)
    # dL/dp = 2 (p - t) / 7 when labelled, 0 when masked.
    pred = torch.tensor([[1.0, 2, 3, 4, 0], [0, 1, 2, 3, 4]], requires_grad=True)
    target = torch.tensor([[2.0, NAN, 3, 2, 1], [NAN, 1, 4, NAN, 2]])
    loss, metrics = masked_mse_loss(pred, target)
    loss.backward()
    assert loss.dim() == 0 and loss.dtype == torch.float32
    assert loss.item() == pytest.approx(2.0)
    assert metrics == pytest.approx({"loss": 2.0, "rmse": math.sqrt(2.0)})
    expected = torch.tensor([[-2.0, 0, 0, 4, -2], [0, 0, -4, 0, 4]]) / 7
    assert torch.allclose(pred.grad, expected, atol=1e-7)


def test_masked_mse_is_float32_for_bf16_predictions():
    pred = torch.tensor([[1.0, 2.0]], dtype=torch.bfloat16, requires_grad=True)
    loss, _ = masked_mse_loss(pred, torch.tensor([[0.0, NAN]]))
    loss.backward()
    assert loss.dtype == torch.float32 and loss.item() == 1.0  # (1 - 0)^2 / 1
    assert pred.grad.dtype == torch.bfloat16 and pred.grad.tolist() == [[2.0, 0.0]]


def test_all_masked_gives_zero_loss_and_backward_runs():
    pred = torch.randn(2, 5, requires_grad=True)
    loss, metrics = masked_mse_loss(pred, torch.full((2, 5), NAN))
    loss.backward()
    assert loss.item() == 0.0 and metrics == {"loss": 0.0, "rmse": 0.0}
    assert torch.equal(pred.grad, torch.zeros(2, 5))


def test_masked_mse_shape_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"\(2, 5\) vs \(2, 4\)"):
        masked_mse_loss(torch.zeros(2, 5), torch.zeros(2, 4))


def test_combination_vector_default_weights_and_unknown_name():
    assert RATED_ATTRIBUTES == ("helpfulness", "correctness", "coherence", "complexity", "verbosity")
    vector = combination_vector({"helpfulness": 0.5, "correctness": 0.5})
    assert vector.dtype == torch.float32 and vector.tolist() == [0.5, 0.5, 0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="helpfullness"):
        combination_vector({"helpfullness": 1.0})


def test_weights_with_debias_subtracts_at_verbosity():
    vector = combination_vector({"helpfulness": 0.5, "correctness": 0.5})
    assert weights_with_debias(vector, 0.25).tolist() == [0.5, 0.5, 0.0, 0.0, -0.25]
    assert vector[4].item() == 0.0  # the input is left alone
    with pytest.raises(ValueError, match=">= 0"):
        weights_with_debias(vector, -1.0)


def test_pearson_and_spearman_by_hand():
    # x = [1, 2, 3, 4], y = [2, 4, 5, 9]: dx = [-1.5, -.5, .5, 1.5], dy = [-3, -1, 0, 4],
    # sxy = 4.5 + .5 + 0 + 6 = 11, sxx = 5, syy = 26 -> r = 11 / sqrt(130) = 0.96476...
    assert pearson([1, 2, 3, 4], [2, 4, 5, 9]) == pytest.approx(11 / math.sqrt(130), abs=1e-12)
    # y = [1, 3, 2, 4]: rank differences d = [0, 1, 1, 0], rho = 1 - 6 * 2 / (4 * 15) = 0.8
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8, abs=1e-12)
    # ties: x = [1, 2, 2, 3] ranks [1, 2.5, 2.5, 4]; against y ranks [1, 2, 3, 4]:
    # dx = [-1.5, 0, 0, 1.5], dy = [-1.5, -.5, .5, 1.5], sxy = 4.5, sxx = 4.5, syy = 5
    # -> rho = 4.5 / sqrt(22.5) = 3 / sqrt(10) = 0.94868...
    assert average_ranks([1, 2, 2, 3]).tolist() == [1.0, 2.5, 2.5, 4.0]
    assert average_ranks([3, 1, 3, 3]).tolist() == [3.0, 1.0, 3.0, 3.0]  # ranks 2, 3, 4 -> 3
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(3 / math.sqrt(10), abs=1e-12)
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3])) and math.isnan(spearman([2, 2], [1, 2]))
    with pytest.raises(ValueError, match="3 and 2"):
        pearson([1, 2, 3], [1, 2])


def test_fisher_interval_by_hand():
    # r = 0.5, n = 28: z = atanh(0.5) = 0.5493061, se = 1 / sqrt(25) = 0.2,
    # half-width = 1.959964 * 0.2 = 0.3919928 -> z in [0.1573133, 0.9412989]
    # -> r in [tanh(0.1573133), tanh(0.9412989)] = [0.1560284, 0.7358185]
    low, high = correlation_interval(0.5, 28)
    assert (low, high) == pytest.approx((0.1560284, 0.7358185), abs=1e-7)
    assert all(math.isnan(b) for b in correlation_interval(0.5, 3))
    assert all(math.isnan(b) for b in correlation_interval(NAN, 100))
    assert correlation_interval(1.0, 10) == pytest.approx((1.0, 1.0), abs=1e-6)
    assert correlation_interval(-1.0, 10) == pytest.approx((-1.0, -1.0), abs=1e-6)
    # 90%: quantile 1.6448536 -> z in [0.5493061 -/+ 0.3289707]
    low90, high90 = correlation_interval(0.5, 28, confidence=0.90)
    assert (low90, high90) == pytest.approx((math.tanh(0.2203354), math.tanh(0.8782768)), abs=1e-6)


def test_attribute_metrics_masks_unlabelled_rows_and_survives_a_constant_column():
    # helpfulness: the 5th row is unlabelled, so pred [1, 2, 3, 4] vs target [1, 3, 2, 4]:
    #   pearson = spearman = 0.8 (dx = [-1.5, -.5, .5, 1.5], dy = [-1.5, .5, -.5, 1.5], 4 / 5),
    #   interval (n = 4, se = 1): tanh(atanh(0.8) -/+ 1.959964) = tanh(1.0986123 -/+ 1.959964)
    #   = (-0.6969534, 0.9956003); rmse = sqrt((0 + 1 + 1 + 0) / 4) = sqrt(0.5)
    # verbosity: constant target -> NaN correlations; rmse = sqrt((4 + 1 + 0 + 1 + 4) / 5) = sqrt(2)
    pred = np.array([[1.0, 0], [2, 1], [3, 2], [4, 3], [9, 4]])
    target = np.array([[1.0, 2], [3, 2], [2, 2], [4, 2], [NAN, 2]])
    metrics = attribute_metrics(pred, target, attributes=("helpfulness", "verbosity"))
    helpful = metrics["helpfulness"]
    assert helpful["n"] == 4
    assert helpful["pearson"] == pytest.approx(0.8) and helpful["spearman"] == pytest.approx(0.8)
    assert (helpful["pearson_low"], helpful["pearson_high"]) == pytest.approx(
        (-0.6969534, 0.9956003), abs=1e-7
    )
    assert helpful["spearman_low"] == pytest.approx(helpful["pearson_low"])
    assert helpful["rmse"] == pytest.approx(math.sqrt(0.5))
    verbose = metrics["verbosity"]
    assert verbose["n"] == 5 and verbose["rmse"] == pytest.approx(math.sqrt(2.0))
    for key in ("pearson", "pearson_low", "pearson_high", "spearman", "spearman_low", "spearman_high"):
        assert math.isnan(verbose[key]), key
    with pytest.raises(ValueError, match=r"\[n, 5\]"):
        attribute_metrics(pred, target)


def _lengthy_rows(n: int = 2000) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    quality = rng.normal(size=n)  # independent of length
    verbosity = rng.normal(size=n)
    lengths = 300 * np.exp(verbosity + 0.3 * rng.normal(size=n))  # longer when more verbose
    return quality, verbosity, lengths


def test_verbosity_debias_recovers_the_verbosity_weight():
    # combined = quality + 2 * verbosity: subtracting ~2 * verbosity leaves quality, which does not
    # track length, so the fitted lambda lands near 2 and the Spearman with length near 0.
    quality, verbosity, lengths = _lengthy_rows()
    fit = fit_verbosity_debias(quality + 2 * verbosity, verbosity, lengths)
    assert isinstance(fit, VerbosityDebias) and fit.n == 2000
    assert fit.spearman_before > 0.5
    assert abs(fit.spearman_after) < 0.05
    assert fit.lam == pytest.approx(2.0, abs=0.15)
    assert spearman(quality + 2 * verbosity - fit.lam * verbosity, lengths) == pytest.approx(
        fit.spearman_after
    )


def test_verbosity_debias_is_zero_when_reward_already_favours_short_answers():
    quality, verbosity, lengths = _lengthy_rows()
    fit = fit_verbosity_debias(quality - 2 * verbosity, verbosity, lengths)
    assert fit.lam == 0.0 and fit.spearman_before < 0 and fit.spearman_after == fit.spearman_before


def test_fold_head_matches_the_combined_outputs():
    torch.manual_seed(0)
    head = torch.nn.Linear(16, 5)
    hidden = torch.randn(7, 16)
    vector = weights_with_debias(combination_vector({"helpfulness": 0.5, "correctness": 0.5}), 0.3)
    folded = fold_head(head, vector)
    assert folded.out_features == 1 and folded.in_features == 16 and folded is not head
    assert folded.weight.dtype == head.weight.dtype
    assert torch.allclose(folded(hidden), head(hidden) @ vector.unsqueeze(1), atol=1e-6)
    no_bias = torch.nn.Linear(16, 5, bias=False)
    folded = fold_head(no_bias, vector)
    assert folded.bias is None
    assert torch.allclose(folded(hidden).squeeze(1), no_bias(hidden) @ vector, atol=1e-6)
    with pytest.raises(ValueError, match="5 outputs"):
        fold_head(head, torch.ones(4))
