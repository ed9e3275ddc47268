"""Parameters, the layer protocol, containers, moving models between devices, state dicts."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import backend
from gradflow import layers as L
from gradflow.core import Buffer, Layer
from gradflow.optim import Adam


def _mlp(seed=0):
    return gf.Sequential(L.Linear(4, 8, rng=seed), L.Tanh(), L.Linear(8, 3, rng=seed + 1))


def _arrays_of(model, optimizer_params=()):
    for name, p in model.named_parameters():
        yield name, p.value
        if p.grad is not None:
            yield name + ".grad", p.grad
        for slot, array in p.state.items():
            yield f"{name}.{slot}", array
    for name, b in model.named_buffers():
        yield name, b.value


class WithBuffer(Layer):
    def __init__(self):
        self.running = Buffer(gf.device("cpu").send(np.ones(3), "float32"))
        self.scale = gf.Parameter(gf.device("cpu").send(np.ones(3), "float32"))

    def forward(self, x, train):
        return x * self.scale.value, lambda dy: dy


def test_sequential_names_parameters_by_position():
    names = [name for name, _ in _mlp().named_parameters()]
    assert names == ["0.weight", "0.bias", "2.weight", "2.bias"]


def test_backprop_accumulates_gradients_across_two_calls():
    model = _mlp()
    x = gf.device("cpu").send(np.ones((2, 4)), "float32")
    y, backprop = model(x, train=True)
    backprop(np.ones_like(y))
    once = model[0].weight.grad.copy()
    y, backprop = model(x, train=True)
    backprop(np.ones_like(y))
    np.testing.assert_allclose(model[0].weight.grad, 2 * once, rtol=1e-6)
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())


def test_a_layer_used_twice_gets_both_gradients():
    shared = L.Linear(3, 3, rng=0).to(dtype="float64")
    model = gf.Sequential(shared, L.Tanh(), shared)
    x = gf.device("cpu").send(np.random.default_rng(0).normal(size=(4, 3)), "float64")
    from gradflow.testing import gradcheck

    result = gradcheck(model, x)
    assert result.checked["0.weight"] == "full"
    assert [n for n, _ in model.named_parameters()] == ["0.weight", "0.bias"]


def test_model_to_moves_parameters_gradients_buffers_and_optimizer_state(device):
    model = gf.Sequential(_mlp(), WithBuffer())
    optimizer = Adam(model, lr=0.1)
    cpu = gf.device("cpu")
    x = cpu.send(np.ones((2, 4)), "float32")
    y, backprop = model(x, train=True)
    backprop(np.ones_like(y))
    optimizer.step()
    y, backprop = model(x, train=True)
    backprop(np.ones_like(y))  # leaves gradients in place too
    model.to(device)
    arrays = dict(_arrays_of(model))
    assert any(".grad" in k for k in arrays) and any("exp_avg" in k for k in arrays)
    for name, array in arrays.items():
        assert device.owns(array), f"{name} stayed on {backend.device_of(array)}"
    assert model.device == device
    # the optimizer made before the move keeps working on the moved parameters
    before = gf.to_numpy(model[0][0].weight.value).copy()
    optimizer.step()
    assert not np.array_equal(before, gf.to_numpy(model[0][0].weight.value))
    for name, array in _arrays_of(model):
        assert device.owns(array), f"{name} is on {backend.device_of(array)} after a step"


def test_model_to_casts_dtype_and_keeps_integer_buffers():
    model = _mlp().to(dtype="float64")
    assert all(p.dtype == np.float64 for p in model.parameters())


def test_state_dict_round_trip_between_devices(device):
    source = _mlp(seed=0)
    target = _mlp(seed=5).to(device)
    target.load_state_dict(source.state_dict())
    for (name, a), (_, b) in zip(source.named_parameters(), target.named_parameters()):
        assert device.owns(b.value)
        np.testing.assert_array_equal(gf.to_numpy(a.value), gf.to_numpy(b.value))
    source[0].weight.value[0, 0] = 123.0  # no aliasing between the two models
    assert gf.to_numpy(target[0].weight.value)[0, 0] != 123.0


def test_load_state_dict_lists_every_mismatch_and_changes_nothing():
    model = _mlp()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    state = dict(_mlp().state_dict())
    state["0.weight"] = np.zeros((5, 8), np.float32)
    del state["2.bias"]
    state["extra"] = np.zeros(1, np.float32)
    with pytest.raises(ValueError) as error:
        model.load_state_dict(state)
    message = str(error.value)
    assert "missing keys: ['2.bias']" in message
    assert "unexpected keys: ['extra']" in message
    assert "0.weight: model (8, 4) vs given (5, 8)" in message
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_train_and_eval_switch_every_sublayer():
    model = _mlp()
    model.eval()
    assert all(not layer.training for _, layer in model.sublayers())
    model.train()
    assert all(layer.training for _, layer in model.sublayers())


def test_predict_equals_forward_output():
    model = _mlp()
    x = gf.device("cpu").send(np.random.default_rng(1).normal(size=(3, 4)), "float32")
    np.testing.assert_array_equal(model.predict(x), model(x, train=False)[0])


def test_sequential_rejects_non_layers():
    with pytest.raises(TypeError, match="Sequential: item 1 is a int"):
        gf.Sequential(L.ReLU(), 3)


def test_residual_and_concat_backprop_match_finite_differences(device):
    from gradflow.testing import check_layer

    x = np.random.default_rng(3).normal(size=(4, 3))
    check_layer(lambda: gf.Residual(gf.Sequential(L.Linear(3, 3, rng=0), L.Tanh())), x, devices=[device],
                reference=lambda p, x: x + np.tanh(x @ p["body.0.weight"].T + p["body.0.bias"]))
    check_layer(lambda: gf.Concat(L.Linear(3, 2, rng=1), L.Tanh()), x, devices=[device],
                reference=lambda p, x: np.concatenate([x @ p["branches.0.weight"].T + p["branches.0.bias"], np.tanh(x)], -1))


def test_residual_rejects_a_body_that_changes_the_shape():
    layer = gf.Residual(L.Linear(3, 2, rng=0))
    with pytest.raises(ValueError, match="Residual: the body Linear.*changed the shape"):
        layer(np.ones((2, 3), np.float32))


def test_backprop_rejects_a_delta_of_the_wrong_shape():
    layer = L.Linear(3, 2, rng=0)
    _, backprop = layer(np.ones((4, 3), np.float32), train=True)
    with pytest.raises(ValueError, match=r"Linear.*expected a δ of shape \(4, 2\).*got \(4, 3\)"):
        backprop(np.ones((4, 3), np.float32))


def test_initializers_are_identical_on_every_device(device):
    for init in ["glorot_uniform", "glorot_normal", "he_uniform", "he_normal", "orthogonal", "lecun_uniform"]:
        cpu_layer = L.Linear(16, 8, init=init, rng=7)
        dev_layer = L.Linear(16, 8, init=init, rng=7, device=device)
        np.testing.assert_array_equal(gf.to_numpy(cpu_layer.weight.value), gf.to_numpy(dev_layer.weight.value))


def test_initializer_statistics():
    from gradflow import init

    rng = np.random.default_rng(0)
    w = init.he_normal((2000, 500), 2000, 500, rng)
    assert abs(w.std() - np.sqrt(2 / 2000)) < 1e-3
    w = init.glorot_uniform((300, 200), 300, 200, rng)
    assert abs(w.max() - np.sqrt(6 / 500)) < 5e-3 and w.min() >= -np.sqrt(6 / 500)
    q = init.orthogonal((6, 4), 6, 4, rng)
    np.testing.assert_allclose(q.T @ q, np.eye(4), atol=1e-12)
    assert np.all(init.constant(0.5)((2, 2)) == 0.5)
    with pytest.raises(ValueError, match="unknown initializer"):
        init.get("bogus")


def test_seed_makes_default_initialisation_reproducible():
    gf.seed(11)
    a = L.Linear(5, 5).weight.value.copy()
    gf.seed(11)
    b = L.Linear(5, 5).weight.value
    np.testing.assert_array_equal(a, b)


def test_gradcheck_sees_the_gradient_of_an_f_ordered_parameter():
    # An orthogonal init with fewer rows than columns is a transposed (F-ordered) matrix; the
    # finite differences of such a parameter were written into a copy and read back as zeros.
    from gradflow.testing.gradcheck import gradcheck

    dev = gf.device("cpu")
    layer = gf.layers.Linear(2, 3, bias=False, init="orthogonal", rng=7).to(dev, "float64")
    layer.weight.value = np.asfortranarray(layer.weight.value)
    assert layer.weight.value.flags.f_contiguous and not layer.weight.value.flags.c_contiguous
    x = dev.send(np.array([[0.12573022, -0.13210486]]), "float64")
    result = gradcheck(layer, x)
    assert result.checked["weight"] == "full" and result.worst["weight"] < 1


def test_a_layer_called_alone_undoes_what_its_forward_recorded_when_it_raises():
    from gradflow.core import record_undo

    class Refusing(Layer):
        def __init__(self):
            self.count = 0

        def forward(self, x, train):
            def undo():
                self.count -= 1

            record_undo(undo)
            self.count += 1
            raise ValueError("refused after changing state")

    layer = Refusing()
    with pytest.raises(ValueError, match="refused after changing state"):
        layer(np.ones((2, 3), np.float32), train=True)
    assert layer.count == 0


def test_layers_declaring_a_stateless_forward_record_nothing_to_undo():
    """``forward_changes_state = False`` lets a call skip its undo journal: it must be true."""
    from gradflow import core
    from tests.cases import layer_cases

    checked = []
    for case in layer_cases():
        layer = case.make()
        if layer.forward_changes_state or case.call_kwargs or case.before_forward:
            continue
        with core.rollback_on_error():
            layer(gf.device("cpu").send(case.x, "float32"), train=True)
            assert core._JOURNAL == [], case.name
        assert not list(layer.named_buffers()), case.name
        checked.append(type(layer).__name__)
    assert {"Linear", "ReLU", "Flatten"} <= set(checked)
