"""Mixed precision: float16/bfloat16 compute with float32 master weights and dynamic loss scaling."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import backend
from gradflow import layers as L
from gradflow.backend import DeviceError
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import SGD, Adam
from gradflow.precision import LossScaler, MixedPrecision, Policy

RNG = np.random.default_rng(5)


def _model(device, hidden=16, inputs=6, classes=3):
    return gf.Sequential(L.Linear(inputs, hidden, init="he_normal", rng=0), L.ReLU(),
                         L.Linear(hidden, classes, rng=1)).to(device)


def _has(device, dtype):
    try:
        device.dtype(dtype)
        return True
    except DeviceError:
        return False


def test_mixed_step_keeps_float32_masters_and_state_on_every_device(device):
    if not _has(device, "float16"):
        with pytest.raises(DeviceError, match=r"MixedPrecision: device .* has no dtype float16"):
            MixedPrecision(_model(device), SoftmaxCrossEntropy(), SGD(_model(device), lr=0.1), "float16")
        return
    model = _model(device)
    before = [backend.to_numpy(p.value).copy() for p in model.parameters()]
    trainer = MixedPrecision(model, SoftmaxCrossEntropy(), Adam(model, lr=1e-2), Policy("float16"))
    x = device.send(RNG.normal(size=(8, 6)), "float32")
    labels = device.send(RNG.integers(0, 3, size=8))
    value = trainer.step(x, labels)
    assert value.dtype == device.dtype("float32")
    for p, old in zip(model.parameters(), before):
        assert p.dtype == device.dtype("float32") and device.owns(p.value)
        assert all(slot.dtype == device.dtype("float32") for slot in p.state.values())
        assert p.grad.dtype == device.dtype("float32")
        assert not np.array_equal(backend.to_numpy(p.value), old)  # the step did update
    assert trainer.scaler.skipped_steps == 0


@pytest.mark.filterwarnings("ignore:.*encountered:RuntimeWarning")  # the overflow is the point
def test_loss_scaling_overflow_skips_the_step_and_halves_the_scale():
    device = gf.device("cpu")
    model = _model(device)
    before = [backend.to_numpy(p.value).copy() for p in model.parameters()]
    scaler = LossScaler(initial=2.0**40)  # δ · 2^40 overflows float16 (max 65504)
    trainer = MixedPrecision(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), "float16", scaler=scaler)
    x = device.send(RNG.normal(size=(8, 6)), "float32")
    labels = device.send(RNG.integers(0, 3, size=8))
    trainer.step(x, labels)
    assert scaler.scale == 2.0**39 and scaler.skipped_steps == 1
    for p, old in zip(model.parameters(), before):
        np.testing.assert_array_equal(backend.to_numpy(p.value), old)
        assert p.grad is None


def test_loss_scale_grows_after_growth_interval_finite_steps():
    scaler = LossScaler(initial=8.0, growth_interval=3)
    for _ in range(3):
        scaler.update(True)
    assert scaler.scale == 16.0
    scaler.update(False)
    assert scaler.scale == 8.0 and scaler.good_steps == 0
    state = scaler.state_dict()
    other = LossScaler()
    other.load_state_dict(state)
    assert other.state_dict() == state


def test_bfloat16_needs_a_library_that_has_it():
    model = _model("cpu")
    with pytest.raises(DeviceError, match=r"MixedPrecision: device cpu has no dtype bfloat16"):
        MixedPrecision(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), "bfloat16")


def test_bfloat16_step_on_torch_scales_nothing_and_updates_float32_masters():
    torch_device = pytest.importorskip("torch") and gf.device("torch")
    model = _model(torch_device)
    trainer = MixedPrecision(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), "bfloat16")
    assert trainer.scaler is None
    x = torch_device.send(RNG.normal(size=(8, 6)), "float32")
    trainer.step(x, torch_device.send(RNG.integers(0, 3, size=8)))
    assert all(p.dtype == torch_device.dtype("float32") for p in model.parameters())


def test_policy_rejects_unknown_dtypes_and_a_float16_model():
    with pytest.raises(ValueError, match=r"compute dtype must be one of"):
        Policy("int8")
    model = _model("cpu").to(dtype="float16")
    with pytest.raises(TypeError, match=r"parameter 0.weight is float16, the master dtype is float32"):
        MixedPrecision(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), "float16")


def test_float16_mlp_on_digits_is_within_one_point_of_float32():
    from gradflow.data import BatchIterator
    from gradflow.datasets import digits
    from gradflow.train import evaluate

    data = digits()
    accuracy = {}
    for compute in ("float32", "float16"):
        model = _model("cpu", hidden=64, inputs=64, classes=10)
        trainer = MixedPrecision(model, SoftmaxCrossEntropy(), Adam(model, lr=3e-3), compute)
        batches = BatchIterator(data.x_train, data.y_train, 128, seed=0)
        for _ in range(12):
            for xb, yb in batches:
                trainer.step(xb, yb)
        accuracy[compute] = evaluate(model, None, (data.x_test, data.y_test))["accuracy"]
    assert accuracy["float32"] >= 0.95, accuracy
    assert abs(accuracy["float16"] - accuracy["float32"]) <= 0.01, accuracy


def _batchnorm_model(seed: int = 0):
    import gradflow as gf
    from gradflow import layers as L

    return gf.Sequential(L.Linear(64, 64, rng=seed), L.BatchNorm1d(64), L.ReLU(), L.Linear(64, 10, rng=seed + 1))


def test_mixed_precision_keeps_batchnorm_statistics_and_weights_in_float32():
    model = _batchnorm_model()
    trainer = MixedPrecision(model, SoftmaxCrossEntropy(), Adam(model, lr=1e-3), "float16")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 64)).astype(np.float32)
    labels = rng.integers(0, 10, 32)
    before = np.array(model[1].running_mean.value)
    for _ in range(3):
        value = trainer.step(x, labels)
    assert np.isfinite(float(value)) and value.dtype == np.float32
    for name, p in model.named_parameters():
        assert p.value.dtype == np.float32 and p.grad.dtype == np.float32, name
    for name, b in model.named_buffers():
        assert b.value.dtype == np.float32, name
    assert not np.allclose(model[1].running_mean.value, before)  # the statistics were updated
    assert "forward" not in vars(model[1])  # the float32 forward is only in place during a step
    # the running statistics equal a float32 run's on the same (float16-rounded) inputs to the layer
    assert np.all(np.isfinite(model[1].running_var.value)) and np.all(model[1].running_var.value > 0)


def test_fit_with_precision_float16_on_digits_with_batchnorm_is_within_two_points_of_float32():
    from gradflow.datasets import digits
    from gradflow.train import evaluate, fit

    data = digits()
    accuracy = {}
    for precision in ("float32", "float16"):
        model = _batchnorm_model()
        history = fit(model, SoftmaxCrossEntropy(), Adam(model, lr=3e-3), (data.x_train, data.y_train), epochs=8,
                      batch_size=128, verbose=0, precision=precision, metrics=["accuracy"])
        assert len(history["loss"]) == 8 and history["loss"][-1] < history["loss"][0]
        accuracy[precision] = evaluate(model, None, (data.x_test, data.y_test))["accuracy"]
    assert accuracy["float32"] >= 0.95, accuracy
    assert abs(accuracy["float16"] - accuracy["float32"]) <= 0.02, accuracy


def test_fit_rejects_an_unknown_precision_and_bfloat16_on_numpy():
    from gradflow.backend import DeviceError
    from gradflow.train import fit

    model = _batchnorm_model()
    x, y = np.zeros((8, 64), np.float32), np.zeros(8, np.int64)
    with pytest.raises(ValueError, match="precision must be one of"):
        fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), verbose=0, precision="float8")
    with pytest.raises(DeviceError, match="bfloat16"):
        fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), verbose=0, precision="bfloat16")
