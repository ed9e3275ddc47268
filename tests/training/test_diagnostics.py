"""Gradient-flow diagnostics, vanishing/exploding warnings, anomaly mode and plots."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest

import gradflow as gf
from gradflow import core
from gradflow import layers as L
from gradflow.core import Layer
from gradflow.diagnostics import (AnomalyError, GradientFlow, GradientFlowMonitor, GradientWarning,
                                  detect_anomaly, leaf_layers)
from gradflow.losses import MSE, SoftmaxCrossEntropy
from gradflow.optim import SGD
from gradflow.train import fit


def mlp():
    return gf.Sequential(L.Linear(4, 6, rng=0), L.Tanh(), gf.Residual(L.Linear(6, 6, rng=1)), L.Linear(6, 3, rng=2))


def test_leaf_layers_are_named_by_their_path():
    names = [name for name, _ in leaf_layers(mlp())]
    assert names == ["0", "1", "2.body", "3"]


def test_recorded_norms_equal_the_gradients_deltas_and_updates_computed_by_hand(device):
    model = mlp().to(device)
    x = device.send(np.random.default_rng(0).normal(size=(5, 4)), "float32")
    labels = device.send(np.array([0, 1, 2, 1, 0]))
    optimizer = SGD(model, lr=0.1)
    inputs_seen = {}

    def remember(layer, x_in, y, backprop):
        inputs_seen[id(layer)] = backprop
        return backprop

    with GradientFlow(model) as flow:
        flow.begin_step(0)
        y, backprop = model(x, train=True)
        _, delta = SoftmaxCrossEntropy()(y, labels)
        optimizer.zero_grad()
        backprop(delta)
        grads = {n: gf.to_numpy(p.grad).astype(np.float64) for n, p in model.named_parameters()}
        before = {n: gf.to_numpy(p.value).astype(np.float64) for n, p in model.named_parameters()}
        flow.after_backward()
        optimizer.step()
        flow.after_step()
    record = flow.fetch()
    assert record.layers == ["0", "1", "2.body", "3"] and record.steps.tolist() == [0]
    after = {n: gf.to_numpy(p.value).astype(np.float64) for n, p in model.named_parameters()}
    for column, prefix in ((0, "0."), (2, "2.body."), (3, "3.")):
        names = [n for n in grads if n.startswith(prefix)]
        grad_norm = np.sqrt(sum(np.sum(grads[n] ** 2) for n in names))
        change = np.sqrt(sum(np.sum((after[n] - before[n]) ** 2) for n in names))
        weight = np.sqrt(sum(np.sum(before[n] ** 2) for n in names))
        np.testing.assert_allclose(record.grad_norm[0, column], grad_norm, rtol=1e-5)
        np.testing.assert_allclose(record.update_ratio[0, column], change / weight, rtol=1e-4)
    assert np.isnan(record.grad_norm[0, 1]) and np.isnan(record.update_ratio[0, 1])  # Tanh has no parameters
    # δ passed down by the last layer: dx = δ W (W stored (out, in))
    w3 = before["3.weight"]
    expected = np.linalg.norm(gf.to_numpy(delta).astype(np.float64) @ w3)
    np.testing.assert_allclose(record.delta_norm[0, 3], expected, rtol=1e-5)
    assert core._CALL_HOOKS == []


def test_gradient_flow_records_every_nth_step_and_fetches_in_one_transfer(monkeypatch):
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 64)
    model = mlp()
    monitor = GradientFlowMonitor(every=3)
    transfers = []
    original = gf.backend.to_numpy

    class CountFetches(gf.callbacks.Callback):
        def on_epoch_begin(self, state):
            transfers.append(0)

    def counting(value):
        if transfers:
            transfers[-1] += 1
        return original(value)

    monkeypatch.setattr(gf.backend, "to_numpy", counting)
    fit(model, SoftmaxCrossEntropy(), SGD(model, lr=0.05), (x, y), 2, batch_size=8, callbacks=[CountFetches(), monitor],
        verbose=0)
    assert monitor.record.steps.tolist() == [0, 3, 6, 9, 12, 15]
    assert monitor.record.grad_norm.shape == (6, 4)
    assert np.all(np.isfinite(monitor.record.grad_norm[:, [0, 2, 3]]))
    assert transfers == [2, 2]  # per epoch: the loss/metrics fetch and the gradient-flow fetch
    assert "update/weight" in monitor.record.summary()
    assert core._CALL_HOOKS == []


def test_vanishing_gradients_are_reported_for_a_deep_saturated_sigmoid_stack():
    layers = []
    for i in range(8):
        layers += [L.Linear(8, 8, init="zeros", rng=i), L.Sigmoid()]
    model = gf.Sequential(*layers, L.Linear(8, 1, rng=9))
    for layer in model.layers[:-1:2]:
        layer.weight.value[...] = 0.05
        layer.bias.value[...] = 6.0  # saturated: σ' ≈ 0.0025 per layer
    x = np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32)
    y = np.random.default_rng(1).normal(size=(32, 1)).astype(np.float32)
    monitor = GradientFlowMonitor(update_ratio=False)
    with pytest.warns(GradientWarning) as caught:
        fit(model, MSE(), SGD(model, lr=0.01), (x, y), 1, batch_size=32, callbacks=[monitor], verbose=0)
    assert any("vanishing gradient in layer '0'" in str(w.message) for w in caught)
    assert any("layer '0'" in p for p in monitor.record.problems)
    assert not any("layer '16'" in p for p in monitor.record.problems)


def test_exploding_gradients_are_reported_with_the_step():
    model = gf.Sequential(L.Linear(4, 4, rng=0), L.Linear(4, 1, rng=1))
    model[0].weight.value[...] *= 1e3
    x = np.random.default_rng(0).normal(size=(16, 4)).astype(np.float32) * 100
    y = np.zeros((16, 1), np.float32)
    with pytest.warns(GradientWarning) as caught:
        fit(model, MSE(validate=False), SGD(model, lr=1e-12), (x, y), 1, batch_size=16,
            callbacks=[GradientFlowMonitor()], verbose=0)
    messages = [str(w.message) for w in caught]
    assert any(re.search(r"exploding gradient in layer '1' .* at step 0 \(threshold 1000\)", m) for m in messages)


def test_healthy_training_gives_no_gradient_warning():
    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 64)
    model = mlp()
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientWarning)
        fit(model, SoftmaxCrossEntropy(), SGD(model, lr=0.05), (x, y), 1, callbacks=[GradientFlowMonitor()], verbose=0)


class NaNForward(Layer):
    def forward(self, x, train):
        return x * float("nan"), lambda dy: dy


class NaNBackward(Layer):
    def forward(self, x, train):
        return x, lambda dy: dy * float("inf")


def _step(model, x):
    y, backprop = model(x, train=True)
    backprop(gf.backend.namespace(y).ones_like(y))


def test_anomaly_mode_names_the_first_layer_producing_nan_in_the_forward_pass(device):
    model = gf.Sequential(L.Linear(3, 3, rng=0), L.ReLU(), NaNForward(), L.Linear(3, 2, rng=1))
    x = device.send(np.ones((2, 3)), "float32")
    with pytest.raises(AnomalyError, match=r"forward output of layer '2' NaNForward\(\) contains NaN .*index \(0, 0\)"):
        with detect_anomaly(model):
            _step(model.to(device), x)
    assert core._CALL_HOOKS == []


def test_anomaly_mode_names_the_layer_whose_backprop_produced_inf(device):
    model = gf.Sequential(L.Linear(3, 3, rng=0), NaNBackward(), L.Linear(3, 2, rng=1)).to(device)
    x = device.send(np.ones((2, 3)), "float32")
    with pytest.raises(AnomalyError, match=r"backprop of layer '1' NaNBackward\(\) produced a δ with Inf"):
        with detect_anomaly(model):
            _step(model, x)


def test_anomaly_mode_blames_the_input_data_or_the_weights_when_they_are_the_cause():
    model = gf.Sequential(L.Linear(3, 3, rng=0), L.Linear(3, 2, rng=1))
    bad_input = np.ones((2, 3), np.float32)
    bad_input[1, 2] = np.nan
    with pytest.raises(AnomalyError, match=r"input of layer '0' .* already contains NaN"):
        with detect_anomaly(model):
            _step(model, bad_input)
    model[1].weight.value[0, 0] = np.inf
    with pytest.raises(AnomalyError, match=r"layer '1' .* its parameters are not finite: weight"):
        with detect_anomaly(model):
            _step(model, np.ones((2, 3), np.float32))
    with pytest.raises(AnomalyError, match=r"Linear\(in_features=3, out_features=2, bias=True\)"):
        with detect_anomaly():  # without a model, layers are named by their description
            _step(model, np.ones((2, 3), np.float32))


def test_anomaly_mode_passes_clean_steps_and_flags_a_non_finite_incoming_delta():
    model = gf.Sequential(L.Linear(3, 3, rng=0), L.Tanh())
    with detect_anomaly(model):
        _step(model, np.ones((2, 3), np.float32))
        y, backprop = model(np.ones((2, 3), np.float32), train=True)
        with pytest.raises(AnomalyError, match="δ arriving at the model .* comes from the loss"):
            backprop(np.full((2, 3), np.nan, np.float32))


def test_plots_are_written_as_png(tmp_path):
    pytest.importorskip("matplotlib")
    from gradflow import plot

    x = np.random.default_rng(0).normal(size=(64, 4)).astype(np.float32)
    y = np.random.default_rng(1).integers(0, 3, 64)
    model = mlp()
    monitor = GradientFlowMonitor(every=2)
    history = fit(model, SoftmaxCrossEntropy(), SGD(model, lr=0.05), (x, y), 3, validation=(x, y),
                  metrics=["accuracy"], callbacks=[monitor], verbose=0)
    for path in (plot.history(history, tmp_path / "curves.png"), plot.gradient_flow(monitor.record, tmp_path / "flow.png")):
        content = path.read_bytes()
        assert content[:8] == b"\x89PNG\r\n\x1a\n" and len(content) > 10_000
    with pytest.raises(ValueError, match="empty"):
        plot.history({}, tmp_path / "none.png")
