"""Numerical edge cases: extreme logits, exact 0/1 targets, log of zero probabilities, constant
inputs to normalisation layers and huge inputs to every layer, in float32 and float64."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import backend, layers as L, losses
from tests.cases import layer_cases
from tests.layers.test_bad_input import _send

DTYPES = ["float32", "float64"]
EXTREME = np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, -1e4], [1e4, 1e4, -1e4]])


def _finite(*arrays) -> bool:
    return all(np.all(np.isfinite(gf.to_numpy(a))) for a in arrays)


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_is_finite_and_exact_for_logits_of_1e4(device, dtype):
    logits = device.send(EXTREME, dtype)
    labels = device.send(np.array([1, 1, 2]))
    value, delta = losses.SoftmaxCrossEntropy()(logits, labels)
    assert _finite(value, delta)
    # per item: 2e4, 0, 2e4 + log 2 (two tied winners); δ = softmax - one-hot, entries in {0, ±0.5, ±1}
    assert float(gf.to_numpy(value)) == pytest.approx((2e4 + 0 + 2e4 + np.log(2)) / 3, rel=1e-6)
    expected = np.array([[1, -1, 0], [0, 0, 0], [0.5, 0.5, -1]]) / 3
    np.testing.assert_allclose(gf.to_numpy(delta), expected, atol=1e-7)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.1, 0.5])
def test_label_smoothing_with_logits_of_1e4_stays_finite(device, dtype, smoothing):
    value, delta = losses.SoftmaxCrossEntropy(label_smoothing=smoothing)(device.send(EXTREME, dtype), device.send(np.array([0, 1, 2])))
    assert _finite(value, delta)
    assert float(gf.to_numpy(value)) > 1e3  # the smoothed mass on the -1e4 classes costs about ε/3 · 2e4


@pytest.mark.parametrize("dtype", DTYPES)
def test_bce_with_logits_of_1e4_at_exact_zero_and_one_targets(device, dtype):
    logits = device.send(np.array([[1e4, -1e4], [1e4, -1e4]]), dtype)
    targets = device.send(np.array([[1.0, 0.0], [0.0, 1.0]]), dtype)  # right, right; wrong, wrong
    value, delta = losses.BCEWithLogits(reduction="sum")(logits, targets)
    assert _finite(value, delta)
    assert float(gf.to_numpy(value)) == pytest.approx(2e4, rel=1e-6)
    np.testing.assert_array_equal(gf.to_numpy(delta), [[0.0, 0.0], [1.0, -1.0]])


@pytest.mark.parametrize("dtype", DTYPES)
def test_nll_on_log_softmax_of_extreme_logits_never_takes_log_of_zero(device, dtype):
    log_p, backprop = L.LogSoftmax()(device.send(EXTREME, dtype), train=True)
    assert _finite(log_p)  # a probability that underflows to 0 still has a finite log (−2e4)
    assert float(gf.to_numpy(log_p)[0, 1]) == pytest.approx(-2e4, rel=1e-6)
    value, delta = losses.NLL()(log_p, device.send(np.array([1, 0, 2])))
    assert _finite(value, delta, backprop(delta))
    assert float(gf.to_numpy(value)) == pytest.approx((2e4 + 2e4 + 2e4 + np.log(2)) / 3, rel=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("make", [L.Softmax, L.LogSoftmax, L.Sigmoid, L.Tanh, L.SiLU, L.GELU, lambda: L.GELU("tanh"), L.ELU])
def test_activations_of_logits_of_1e4_are_finite_forward_and_backward(device, dtype, make):
    layer = make()
    y, backprop = layer(device.send(EXTREME, dtype), train=True)
    dx = backprop(device.send(np.ones(EXTREME.shape), dtype))
    assert _finite(y, dx), f"{layer.describe()}: {gf.to_numpy(y)} / {gf.to_numpy(dx)}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_a_finite_output_whose_loss_overflows_is_named_as_divergence(device, dtype):
    huge = 1e20 if dtype == "float32" else 1e160
    output = device.send(np.array([[huge, 0.0]]), dtype)
    with pytest.raises(FloatingPointError, match=r"MSE: the loss overflowed although the model output is finite "
                                                 r"\(largest \|output\| 1e\+(20|160)\); the model is diverging"):
        with np.errstate(over="ignore"):
            losses.MSE()(output, device.send(np.zeros((1, 2)), dtype))


# --------------------------------------------------------------------------------------------
# Every registry layer: constant inputs and huge inputs stay finite (forward and backward)
# --------------------------------------------------------------------------------------------

FLOAT_CASES = [c for c in layer_cases() if np.issubdtype(np.asarray(c.x).dtype, np.floating)]


def _forward_backward(case, device, x_host, dtype):
    layer = case.make().to(device, dtype)
    if case.before_forward:
        case.before_forward(layer)
    kwargs = {k: _send(device, v, dtype) for k, v in case.call_kwargs.items()}
    y, backprop = layer(device.send(x_host, dtype), True, **kwargs)
    if not backend.is_array(y):
        pytest.skip(f"{case.name} returns a {type(y).__name__}")
    dx = backprop(device.send(np.random.default_rng(0).normal(size=tuple(y.shape)), dtype))
    grads = [p.grad for p in layer.parameters() if p.grad is not None]
    if case.inputs:  # (dx, δ of each keyword input): the input δs must be finite too
        dx, input_deltas = dx[0], dx[1:]
        grads += list(input_deltas)
    return layer, y, dx, grads


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FLOAT_CASES, ids=[c.name for c in FLOAT_CASES])
def test_every_layer_on_a_constant_input_has_finite_outputs_and_gradients(case, device, dtype):
    """Zero variance is the edge case of LayerNorm and BatchNorm; ties that of max-pooling."""
    x = np.full(np.shape(case.x), 0.75)
    layer, y, dx, grads = _forward_backward(case, device, x, dtype)
    assert _finite(y, *grads) and (dx is None or _finite(dx)), f"{layer.describe()} is not finite on a constant input"


# Layers whose output legitimately overflows for inputs of 1e4 (e.g. a polynomial), with why.
HUGE_INPUT_OVERFLOWS: dict[str, str] = {}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", FLOAT_CASES, ids=[c.name for c in FLOAT_CASES])
def test_every_layer_on_inputs_of_magnitude_1e4_has_finite_outputs_and_gradients(case, device, dtype):
    if case.name in HUGE_INPUT_OVERFLOWS:
        pytest.skip(HUGE_INPUT_OVERFLOWS[case.name])
    x = np.asarray(case.x, dtype=np.float64)
    x = x / max(float(np.max(np.abs(x))), 1e-12) * 1e4
    layer, y, dx, grads = _forward_backward(case, device, x, dtype)
    assert _finite(y, *grads) and (dx is None or _finite(dx)), f"{layer.describe()} is not finite for inputs of 1e4"
