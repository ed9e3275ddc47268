"""Losses reject bad input with a clear error, and stay finite where they promise to."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import losses
from gradflow.backend import DeviceError


def _logits(device, values=None):
    values = np.random.default_rng(0).normal(size=(4, 3)) if values is None else values
    return device.send(values, "float32")


def test_cross_entropy_rejects_labels_out_of_range(device):
    with pytest.raises(ValueError, match=r"SoftmaxCrossEntropy: labels must lie in \[0, 2\] for 3 classes, got values in \[0, 3\]"):
        losses.SoftmaxCrossEntropy()(_logits(device), device.send(np.array([0, 1, 2, 3])))
    with pytest.raises(ValueError, match=r"got values in \[-1, 2\]"):
        losses.SoftmaxCrossEntropy()(_logits(device), device.send(np.array([0, 1, 2, -1])))


def test_cross_entropy_rejects_float_labels_and_wrong_shapes(device):
    with pytest.raises(TypeError, match="integer class labels expected, got dtype float32"):
        losses.SoftmaxCrossEntropy()(_logits(device), device.send(np.array([0.0, 1, 2, 1]), "float32"))
    with pytest.raises(ValueError, match=r"expected integer labels of shape \(4,\) or a distribution of shape \(4, 3\), got target of shape \(5,\)"):
        losses.SoftmaxCrossEntropy()(_logits(device), device.send(np.array([0, 1, 2, 1, 0])))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")  # inf - inf is the point
def test_nan_or_inf_reaching_the_loss_is_named(device, bad):
    values = np.random.default_rng(0).normal(size=(4, 3))
    values[2, 1] = bad
    with pytest.raises(FloatingPointError, match=r"SoftmaxCrossEntropy: the model output contains NaN or Inf \(first at index \(2, 1\)\)"):
        losses.SoftmaxCrossEntropy()(_logits(device, values), device.send(np.array([0, 1, 2, 1])))
    with pytest.raises(FloatingPointError, match=r"MSE: the model output contains NaN or Inf"):
        losses.MSE()(_logits(device, values), device.send(np.zeros((4, 3)), "float32"))


def test_loss_rejects_target_on_another_device_and_python_lists(device):
    other = gf.device("cpu" if device.name != "cpu" else "strict")
    with pytest.raises(DeviceError, match="SoftmaxCrossEntropy: output is on .* but target on"):
        losses.SoftmaxCrossEntropy()(_logits(device), other.send(np.array([0, 1, 2, 1])))
    with pytest.raises(TypeError, match="expected the target as an array"):
        losses.SoftmaxCrossEntropy()(_logits(device), [0, 1, 2, 1])


def test_regression_losses_reject_mismatched_shapes(device):
    for loss in (losses.MSE(), losses.L1(), losses.Huber(), losses.BCEWithLogits()):
        with pytest.raises(ValueError, match=rf"{type(loss).__name__}: expected target of shape \(4, 3\)"):
            loss(_logits(device), device.send(np.zeros((4, 2)), "float32"))


def test_bce_rejects_targets_outside_unit_interval(device):
    with pytest.raises(ValueError, match=r"BCEWithLogits: targets must lie in \[0, 1\]"):
        losses.BCEWithLogits()(_logits(device), device.send(np.full((4, 3), 2.0), "float32"))


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(reduction="avg"), "reduction must be one of"),
    (dict(label_smoothing=1.0), r"label_smoothing must be in \[0, 1\)"),
])
def test_bad_loss_settings(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        losses.SoftmaxCrossEntropy(**kwargs)


def test_softmax_cross_entropy_and_bce_stay_finite_for_huge_logits(device):
    logits = device.send(np.array([[1e4, -1e4, 0.0], [-1e4, 1e4, 0.0]]), "float32")
    value, delta = losses.SoftmaxCrossEntropy()(logits, device.send(np.array([1, 1])))
    assert np.isfinite(float(gf.to_numpy(value))) and np.all(np.isfinite(gf.to_numpy(delta)))
    assert float(gf.to_numpy(value)) == pytest.approx(1e4, rel=1e-6)
    value, delta = losses.BCEWithLogits()(logits, device.send(np.array([[0.0, 1.0, 1.0], [1.0, 0.0, 0.0]]), "float32"))
    assert np.isfinite(float(gf.to_numpy(value))) and np.all(np.isfinite(gf.to_numpy(delta)))


def test_loss_value_is_a_device_scalar_in_the_output_dtype(device):
    value, delta = losses.SoftmaxCrossEntropy()(_logits(device), device.send(np.array([0, 1, 2, 1])))
    assert device.owns(value) and value.ndim == 0
    assert gf.backend.dtype_name(value.dtype) == "float32" and gf.backend.dtype_name(delta.dtype) == "float32"
