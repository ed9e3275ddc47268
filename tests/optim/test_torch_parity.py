"""Every optimizer against torch.optim in float64 (1e-12): per-parameter step counts with
parameters that skip steps, weight decay, maximize, parameter groups; clip_grad_norm with every
norm_type; Lion against a NumPy transcription of its paper."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradflow as gf
from gradflow.core import Parameter
from gradflow.optim import (SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Lion, NAdam, RAdam, RMSprop, clip_grad_norm,
                            global_grad_norm)

torch = pytest.importorskip("torch")

SHAPES = [(3, 4), (4,), (2, 3), (5,)]
STEPS = 7
RNG = np.random.default_rng(1)
VALUES = [RNG.normal(size=s) for s in SHAPES]
GRADS = [[RNG.normal(size=s) for s in SHAPES] for _ in range(STEPS)]
# Which parameters have a gradient at each step: parameter 1 first gets one at step 4,
# parameter 2 skips steps 2 and 5, parameter 3 has one only at steps 0, 3 and 6.
HAS_GRAD = [[True, step >= 4, step not in (2, 5), step % 3 == 0] for step in range(STEPS)]


@pytest.fixture(autouse=True)
def torch_float64_scalars():
    # torch keeps per-parameter scalars (step, NAdam's mu_product) in the default dtype
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


CASES = {
    "sgd_momentum_decay_maximize": (SGD, "SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01,
                                                     maximize=True)),
    "sgd_nesterov": (SGD, "SGD", dict(lr=0.05, momentum=0.8, nesterov=True)),
    "adam": (Adam, "Adam", dict(lr=0.01, weight_decay=0.05)),
    "adam_amsgrad_maximize": (Adam, "Adam", dict(lr=0.01, amsgrad=True, maximize=True)),
    "adamw": (AdamW, "AdamW", dict(lr=0.01, weight_decay=0.1, betas=(0.8, 0.95))),
    "rmsprop_centered": (RMSprop, "RMSprop", dict(lr=0.01, centered=True, momentum=0.5, weight_decay=0.01,
                                                  maximize=True)),
    "adagrad_lr_decay": (Adagrad, "Adagrad", dict(lr=0.1, lr_decay=0.05, initial_accumulator_value=0.1,
                                                  weight_decay=0.01)),
    "nadam": (NAdam, "NAdam", dict(lr=0.01, weight_decay=0.05, momentum_decay=0.01)),
    "nadam_decoupled_maximize": (NAdam, "NAdam", dict(lr=0.01, weight_decay=0.05, decoupled_weight_decay=True,
                                                      maximize=True)),
    "radam": (RAdam, "RAdam", dict(lr=0.01, weight_decay=0.05)),
    "radam_rectified_early": (RAdam, "RAdam", dict(lr=0.01, betas=(0.9, 0.9))),  # rho_t > 5 from step 6
    "radam_decoupled": (RAdam, "RAdam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True,
                                             betas=(0.9, 0.5))),
    "adamax": (Adamax, "Adamax", dict(lr=0.02, weight_decay=0.05, maximize=True)),
    "adadelta": (Adadelta, "Adadelta", dict(lr=0.5, rho=0.8, weight_decay=0.05)),
}


def _run_gradflow(cls, kwargs, has_grad=HAS_GRAD, groups=None, flat=True):
    params = [Parameter(v.copy()) for v in VALUES]
    target = params if groups is None else [dict(g, params=[params[i] for i in g["params"]]) for g in groups]
    optimizer = cls(target, flat=flat, **kwargs)
    for step in range(STEPS):
        for p, g, has in zip(params, GRADS[step], has_grad[step]):
            p.grad = g.copy() if has else None
        optimizer.step()
    return [gf.to_numpy(p.value) for p in params], optimizer


def _run_torch(name, kwargs, has_grad=HAS_GRAD, groups=None):
    params = [torch.tensor(v.copy(), requires_grad=True) for v in VALUES]
    target = params if groups is None else [dict(g, params=[params[i] for i in g["params"]]) for g in groups]
    optimizer = getattr(torch.optim, name)(target, **kwargs)
    for step in range(STEPS):
        for p, g, has in zip(params, GRADS[step], has_grad[step]):
            p.grad = torch.tensor(g.copy()) if has else None
        optimizer.step()
    return [p.detach().numpy() for p in params]


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_matches_torch_optim_with_parameters_that_skip_steps(case):
    cls, torch_name, kwargs = CASES[case]
    ours, optimizer = _run_gradflow(cls, kwargs)
    theirs = _run_torch(torch_name, kwargs)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"parameter {i}")
    assert optimizer.param_steps == [sum(row[i] for row in HAS_GRAD) for i in range(len(SHAPES))]


@pytest.mark.parametrize("flat", [True, False], ids=["flat", "per_parameter"])
@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_matches_torch_optim_when_every_parameter_has_a_gradient(case, flat):
    cls, torch_name, kwargs = CASES[case]
    every = [[True] * len(SHAPES) for _ in range(STEPS)]
    ours, _ = _run_gradflow(cls, kwargs, has_grad=every, flat=flat)
    for a, b in zip(ours, _run_torch(torch_name, kwargs, has_grad=every)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_adam_bias_correction_counts_the_steps_of_each_parameter():
    # the case: a parameter whose first gradient arrives at step 5 must get the size of a
    # first Adam step (lr), not 0.545x of it as with a global step count
    late = Parameter(np.zeros(3))
    early = Parameter(np.zeros(3))
    optimizer = Adam([early, late], lr=0.1)
    for step in range(5):
        early.grad = np.ones(3)
        late.grad = np.ones(3) if step == 4 else None
        optimizer.step()
    np.testing.assert_allclose(late.value, -0.1 * np.ones(3), rtol=1e-7)  # ε shifts it by 1e-8


PARTIAL_GROUP_CASES = ["sgd_momentum_decay_maximize", "adam", "adamw", "nadam", "radam", "adadelta", "adagrad_lr_decay"]


@pytest.mark.parametrize("case", PARTIAL_GROUP_CASES)
def test_parameter_groups_match_torch_optim(case):
    cls, torch_name, kwargs = CASES[case]
    base = {k: v for k, v in kwargs.items() if k != "weight_decay"}
    groups = [{"params": [0, 2], "weight_decay": 0.1}, {"params": [1, 3], "weight_decay": 0.0, "lr": 0.003}]
    ours, optimizer = _run_gradflow(cls, base, groups=groups)
    theirs = _run_torch(torch_name, base, groups=groups)
    for i, (a, b) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12, err_msg=f"parameter {i}")
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]


def test_weight_decay_groups_leave_biases_and_norm_scales_undecayed():
    model = gf.Sequential(gf.layers.Linear(3, 4, rng=0), gf.layers.LayerNorm(4), gf.layers.Linear(4, 2, rng=1))
    groups = gf.optim.weight_decay_groups(model, 0.1)
    decayed = {id(p) for p in groups[0]["params"]}
    names = {name for name, p in model.named_parameters() if id(p) in decayed}
    assert names == {"0.weight", "2.weight"} and groups[1]["weight_decay"] == 0.0
    AdamW(groups, lr=1e-3)  # accepted as params


def test_parameter_groups_reject_unknown_options_and_empty_groups():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    with pytest.raises(ValueError, match=r"Adam: parameter group option\(s\) \['momentum'\] unknown"):
        Adam([{"params": [a]}, {"params": [b], "momentum": 0.9}])
    with pytest.raises(ValueError, match=r"Adam: parameter group 1 has no parameters"):
        Adam([{"params": [a]}, {"params": []}])
    with pytest.raises(ValueError, match=r"Adam: betas\[0\] must be in"):
        Adam([{"params": [a]}, {"params": [b], "betas": (1.5, 0.9)}])


def test_a_parameter_listed_twice_is_rejected():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    with pytest.raises(ValueError, match=r"SGD: parameter 2 .* is the same Parameter as parameter 0"):
        SGD([a, b, a], lr=0.1)
    with pytest.raises(ValueError, match=r"Adam: parameter 1 .* is the same Parameter as parameter 0"):
        Adam([{"params": [a]}, {"params": [a]}])


def ref_lion(theta, grads, lr, betas=(0.9, 0.99), weight_decay=0.0, maximize=False):
    """Algorithm 2 of Chen et al. (2023), written out in NumPy."""
    m = np.zeros_like(theta)
    for g in grads:
        g = -g if maximize else g
        update = np.sign(betas[0] * m + (1 - betas[0]) * g)
        theta = theta - lr * (update + weight_decay * theta)
        m = betas[1] * m + (1 - betas[1]) * g
    return theta


@pytest.mark.parametrize("kwargs", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.5, betas=(0.8, 0.9), maximize=True)])
def test_lion_matches_its_paper_on_every_device(kwargs, device):
    grads = [g[0] for g in GRADS]
    p = Parameter(device.send(VALUES[0].copy(), "float64"))
    optimizer = Lion([p], **kwargs)
    for g in grads:
        p.grad = device.send(g, "float64")
        optimizer.step()
    np.testing.assert_allclose(gf.to_numpy(p.value), ref_lion(VALUES[0], grads, **kwargs), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_clip_grad_norm_matches_torch_for_every_norm_type(norm_type):
    params = [Parameter(v.copy()) for v in VALUES]
    tensors = [torch.tensor(v.copy(), requires_grad=True) for v in VALUES]
    for p, t, g in zip(params, tensors, GRADS[0]):
        p.grad, t.grad = g.copy(), torch.tensor(g.copy())
    norm = clip_grad_norm(params, 0.5, norm_type=norm_type)
    torch_norm = torch.nn.utils.clip_grad_norm_(tensors, 0.5, norm_type=norm_type)
    np.testing.assert_allclose(gf.to_numpy(norm), torch_norm.numpy(), rtol=1e-12)
    for p, t in zip(params, tensors):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-12, atol=1e-15)
    assert float(gf.to_numpy(global_grad_norm(params, norm_type))) <= 0.5 + 1e-9


@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_optimizer_clip_norm_uses_norm_type_like_torch(norm_type):
    params = [Parameter(v.copy()) for v in VALUES]
    tensors = [torch.tensor(v.copy(), requires_grad=True) for v in VALUES]
    ours = SGD(params, lr=0.1, clip_norm=0.3, norm_type=norm_type)
    theirs = torch.optim.SGD(tensors, lr=0.1)
    for step in range(3):
        for p, t, g in zip(params, tensors, GRADS[step]):
            p.grad, t.grad = g.copy(), torch.tensor(g.copy())
        ours.step()
        torch.nn.utils.clip_grad_norm_(tensors, 0.3, norm_type=norm_type)
        theirs.step()
    for p, t in zip(params, tensors):
        np.testing.assert_allclose(p.value, t.detach().numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", list(CASES))
def test_optimizer_gives_the_cpu_result_on_every_device_with_skipped_steps(case, device):
    cls, _, kwargs = CASES[case]
    expected, _ = _run_gradflow(cls, kwargs)
    params = [Parameter(device.send(v.copy(), "float64")) for v in VALUES]
    optimizer = cls(params, **kwargs)
    for step in range(STEPS):
        for p, g, has in zip(params, GRADS[step], HAS_GRAD[step]):
            p.grad = device.send(g.copy(), "float64") if has else None
        optimizer.step()
    for p, e in zip(params, expected):
        assert device.owns(p.value) and all(device.owns(a) for a in p.state.values())
        np.testing.assert_allclose(gf.to_numpy(p.value), e, rtol=1e-12, atol=1e-12)
