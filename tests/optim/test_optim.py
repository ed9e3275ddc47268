"""Optimizers against NumPy float64 references written from their update rules (and against
torch.optim when torch is installed), on every device; clipping; state on the right device."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import backend
from gradflow.core import Parameter
from gradflow.optim import SGD, Adagrad, Adam, AdamW, RMSprop, clip_grad_norm, clip_grad_value

STEPS = 5
RNG = np.random.default_rng(0)
THETA0 = RNG.normal(size=(3, 4))
GRADS = [RNG.normal(size=(3, 4)) for _ in range(STEPS)]


def ref_sgd(theta, grads, lr, momentum=0.0, dampening=0.0, nesterov=False, weight_decay=0.0):
    b = None
    for g in grads:
        g = g + weight_decay * theta
        if momentum:
            b = g.copy() if b is None else momentum * b + (1 - dampening) * g
            g = g + momentum * b if nesterov else b
        theta = theta - lr * g
    return theta


def ref_adam(theta, grads, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False, amsgrad=False):
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    v_max = np.zeros_like(theta)
    for t, g in enumerate(grads, start=1):
        if decoupled:
            theta = theta * (1 - lr * weight_decay)
        else:
            g = g + weight_decay * theta
        m = betas[0] * m + (1 - betas[0]) * g
        v = betas[1] * v + (1 - betas[1]) * g * g
        m_hat = m / (1 - betas[0] ** t)
        if amsgrad:
            v_max = np.maximum(v_max, v)
            v_hat = v_max / (1 - betas[1] ** t)
        else:
            v_hat = v / (1 - betas[1] ** t)
        theta = theta - lr * m_hat / (np.sqrt(v_hat) + eps)
    return theta


def ref_rmsprop(theta, grads, lr, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0):
    s = np.zeros_like(theta)
    a = np.zeros_like(theta)
    b = np.zeros_like(theta)
    for g in grads:
        g = g + weight_decay * theta
        s = alpha * s + (1 - alpha) * g * g
        if centered:
            a = alpha * a + (1 - alpha) * g
            denominator = np.sqrt(s - a * a) + eps
        else:
            denominator = np.sqrt(s) + eps
        if momentum:
            b = momentum * b + g / denominator
            theta = theta - lr * b
        else:
            theta = theta - lr * g / denominator
    return theta


def ref_adagrad(theta, grads, lr, lr_decay=0.0, eps=1e-10, initial_accumulator_value=0.0, weight_decay=0.0):
    s = np.full_like(theta, initial_accumulator_value)
    for t, g in enumerate(grads, start=1):
        g = g + weight_decay * theta
        s = s + g * g
        theta = theta - lr / (1 + (t - 1) * lr_decay) * g / (np.sqrt(s) + eps)
    return theta


CASES = [
    ("sgd", SGD, ref_sgd, dict(lr=0.1)),
    ("sgd_momentum", SGD, ref_sgd, dict(lr=0.1, momentum=0.9)),
    ("sgd_dampening_decay", SGD, ref_sgd, dict(lr=0.1, momentum=0.5, dampening=0.3, weight_decay=0.01)),
    ("sgd_nesterov", SGD, ref_sgd, dict(lr=0.1, momentum=0.9, nesterov=True)),
    ("adam", Adam, ref_adam, dict(lr=0.01)),
    ("adam_decay_amsgrad", Adam, ref_adam, dict(lr=0.01, weight_decay=0.1, amsgrad=True)),
    ("adamw", AdamW, lambda th, gs, **k: ref_adam(th, gs, decoupled=True, **k), dict(lr=0.01, weight_decay=0.1)),
    ("rmsprop", RMSprop, ref_rmsprop, dict(lr=0.01)),
    ("rmsprop_centered_momentum", RMSprop, ref_rmsprop, dict(lr=0.01, centered=True, momentum=0.9, weight_decay=0.01)),
    ("adagrad", Adagrad, ref_adagrad, dict(lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.01)),
]


def _run(optimizer_class, kwargs, device, dtype):
    p = Parameter(device.send(THETA0.copy(), dtype))  # on cpu, send returns a float64 array as is
    optimizer = optimizer_class([p], **kwargs)
    value_object = None
    for g in GRADS:
        p.grad = device.send(g, dtype)
        optimizer.step()
        # the first step makes p.value a view of the flat buffer; later updates are in place
        value_object = p.value if value_object is None else value_object
    assert p.value is value_object, "the update must be in place"
    assert backend.dtype_name(p.dtype) == dtype
    for slot, array in p.state.items():
        assert device.owns(array) and backend.dtype_name(array.dtype) == dtype, slot
    return gf.to_numpy(p.value)


@pytest.mark.parametrize("name,optimizer_class,reference,kwargs", CASES, ids=[c[0] for c in CASES])
def test_optimizer_matches_numpy_reference_on_every_device(name, optimizer_class, reference, kwargs, device):
    expected = reference(THETA0, GRADS, **kwargs)
    np.testing.assert_allclose(_run(optimizer_class, kwargs, device, "float64"), expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_run(optimizer_class, kwargs, device, "float32"), expected, rtol=1e-4, atol=1e-5)


TORCH_NAMES = {"sgd": "SGD", "sgd_momentum": "SGD", "sgd_dampening_decay": "SGD", "sgd_nesterov": "SGD",
               "adam": "Adam", "adam_decay_amsgrad": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop",
               "rmsprop_centered_momentum": "RMSprop", "adagrad": "Adagrad"}


@pytest.mark.parametrize("name,optimizer_class,reference,kwargs", CASES, ids=[c[0] for c in CASES])
def test_optimizer_matches_torch_optim(name, optimizer_class, reference, kwargs):
    torch = pytest.importorskip("torch")
    theta = torch.tensor(THETA0, requires_grad=True)
    optimizer = getattr(torch.optim, TORCH_NAMES[name])([theta], **kwargs)
    for g in GRADS:
        theta.grad = torch.tensor(g)
        optimizer.step()
    ours = _run(optimizer_class, kwargs, gf.device("cpu"), "float64")
    np.testing.assert_allclose(ours, theta.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_parameters_without_gradient_are_left_alone():
    a, b = Parameter(np.ones(3)), Parameter(np.ones(3))
    optimizer = Adam([a, b], lr=0.1)
    a.grad = np.ones(3)
    optimizer.step()
    assert np.all(b.value == 1) and not b.state and np.all(a.value < 1)


@pytest.mark.parametrize("kwargs,pattern", [
    (dict(lr=0.0), r"SGD: lr must be in \(0, inf\), got 0.0"),
    (dict(lr=-1.0), r"SGD: lr must be in \(0, inf\)"),
    (dict(lr=0.1, momentum=1.0), r"SGD: momentum must be in \[0, 1\), got 1.0"),
    (dict(lr=0.1, momentum=-0.1), r"SGD: momentum must be in \[0, 1\)"),
    (dict(lr=0.1, weight_decay=-1), r"SGD: weight_decay must be in \[0, inf\)"),
    (dict(lr=0.1, nesterov=True), r"SGD: nesterov needs momentum > 0"),
    (dict(lr=float("nan")), r"SGD: lr must be in"),
])
def test_bad_hyperparameters_are_rejected(kwargs, pattern):
    with pytest.raises(ValueError, match=pattern):
        SGD([Parameter(np.ones(2))], **kwargs)


def test_bad_adam_betas_and_empty_parameter_list():
    with pytest.raises(ValueError, match=r"Adam: betas\[1\] must be in \[0, 1\)"):
        Adam([Parameter(np.ones(2))], betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="got no parameters"):
        Adam([], lr=0.1)


def test_clip_grad_norm_scales_to_max_norm_on_every_device(device):
    ps = [Parameter(device.send(np.zeros(2), "float64")), Parameter(device.send(np.zeros(2), "float64"))]
    ps[0].grad = device.send(np.array([3.0, 0.0]), "float64")
    ps[1].grad = device.send(np.array([0.0, 4.0]), "float64")
    norm = clip_grad_norm(ps, 1.0, eps=0.0)
    assert float(gf.to_numpy(norm)) == pytest.approx(5.0)
    np.testing.assert_allclose(gf.to_numpy(ps[0].grad), [0.6, 0.0])
    np.testing.assert_allclose(gf.to_numpy(ps[1].grad), [0.0, 0.8])
    clip_grad_norm(ps, 10.0)  # under the limit: unchanged
    np.testing.assert_allclose(gf.to_numpy(ps[1].grad), [0.0, 0.8])


def test_clip_grad_value_clamps_every_entry(device):
    p = Parameter(device.send(np.zeros(3), "float32"))
    p.grad = device.send(np.array([-5.0, 0.5, 7.0]), "float32")
    clip_grad_value([p], 1.0)
    np.testing.assert_array_equal(gf.to_numpy(p.grad), np.array([-1.0, 0.5, 1.0], np.float32))


def test_optimizer_clip_options_apply_before_the_update():
    p = Parameter(np.zeros(2))
    optimizer = SGD([p], lr=1.0, clip_norm=1.0)
    p.grad = np.array([3.0, 4.0])
    optimizer.step()
    np.testing.assert_allclose(p.value, [-0.6, -0.8], rtol=1e-5)
    q = Parameter(np.zeros(2))
    SGD([q], lr=1.0, clip_value=0.5)
    optimizer = SGD([q], lr=1.0, clip_value=0.5)
    q.grad = np.array([3.0, -0.1])
    optimizer.step()
    np.testing.assert_allclose(q.value, [-0.5, 0.1])


def test_callable_learning_rate_is_a_schedule():
    p = Parameter(np.zeros(1))
    optimizer = SGD([p], lr=lambda step: 1.0 / (step + 1))
    for expected in [-1.0, -1.5, -1.5 - 1 / 3]:
        p.grad = np.ones(1)
        optimizer.step()
        np.testing.assert_allclose(p.value, [expected])


def test_optimizer_state_dict_round_trip_resumes_exactly():
    def make():
        p = Parameter(THETA0.copy())
        return p, Adam([p], lr=0.01)

    p1, o1 = make()
    for g in GRADS:
        p1.grad = g.copy()
        o1.step()
    p2, o2 = make()
    for g in GRADS[:2]:
        p2.grad = g.copy()
        o2.step()
    state = {"step": o2.state_dict()["step"], "slots": {k: v.copy() for k, v in o2.state_dict()["slots"].items()}}
    value = p2.value.copy()
    p3, o3 = make()
    p3.value[...] = value
    o3.load_state_dict(state)
    for g in GRADS[2:]:
        p3.grad = g.copy()
        o3.step()
    np.testing.assert_array_equal(p1.value, p3.value)
    with pytest.raises(ValueError, match="slot '5.exp_avg' names no parameter"):
        o3.load_state_dict({"step": 1, "slots": {"5.exp_avg": np.zeros((3, 4))}})
