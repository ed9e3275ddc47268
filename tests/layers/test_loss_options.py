"""Issue 14's loss options against torch.nn.functional in float64: reduction="none", class
weights, pos_weight, BCE on probabilities, KL divergence (value and δ = gradient of the sum)."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import losses

torch = pytest.importorskip("torch")
F = torch.nn.functional

RNG = np.random.default_rng(3)
LOGITS = RNG.normal(size=(7, 4)) * 2
LABELS = np.array([0, 3, 1, 2, 3, 0, 1])
SOFT = RNG.dirichlet(np.ones(4), size=7)
WEIGHT = np.array([0.5, 2.0, 1.0, 3.0])
Z = RNG.normal(size=(7, 4)) * 3
T = (RNG.random(size=(7, 4)) > 0.5).astype(float)


def ours(loss, output, target):
    value, delta = loss(gf.device("cpu").send(output, "float64"), gf.device("cpu").send(target))
    return gf.to_numpy(value), gf.to_numpy(delta)


def theirs(function, output, target):
    x = torch.tensor(output, dtype=torch.float64, requires_grad=True)
    value = function(x, torch.tensor(target))
    value.sum().backward()
    return value.detach().numpy(), x.grad.numpy()


CASES = {
    "ce_none": (losses.SoftmaxCrossEntropy(reduction="none"), lambda x, t: F.cross_entropy(x, t, reduction="none"), LOGITS, LABELS),
    "ce_weight_mean": (losses.SoftmaxCrossEntropy(weight=WEIGHT), lambda x, t: F.cross_entropy(x, t, weight=torch.tensor(WEIGHT)), LOGITS, LABELS),
    "ce_weight_none": (losses.SoftmaxCrossEntropy(weight=WEIGHT, reduction="none"),
                       lambda x, t: F.cross_entropy(x, t, weight=torch.tensor(WEIGHT), reduction="none"), LOGITS, LABELS),
    "ce_weight_ignore": (losses.SoftmaxCrossEntropy(weight=WEIGHT, ignore_index=3),
                         lambda x, t: F.cross_entropy(x, t, weight=torch.tensor(WEIGHT), ignore_index=3), LOGITS, LABELS),
    "ce_weight_soft": (losses.SoftmaxCrossEntropy(weight=WEIGHT), lambda x, t: F.cross_entropy(x, t, weight=torch.tensor(WEIGHT)), LOGITS, SOFT),
    "nll_weight": (losses.NLL(weight=WEIGHT), lambda x, t: F.nll_loss(x, t, weight=torch.tensor(WEIGHT)), np.log(SOFT), LABELS),
    "nll_none": (losses.NLL(reduction="none"), lambda x, t: F.nll_loss(x, t, reduction="none"), np.log(SOFT), LABELS),
    "mse_none": (losses.MSE(reduction="none"), lambda x, t: F.mse_loss(x, t, reduction="none"), Z, T),
    "l1_none": (losses.L1(reduction="none"), lambda x, t: F.l1_loss(x, t, reduction="none"), Z, T),
    "huber_none": (losses.Huber(delta=0.7, reduction="none"), lambda x, t: F.huber_loss(x, t, delta=0.7, reduction="none"), Z, T),
    "bce_logits_pos_weight": (losses.BCEWithLogits(pos_weight=[0.5, 1.0, 2.0, 4.0]),
                              lambda x, t: F.binary_cross_entropy_with_logits(x, t, pos_weight=torch.tensor([0.5, 1.0, 2.0, 4.0], dtype=torch.float64)), Z, T),
    "bce_logits_pos_weight_none": (losses.BCEWithLogits(pos_weight=3.0, reduction="none"),
                                   lambda x, t: F.binary_cross_entropy_with_logits(x, t, pos_weight=torch.tensor(3.0, dtype=torch.float64), reduction="none"), Z, T),
    "bce": (losses.BCE(), lambda x, t: F.binary_cross_entropy(x, t), 1 / (1 + np.exp(-Z)), T),
    "bce_sum_soft": (losses.BCE(reduction="sum"), lambda x, t: F.binary_cross_entropy(x, t, reduction="sum"), 1 / (1 + np.exp(-Z)), SOFT),
    "kl_batchmean": (losses.KLDivergence(), lambda x, t: F.kl_div(x, t, reduction="batchmean"), np.log(SOFT[::-1].copy()), SOFT),
    "kl_mean": (losses.KLDivergence(reduction="mean"), lambda x, t: F.kl_div(x, t, reduction="mean"), np.log(SOFT[::-1].copy()), SOFT),
    "kl_none_log_target": (losses.KLDivergence(reduction="none", log_target=True),
                           lambda x, t: F.kl_div(x, t, reduction="none", log_target=True), np.log(SOFT[::-1].copy()), np.log(SOFT)),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_loss_option_matches_torch_in_float64(name):
    loss, function, output, target = CASES[name]
    value, delta = ours(loss, output, target)
    expected_value, expected_delta = theirs(function, output, target)
    np.testing.assert_allclose(value, expected_value, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(delta, expected_delta, rtol=1e-10, atol=1e-12)


def test_kl_divergence_with_zero_target_probabilities_matches_torch():
    target = SOFT.copy()
    target[0] = [0.0, 0.5, 0.5, 0.0]
    value, delta = ours(losses.KLDivergence(), np.log(SOFT), target)
    expected_value, expected_delta = theirs(lambda x, t: F.kl_div(x, t, reduction="batchmean"), np.log(SOFT), target)
    np.testing.assert_allclose(value, expected_value, rtol=1e-12)
    np.testing.assert_allclose(delta, expected_delta, rtol=1e-12)


def test_reduction_none_trains_through_fit_free_backprop():
    from gradflow import layers as L

    layer = L.Linear(4, 4, rng=0).to("cpu", "float64")
    x = np.random.default_rng(0).normal(size=(7, 4))
    y, backprop = layer(x, train=True)
    per_item, delta = losses.SoftmaxCrossEntropy(reduction="none")(y, LABELS)
    assert per_item.shape == (7,)
    backprop(delta)
    assert layer.weight.grad.shape == (4, 4)
