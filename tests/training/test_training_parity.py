"""A 10-step Adam training run of a 3-layer MLP matches a hand-written NumPy float64 run on every
device; the digits example reaches its promised accuracy; batches and datasets behave."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import layers as L
from gradflow.data import BatchIterator
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import Adam

RNG = np.random.default_rng(0)
X = RNG.normal(size=(10, 20, 6))  # 10 steps of batch 20
Y = RNG.integers(0, 4, size=(10, 20))


def _model():
    return gf.Sequential(L.Linear(6, 16, init="he_normal", rng=0), L.ReLU(),
                         L.Linear(16, 16, init="he_normal", rng=1), L.ReLU(), L.Linear(16, 4, rng=2))


def _numpy_reference_run(params, lr=0.01, betas=(0.9, 0.999), eps=1e-8):
    params = [p.copy() for p in params]  # W1, b1, W2, b2, W3, b3; W (out, in) as in PyTorch
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    for t in range(1, len(X) + 1):
        x, y = X[t - 1], Y[t - 1]
        W1, b1, W2, b2, W3, b3 = params
        a1 = x @ W1.T + b1
        h1 = np.maximum(a1, 0)
        a2 = h1 @ W2.T + b2
        h2 = np.maximum(a2, 0)
        z = h2 @ W3.T + b3
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        dz = (p - np.eye(4)[y]) / len(y)
        dh2 = dz @ W3
        da2 = dh2 * (a2 > 0)
        dh1 = da2 @ W2
        da1 = dh1 * (a1 > 0)
        grads = [da1.T @ x, da1.sum(0), da2.T @ h1, da2.sum(0), dz.T @ h2, dz.sum(0)]
        for i, g in enumerate(grads):
            m[i] = betas[0] * m[i] + (1 - betas[0]) * g
            v[i] = betas[1] * v[i] + (1 - betas[1]) * g * g
            params[i] = params[i] - lr * (m[i] / (1 - betas[0] ** t)) / (np.sqrt(v[i] / (1 - betas[1] ** t)) + eps)
    return params


@pytest.mark.parametrize("dtype,rtol,atol", [("float64", 1e-10, 1e-12), ("float32", 2e-3, 2e-4)])
def test_ten_adam_steps_of_an_mlp_match_numpy_on_every_device(device, dtype, rtol, atol):
    model = _model()
    initial = [p.value.astype(np.float64) for p in model.parameters()]
    model.to(device, dtype)
    optimizer = Adam(model, lr=0.01)
    loss = SoftmaxCrossEntropy()
    for x, y in zip(X, Y):
        out, backprop = model(device.send(x, dtype), train=True)
        _, delta = loss(out, device.send(y))
        optimizer.zero_grad()
        backprop(delta)
        optimizer.step()
    expected = _numpy_reference_run(initial)
    for (name, p), e in zip(model.named_parameters(), expected):
        np.testing.assert_allclose(gf.to_numpy(p.value), e, rtol=rtol, atol=atol, err_msg=name)


def test_batch_iterator_shuffles_with_its_seed_and_covers_every_sample(device):
    x = np.arange(10, dtype=np.float64)[:, None]
    y = np.arange(10)
    batches = list(BatchIterator(x, y, 4, seed=3, device=device))
    assert [tuple(xb.shape) for xb, _ in batches] == [(4, 1), (4, 1), (2, 1)]
    seen = np.concatenate([gf.to_numpy(yb) for _, yb in batches])
    assert sorted(seen) == list(range(10)) and list(seen) != list(range(10))
    for xb, yb in batches:
        assert device.owns(xb) and device.owns(yb)
        assert gf.backend.dtype_name(xb.dtype) == "float32" and gf.backend.dtype_name(yb.dtype) == "int64"
        np.testing.assert_array_equal(gf.to_numpy(xb)[:, 0], gf.to_numpy(yb))
    again = [gf.to_numpy(yb) for _, yb in BatchIterator(x, y, 4, seed=3, device=device)]
    np.testing.assert_array_equal(np.concatenate(again), seen)


def test_batch_iterator_drop_last_and_bad_arguments():
    x = np.zeros((10, 2))
    assert len(BatchIterator(x, None, 4, drop_last=True)) == 2
    assert len(list(BatchIterator(x, None, 4, drop_last=True))) == 2
    with pytest.raises(ValueError, match="the dataset is empty"):
        BatchIterator(np.zeros((0, 2)), None, 4)
    with pytest.raises(ValueError, match="x has 10 samples but y has 3"):
        BatchIterator(x, np.zeros(3), 4)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        BatchIterator(x, None, 0)


def test_digits_split_is_fixed_stratified_and_standardised():
    from gradflow.datasets import digits

    a, b = digits(), digits()
    np.testing.assert_array_equal(a.y_test, b.y_test)
    assert a.x_train.shape == (1438, 64) and a.x_test.shape == (359, 64)
    assert a.x_train.dtype == np.float32 and a.y_train.dtype == np.int64
    assert abs(float(a.x_train.mean())) < 1e-3
    assert np.bincount(a.y_test).min() >= 35
    assert digits(images=True).x_train.shape == (1438, 1, 8, 8)


def test_digits_mlp_example_reaches_97_percent(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "digits_mlp.py"
    spec = importlib.util.spec_from_file_location("digits_mlp", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    accuracy = module.main(["--device", "cpu"])
    out = capsys.readouterr().out
    assert "epoch 20/20  loss" in out and "test accuracy" in out
    assert accuracy >= 0.97


def test_fit_evaluate_predict_on_the_strict_device():
    from gradflow.train import evaluate, fit, predict

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    model = gf.Sequential(L.Linear(6, 8, rng=0), L.Tanh(), L.Linear(8, 2, rng=1)).to("strict")
    history = fit(model, SoftmaxCrossEntropy(), Adam(model, lr=0.05), (x, y), epochs=15, batch_size=16,
                  validation=(x, y), verbose=False)
    assert history["loss"][-1] < history["loss"][0]
    assert history["val_accuracy"][-1] > 0.9
    assert evaluate(model, None, (x, y))["accuracy"] == history["val_accuracy"][-1]
    assert predict(model, x).shape == (64, 2)
