"""The speed work keeps its promises: fast paths equal their portable fallbacks on every device,
input_grad=False changes nothing but the skipped δ, the fused cross-entropy equals the general
one and rejects the same bad input, a float32 step makes no float64 array, and an MLP step makes
at most 1.2x the array operations of hand-written NumPy."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import backend
from gradflow import layers as L
from gradflow.losses import Loss, SoftmaxCrossEntropy
from gradflow.optim import SGD, Adagrad, Adam, AdamW, RMSprop
from gradflow.testing.counting import OperationCounter

RNG = np.random.default_rng(3)


# --------------------------------------------------------------------------------------------
# backend fast paths vs portable fallbacks
# --------------------------------------------------------------------------------------------


def test_multiply_by_mask_fast_and_portable_paths_agree_on_every_device(device):
    x_host = RNG.normal(size=(5, 7))
    mask_host = RNG.normal(size=(5, 7)) > 0
    x, mask = device.send(x_host, "float32"), device.send(mask_host)
    fast = backend.multiply_by_mask(x, mask)
    portable = backend.multiply_by_mask(x, mask, portable=True)
    expected = (x_host * mask_host).astype(np.float32)
    for result in (fast, portable):
        assert result.dtype == x.dtype and device.owns(result)
        np.testing.assert_array_equal(backend.to_numpy(result), expected)


@pytest.mark.parametrize("scale", [1.0, 1 / 7])
def test_softmax_cross_entropy_fast_and_portable_paths_agree_on_every_device(device, scale):
    logits_host = RNG.normal(size=(7, 5)) * 3
    labels_host = RNG.integers(0, 5, size=7)
    logits, labels = device.send(logits_host, "float32"), device.send(labels_host)
    shifted = logits_host - logits_host.max(1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    expected_value = -log_p[np.arange(7), labels_host].sum() * scale
    expected_delta = (np.exp(log_p) - np.eye(5)[labels_host]) * scale
    for portable in (False, True):
        value, delta, ok = backend.softmax_cross_entropy(logits, labels, scale, portable=portable)
        assert bool(ok) and delta.dtype == logits.dtype and device.owns(delta)
        np.testing.assert_allclose(backend.to_float(value), expected_value, rtol=1e-5)
        np.testing.assert_allclose(backend.to_numpy(delta), expected_delta, rtol=1e-4, atol=1e-6)
        np.testing.assert_array_equal(backend.to_numpy(logits), logits_host.astype(np.float32))
    bad = device.send(np.array([0, 5, 1, 2, 3, 4, 0]))
    for portable in (False, True):
        assert not bool(backend.softmax_cross_entropy(logits, bad, scale, portable=portable)[2])


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # NumPy warns about the NaN and Inf planted here
def test_softmax_cross_entropy_check_finite_flags_what_the_loss_refuses_on_every_device(device):
    """check_finite: a True flag (NumPy) means labels and finiteness were both checked; the
    other paths return an array flag and leave finiteness to the loss (which refuses it)."""
    labels = device.send(np.array([0, 1, 2, 0]))
    for bad_logit in (-np.inf, np.inf, np.nan):
        logits_host = np.zeros((4, 3))
        logits_host[0, 1] = bad_logit  # -inf at a class other than the label: the value stays finite
        logits = device.send(logits_host, "float32")
        ok = backend.softmax_cross_entropy(logits, labels, 0.25, check_finite=True)[2]
        assert ok is not True
        with pytest.raises(FloatingPointError, match="NaN or Inf"):
            SoftmaxCrossEntropy()(logits, labels)
    fine = backend.softmax_cross_entropy(device.send(np.zeros((4, 3)), "float32"), labels, 0.25, check_finite=True)
    assert bool(fine[2])


def test_backend_reshape_matches_the_namespace_on_every_device(device):
    x_host = RNG.normal(size=(3, 4))
    x = device.send(x_host, "float32")
    xp = backend.namespace(x)
    for shape in ((-1,), (4, 3), (2, 6)):
        result = backend.reshape(x, shape)
        assert type(result) is type(xp.reshape(x, shape)) and device.owns(result)
        np.testing.assert_array_equal(backend.to_numpy(result), x_host.astype(np.float32).reshape(shape))
    if isinstance(x, np.ndarray):  # NumPy's own method: a view, as xp.reshape gives
        assert np.shares_memory(backend.reshape(x, (-1,)), x)


def test_library_kind_names_each_library():
    assert backend.library_kind(np.ones(2)) == "numpy"
    assert backend.library_kind(backend.device("strict").zeros((2,))) == "other"


# --------------------------------------------------------------------------------------------
# input_grad=False: the caller's promise not to use the input δ
# --------------------------------------------------------------------------------------------


def _mlp(device, first=None):
    layers = ([first] if first is not None else []) + [
        L.Linear(6, 5, rng=0), L.ReLU(), L.Linear(5, 4, rng=1), L.Tanh(), L.Linear(4, 3, rng=2)]
    return gf.Sequential(*layers).to(device, "float64")


def _gradients(model, x, dy, **call):
    model.zero_grad()
    y, backprop = model(x, train=True, **call)
    dx = backprop(dy)
    return dx, [backend.to_numpy(p.grad) for p in model.parameters()]


@pytest.mark.parametrize("leading", [None, "flatten"])
def test_sequential_without_input_grad_returns_none_and_the_same_parameter_gradients(device, leading):
    first = L.Flatten() if leading else None
    shape = (4, 2, 3) if leading else (4, 6)
    model = _mlp(device, first)
    x = device.send(RNG.normal(size=shape), "float64")
    dy = device.send(RNG.normal(size=(4, 3)), "float64")
    dx, with_dx = _gradients(model, x, dy)
    skipped, without_dx = _gradients(model, x, dy, input_grad=False)
    assert tuple(dx.shape) == shape and skipped is None
    for a, b in zip(with_dx, without_dx):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


def test_sequential_without_input_grad_skips_exactly_the_first_layers_input_product():
    counter = OperationCounter(backend.device("cpu").xp)
    model = _mlp("cpu")
    counter.wrap_layer(model)
    x = counter.wrap(RNG.normal(size=(4, 6)))
    dy = counter.wrap(RNG.normal(size=(4, 3)))
    counts = {}
    for flag in (True, False):
        y, backprop = model(x, train=True, input_grad=flag)
        counter.reset()
        backprop(dy)
        counts[flag] = counter.by_name["matmul"]
    assert counts == {True: 6, False: 5}  # 3 weight gradients + 3 (or 2) input δs


def test_layers_that_cannot_skip_ignore_input_grad_false(device):
    flatten = L.Flatten()
    assert not flatten.skips_input_grad
    x = device.send(RNG.normal(size=(2, 3, 2)), "float32")
    y, backprop = flatten(x, train=True, input_grad=False)
    assert tuple(backprop(y).shape) == (2, 3, 2)


@pytest.mark.parametrize("container", ["residual", "concat"])
def test_residual_and_concat_pass_input_grad_false_to_their_bodies(device, container):
    if container == "residual":
        model = gf.Residual(gf.Sequential(L.Linear(4, 4, rng=0), L.Tanh())).to(device, "float64")
        out_features = 4
    else:
        model = gf.Concat(L.Linear(4, 2, rng=0), L.Linear(4, 3, rng=1)).to(device, "float64")
        out_features = 5
    x = device.send(RNG.normal(size=(3, 4)), "float64")
    dy = device.send(RNG.normal(size=(3, out_features)), "float64")
    dx, with_dx = _gradients(model, x, dy)
    skipped, without_dx = _gradients(model, x, dy, input_grad=False)
    assert dx is not None and skipped is None
    for a, b in zip(with_dx, without_dx):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=0)


def test_sequential_recomputes_its_first_trainable_layer_after_append():
    model = gf.Sequential(L.ReLU())
    assert model._first_with_parameters() == 1
    model.append(L.Linear(3, 2, rng=0))
    assert model._first_with_parameters() == 1
    model.layers.insert(0, L.Linear(3, 3, rng=1))
    assert model._first_with_parameters() == 0


# --------------------------------------------------------------------------------------------
# boundary checks: the fast path must not let anything through that the full path rejects
# --------------------------------------------------------------------------------------------


def test_fast_boundary_check_still_rejects_bad_input_after_good_input(device):
    layer = L.Linear(4, 3, rng=0).to(device)
    relu = L.ReLU()
    good = device.send(np.ones((2, 4)), "float32")
    layer(good)
    relu(good)
    with pytest.raises(TypeError, match=r"Linear.*dtype float32.*got float64"):
        layer(device.send(np.ones((2, 4)), "float64"))
    with pytest.raises(TypeError, match=r"ReLU.*floating-point.*int64"):
        relu(device.send(np.ones((2, 4), dtype=np.int64)))
    with pytest.raises(ValueError, match=r"Linear.*4 features.*\(2, 5\)"):
        layer(device.send(np.ones((2, 5)), "float32"))


# --------------------------------------------------------------------------------------------
# fused softmax cross-entropy for integer labels
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_fused_cross_entropy_equals_the_general_path_on_every_device(device, reduction):
    logits = device.send(RNG.normal(size=(7, 5)) * 3, "float64")
    labels = device.send(RNG.integers(0, 5, size=7))
    loss = SoftmaxCrossEntropy(reduction=reduction)
    fused_value, fused_delta = loss(logits, labels)
    general_value, general_delta = Loss.__call__(loss, logits, labels)
    np.testing.assert_allclose(backend.to_float(fused_value), backend.to_float(general_value), rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(fused_delta), backend.to_numpy(general_delta), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("bad_label", [-1, 5])
def test_fused_cross_entropy_rejects_labels_out_of_range(device, bad_label):
    logits = device.send(RNG.normal(size=(3, 5)), "float32")
    labels = device.send(np.array([0, bad_label, 4]))
    with pytest.raises(ValueError, match=rf"labels must lie in \[0, 4\] for 5 classes, got values in \[{min(bad_label, 0)}, {max(bad_label, 4)}\]"):
        SoftmaxCrossEntropy()(logits, labels)


def test_fused_cross_entropy_rejects_non_finite_logits_and_wrong_label_shape(device):
    host = RNG.normal(size=(3, 4))
    host[1, 2] = np.nan
    with pytest.raises(FloatingPointError, match=r"NaN or Inf \(first at index \(1, 2\)\)"):
        SoftmaxCrossEntropy()(device.send(host, "float32"), device.send(np.array([0, 1, 2])))
    with pytest.raises(ValueError, match=r"integer labels of shape \(3,\).*got target of shape \(4,\)"):
        SoftmaxCrossEntropy()(device.send(RNG.normal(size=(3, 4)), "float32"), device.send(np.array([0, 1, 2, 3])))


def test_fused_cross_entropy_makes_at_most_one_host_sync_on_the_portable_path():
    # The portable path is what a GPU library runs; NumPy checks labels on the host, where
    # converting to a Python number waits for nothing.
    strict = backend.device("strict")
    counter = OperationCounter(strict.xp)
    logits = counter.wrap(strict.send(RNG.normal(size=(6, 4)), "float32"))
    labels = counter.wrap(strict.send(RNG.integers(0, 4, size=6)))
    SoftmaxCrossEntropy()(logits, labels)
    assert counter.syncs == 1
    counter.reset()
    SoftmaxCrossEntropy(validate=False)(logits, labels)
    assert counter.syncs == 0


# --------------------------------------------------------------------------------------------
# float32 stays float32; the operation count stays near the hand-written minimum
# --------------------------------------------------------------------------------------------

OPTIMIZERS = {
    "sgd": lambda m: SGD(m, lr=0.1),
    "sgd_momentum_decay": lambda m: SGD(m, lr=0.1, momentum=0.9, weight_decay=1e-3),
    "sgd_nesterov": lambda m: SGD(m, lr=0.1, momentum=0.9, nesterov=True),
    "sgd_dampening": lambda m: SGD(m, lr=0.1, momentum=0.9, dampening=0.5),
    "adam": lambda m: Adam(m, lr=1e-3, weight_decay=1e-4),
    "adam_amsgrad": lambda m: Adam(m, lr=1e-3, amsgrad=True),
    "adamw_clipped": lambda m: AdamW(m, lr=1e-3, clip_norm=1.0, clip_value=0.5),
    "rmsprop_centered": lambda m: RMSprop(m, lr=1e-3, momentum=0.9, centered=True),
    "adagrad": lambda m: Adagrad(m, lr=1e-2, lr_decay=1e-3),
}


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_float32_training_step_creates_no_float64_array_on_every_device(device, optimizer):
    counter = OperationCounter(device.xp)
    model = gf.Sequential(L.Linear(6, 5, rng=0), L.ReLU(), L.Linear(5, 4, rng=1), L.GELU(),
                          L.Linear(4, 3, rng=2)).to(device)
    opt = OPTIMIZERS[optimizer](model)
    counter.wrap_layer(model)
    x = counter.wrap(device.send(RNG.normal(size=(8, 6)), "float32"))
    labels = counter.wrap(device.send(RNG.integers(0, 3, size=8)))
    for loss in (SoftmaxCrossEntropy(), SoftmaxCrossEntropy(label_smoothing=0.1)):
        for _ in range(3):  # the first steps create optimizer state; later ones reuse it
            output, backprop = model(x, train=True, input_grad=False)
            value, delta = loss(output, labels)
            opt.zero_grad()
            backprop(delta)
            opt.step()
    assert counter.results_of_dtype("float64") == []
    assert counter.dtypes["float32"] > 0
    for p in model.parameters():
        assert p.dtype == device.dtype("float32")


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_mlp_step_makes_at_most_1_2x_the_operations_of_hand_written_numpy(optimizer):
    from benchmarks.measure import count_operations

    counted = count_operations(16, optimizer, sizes=(20, 12, 12, 5))
    assert counted["gradflow"]["operations"] <= 1.2 * counted["numpy"]["operations"], counted
    assert counted["gradflow"]["float64_results"] == []


def test_sequential_notices_a_replaced_layer_even_at_a_reused_address():
    model = gf.Sequential(L.ReLU(), L.Linear(3, 2, rng=0))
    assert model._first_with_parameters() == 1
    model.layers[0] = L.Linear(3, 3, rng=1)  # the old ReLU may be freed and its id reused
    model.layers[1] = L.Linear(3, 2, rng=2)
    assert model._first_with_parameters() == 0
    x = np.ones((2, 3), dtype=np.float32)
    y, backprop = model(x, train=True, input_grad=False)
    backprop(np.ones((2, 2), dtype=np.float32))
    assert all(p.grad is not None for p in model.parameters())


def test_training_steps_hold_no_growing_memory():
    import tracemalloc

    from benchmarks.mlp_step import build_gradflow_step

    step = build_gradflow_step(16, optimizer="adam", sizes=(20, 12, 12, 5))
    tracemalloc.start()
    try:
        for _ in range(20):
            step()
        held = tracemalloc.get_traced_memory()[0]
        for _ in range(200):
            step()
        grown = tracemalloc.get_traced_memory()[0] - held
    finally:
        tracemalloc.stop()
    assert grown < 16 * 1024, f"{grown} bytes more held after 200 more steps"
