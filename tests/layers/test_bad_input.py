"""Bad input to every public entry point, as tables.

Each row names the bad input, the error type and a message pattern. Rows that hand bad input
to a model check that the model's parameters, gradients, buffers, optimizer slots, optimizer
step and RNG states are exactly as they were before the call (the library checks before it
changes state). The layer, loss and optimizer tables are generated from the public exports
and the registry in tests/cases, so a layer that lands later is covered automatically; the
coverage tests at the end fail when an exported class has no registry case or no bad-input row.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

import gradflow as gf
from gradflow import backend, data, datasets, layers, losses, optim, train
from gradflow.backend import DeviceError
from gradflow.core import Layer
from gradflow.data import BatchIterator
from tests.cases import LayerCase, layer_cases, loss_cases

# --------------------------------------------------------------------------------------------
# What is exported, and the registry cases that go with it
# --------------------------------------------------------------------------------------------


def exported_layer_classes() -> dict[str, type]:
    """Every Layer subclass in gradflow.layers.__all__ plus the containers in gradflow.__all__."""
    found = {}
    for module in (layers, gf):
        for name in module.__all__:
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, Layer) and obj is not Layer:
                found[name] = obj
    return found


def exported_loss_classes() -> dict[str, type]:
    found = {}
    for name, obj in vars(losses).items():
        if isinstance(obj, type) and issubclass(obj, losses.Loss) and not name.startswith("_") and obj is not losses.Loss:
            found.setdefault(obj.__name__, obj)  # aliases (CrossEntropy) count once
    return found


def exported_optimizer_classes() -> dict[str, type]:
    return {name: getattr(optim, name) for name in optim.__all__
            if isinstance(getattr(optim, name), type) and issubclass(getattr(optim, name), optim.Optimizer)
            and getattr(optim, name) is not optim.Optimizer}


LAYER_CLASSES = exported_layer_classes()
LAYER_CASES = layer_cases()
CASES_BY_CLASS: dict[type, list[LayerCase]] = {}
for _case in LAYER_CASES:
    CASES_BY_CLASS.setdefault(type(_case.make()), []).append(_case)
LOSS_CASES = loss_cases()

# --------------------------------------------------------------------------------------------
# Snapshots: everything a bad call must leave alone
# --------------------------------------------------------------------------------------------


def _host(array: Any) -> np.ndarray:
    return np.array(backend.to_numpy(array), copy=True)


def _rng_states(model: Layer) -> dict[str, Any]:
    states = {}
    for name, layer in model.sublayers():
        for getter in ("rng_state", "get_state"):
            method = getattr(layer, getter, None)
            if callable(method):
                states[f"{name}:{getter}"] = repr(method())
                break
    return states


def snapshot(model: Layer, optimizer: Any = None) -> dict[str, Any]:
    state: dict[str, Any] = {}
    for name, p in model.named_parameters():
        state[f"parameter {name}"] = _host(p.value)
        state[f"gradient {name}"] = None if p.grad is None else _host(p.grad)
        for slot, array in p.state.items():
            state[f"optimizer slot {name}.{slot}"] = _host(array)
    for name, b in model.named_buffers():
        state[f"buffer {name}"] = _host(b.value)
    state.update(_rng_states(model))
    if optimizer is not None:
        state["optimizer step"] = optimizer.step_count
        state["optimizer lr"] = optimizer.lr
    return state


def assert_unchanged(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert before.keys() == after.keys(), f"state keys changed: {set(before) ^ set(after)}"
    for key, old in before.items():
        new = after[key]
        if isinstance(old, np.ndarray):
            assert isinstance(new, np.ndarray) and new.dtype == old.dtype, f"{key} changed dtype"
            np.testing.assert_array_equal(new, old, err_msg=f"{key} changed")
        else:
            assert new == old, f"{key} changed: {old!r} -> {new!r}"


# --------------------------------------------------------------------------------------------
# A layer with gradients and optimizer state, ready to receive bad input
# --------------------------------------------------------------------------------------------


def _send(device, value: Any, dtype: str = "float32") -> Any:
    if isinstance(value, np.ndarray):
        return device.send(value, dtype if np.issubdtype(value.dtype, np.floating) else None)
    if isinstance(value, (tuple, list)):
        return type(value)(_send(device, v, dtype) for v in value)
    return value


def _is_float_input(case: LayerCase) -> bool:
    return np.issubdtype(np.asarray(case.x).dtype, np.floating)


def _other_device(device):
    return gf.device("strict" if device.name == "cpu" else "cpu")


@dataclass
class Prepared:
    layer: Layer
    optimizer: Any
    x: Any
    kwargs: dict[str, Any]
    y: Any
    backprop: Callable


def prepare(case: LayerCase, device) -> Prepared:
    """The case's layer on ``device`` after one SGD-with-momentum step and a second backward, so
    parameters, gradients and optimizer slots all hold values a bad call could disturb."""
    layer = case.make().to(device)
    optimizer = optim.SGD(layer, lr=0.01, momentum=0.9) if layer.parameters() else None
    x = _send(device, case.x)
    kwargs = {k: _send(device, v) for k, v in case.call_kwargs.items()}
    for _ in range(2):
        if case.before_forward:
            case.before_forward(layer)
        y, backprop = layer(x, True, **kwargs)
        if backend.is_array(y):
            backprop(device.send(np.full(tuple(y.shape), 0.1), y.dtype))
        if optimizer is not None:
            optimizer.step()
    if case.before_forward:
        case.before_forward(layer)
    y, backprop = layer(x, True, **kwargs)
    return Prepared(layer, optimizer, x, kwargs, y, backprop)


@contextmanager
def raises_in_row(row: str, error: Any, pattern: str) -> Iterator[None]:
    """``pytest.raises`` that names the table row when it fails (rows run in a loop)."""
    try:
        with pytest.raises(error, match=pattern):
            yield
    except BaseException as failure:
        raise AssertionError(f"row {row!r}: {type(failure).__name__}: {failure}") from failure


def _first_case(cls: type, predicate: Callable[[LayerCase], bool] = lambda c: True) -> LayerCase | None:
    return next((c for c in CASES_BY_CLASS.get(cls, []) if predicate(c)), None)


# --------------------------------------------------------------------------------------------
# Layer inputs: generic rows, applied to every exported layer class
# --------------------------------------------------------------------------------------------


@dataclass
class GenericRow:
    """A bad input derived from a registry case: ``make(case, device)`` builds it (host arrays are
    sent as they are, without a cast); ``applies(case, layer)`` says whether the row makes sense."""

    name: str
    make: Callable[[LayerCase, Any], Any]
    error: type
    pattern: str  # formatted with {cls}: the layer's class name
    applies: Callable[[LayerCase, Layer], bool] = lambda case, layer: True


def _names(layer: Layer) -> str:
    """A regex matching the class name of the layer or of any layer inside it (a container's
    error may come from the inner layer that saw the input first)."""
    names = sorted({type(sub).__name__ for _, sub in layer.sublayers()})
    return "(" + "|".join(re.escape(n) for n in names) + ")"


def _has_parameters(case: LayerCase, layer: Layer) -> bool:
    return bool(layer.parameters())


GENERIC_INPUT_ROWS = [
    GenericRow("python list", lambda case, dev: np.asarray(case.x).tolist(), TypeError, r"{cls}.*expected an? .*array.*got list"),
    GenericRow("complex array", lambda case, dev: dev.send(np.asarray(case.x).astype(np.complex128)), TypeError,
               r"{cls}.*complex"),
    GenericRow("int64 array", lambda case, dev: dev.send(np.round(np.asarray(case.x)).astype(np.int64)), TypeError,
               r"{cls}.*floating-point.*int64", lambda case, layer: _is_float_input(case)),
    GenericRow("bool array", lambda case, dev: dev.send(np.asarray(case.x) > 0), TypeError,
               r"{cls}.*floating-point.*bool", lambda case, layer: _is_float_input(case)),
    GenericRow("float input to an integer-input layer", lambda case, dev: dev.send(np.asarray(case.x), "float32"), TypeError,
               r"{cls}.*(int|integer)", lambda case, layer: not _is_float_input(case)),
    GenericRow("float64 input to a float32 layer", lambda case, dev: dev.send(np.asarray(case.x), "float64"), TypeError,
               r"{cls}.*float32.*float64|{cls}.*float64.*float32",
               lambda case, layer: _is_float_input(case) and _has_parameters(case, layer)),
    GenericRow("input on another device", lambda case, dev: _send(_other_device(dev), np.asarray(case.x)), DeviceError,
               r"{cls}.*device", _has_parameters),
]

GENERIC_CLASSES = [pytest.param(cls, id=name) for name, cls in LAYER_CLASSES.items() if cls in CASES_BY_CLASS]


@pytest.mark.parametrize("cls", GENERIC_CLASSES)
def test_every_layer_rejects_generic_bad_input_before_changing_state(cls, device):
    """All generic rows that apply, one after the other on the same prepared layer: each must
    raise and leave the state as it was (so the next row starts from the same state)."""
    case = _first_case(cls)
    ready = prepare(case, device)
    rows = [row for row in GENERIC_INPUT_ROWS if row.applies(case, ready.layer)]
    assert rows
    before = snapshot(ready.layer, ready.optimizer)
    for row in rows:
        bad = row.make(case, device)
        with raises_in_row(row.name, row.error, row.pattern.format(cls=_names(ready.layer))):
            ready.layer(bad, True, **ready.kwargs)
        assert_unchanged(before, snapshot(ready.layer, ready.optimizer))


# --------------------------------------------------------------------------------------------
# δ handed to a backprop: wrong shape, dtype or device never reaches a gradient
# --------------------------------------------------------------------------------------------


def _delta_rows(y, device) -> list[tuple[str, Any, type, str]]:
    shape = tuple(y.shape)
    host = np.full(shape, 0.5)
    rows = [
        ("δ with one more feature", device.send(np.full(shape[:-1] + (shape[-1] + 1,), 0.5), y.dtype) if shape else None,
         ValueError, r"{cls}.*backprop expected a δ of shape"),
        ("δ without the batch axis (broadcastable)", device.send(host[0], y.dtype) if shape else None,
         ValueError, r"{cls}.*backprop expected a δ of shape"),
        ("δ of another dtype", device.send(host, "float64" if backend.dtype_name(y.dtype) != "float64" else "float32"),
         TypeError, r"{cls}.*backprop expected a δ of dtype"),
        ("δ on another device", _other_device(device).send(host, backend.dtype_name(y.dtype)),
         DeviceError, r"{cls}.*backprop expected a δ on device"),
        ("δ as a python list", host.tolist(), TypeError, r"{cls}.*backprop expected a δ array"),
    ]
    return [row for row in rows if row[1] is not None]


@pytest.mark.parametrize("case", LAYER_CASES, ids=[c.name for c in LAYER_CASES])
def test_every_layer_rejects_a_bad_delta_before_touching_gradients(case, device):
    ready = prepare(case, device)
    if not backend.is_array(ready.y):
        return  # layers returning (output, state) tuples take tuple δs; their own tests cover them
    rows = _delta_rows(ready.y, device)
    assert len(rows) >= 4
    before = snapshot(ready.layer, ready.optimizer)
    for description, value, error, pattern in rows:
        with raises_in_row(description, error, pattern.format(cls=re.escape(type(ready.layer).__name__))):
            ready.backprop(value)
        assert_unchanged(before, snapshot(ready.layer, ready.optimizer))


# --------------------------------------------------------------------------------------------
# δs of recurrent states (return_state=True): checked like output δs, never broadcast or split
# --------------------------------------------------------------------------------------------

def _state_delta_rows(kind: str, y, final, device) -> list[tuple[str, Any, type, str]]:
    """(description, δ given to backprop, error, pattern) for a layer called with return_state=True."""
    pair = kind in ("LSTM", "LSTMCell")
    h = final[0] if pair else final
    dtype = backend.dtype_name(h.dtype)
    good_h = device.send(np.full(tuple(h.shape), 0.5), dtype)
    good = (good_h, device.send(np.full(tuple(final[1].shape), 0.5), dtype)) if pair else good_h
    dy = device.send(np.full(tuple(y.shape), 0.5), dtype)

    def with_h(bad):
        return (dy, (bad, good[1]) if pair else bad)

    broadcastable = device.send(np.full((1,) * (h.ndim - 1) + (h.shape[-1],), 0.5), dtype)
    rows = [
        ("state δ that broadcasts", with_h(broadcastable), ValueError, r"δ of the final state h of shape"),
        ("state δ of another float dtype", with_h(device.send(np.full(tuple(h.shape), 0.5), "float64" if dtype != "float64" else "float32")),
         TypeError, r"δ of the final state h of dtype"),
        ("integer state δ", with_h(device.send(np.ones(tuple(h.shape), dtype=np.int32))), TypeError,
         r"δ of the final state h of dtype"),
        ("state δ on another device", with_h(_other_device(device).send(np.full(tuple(h.shape), 0.5), dtype)), DeviceError,
         r"δ of the final state h on device"),
        ("state δ as a python list", with_h(np.full(tuple(h.shape), 0.5).tolist()), TypeError, r"δ of the final state h array"),
        ("output δ of another dtype", (device.send(np.full(tuple(y.shape), 0.5), "float64" if dtype != "float64" else "float32"), good),
         TypeError, r"backprop expected a δ of dtype"),
        ("three parts instead of (dy, d_state)", (dy, good, good), TypeError, r"backprop expected \(dy, d_final_state\), a pair"),
    ]
    if pair:
        stacked = device.send(np.full((2,) + tuple(h.shape), 0.5), dtype)  # used to be split along axis 0
        rows += [
            ("one array for the (δh, δc) pair", (dy, stacked), TypeError, r"final-state δ as a pair \(δh, δc\)"),
            ("a triple for the (δh, δc) pair", (dy, (good_h, good[1], good[1])), TypeError, r"final-state δ as a pair \(δh, δc\)"),
            ("cell δ that broadcasts", (dy, (good_h, broadcastable)), ValueError, r"δ of the final state c of shape"),
        ]
    return rows


STATE_DELTA_LAYERS = {
    "RNN": lambda: layers.RNN(3, 4, num_layers=2, rng=0),
    "LSTM": lambda: layers.LSTM(3, 4, num_layers=2, bidirectional=True, rng=0),
    "LSTM-proj": lambda: layers.LSTM(3, 4, num_layers=2, proj_size=2, rng=0),
    "GRU": lambda: layers.GRU(3, 4, bidirectional=True, return_sequences=False, rng=0),
    "RNNCell": lambda: layers.RNNCell(3, 4, rng=0),
    "LSTMCell": lambda: layers.LSTMCell(3, 4, rng=0),
    "GRUCell": lambda: layers.GRUCell(3, 4, rng=0),
}


@pytest.mark.parametrize("name", sorted(STATE_DELTA_LAYERS))
def test_recurrent_state_deltas_are_checked_before_touching_gradients(name, device):
    layer = STATE_DELTA_LAYERS[name]().to(device)
    kind = type(layer).__name__
    x = device.send(np.random.default_rng(0).normal(size=(2, 5, 3) if "Cell" not in kind else (2, 3)), "float32")
    optimizer = optim.SGD(layer, lr=0.01, momentum=0.9)
    (y, final), backprop = layer(x, True, return_state=True)
    backprop((device.send(np.full(tuple(y.shape), 0.1), "float32"), None))
    optimizer.step()
    (y, final), backprop = layer(x, True, return_state=True)  # a fresh forward: a backprop runs once
    before = snapshot(layer, optimizer)
    rows = _state_delta_rows(kind, y, final, device)
    for description, delta, error, pattern in rows:
        with raises_in_row(description, error, rf"{kind}\(.*" + pattern):
            backprop(delta)
        assert_unchanged(before, snapshot(layer, optimizer))


# --------------------------------------------------------------------------------------------
# Layer inputs: explicit rows, layer by layer (the registry's bad_inputs plus this table)
# --------------------------------------------------------------------------------------------

# (make layer, description, host input or callable(device) -> input, error, message pattern).
# Host float64 inputs are sent as float32 (the layer's dtype); others as they are.
EXPLICIT_LAYER_ROWS: list[tuple[Callable[[], Layer], str, Any, type, str]] = [
    (layers.Flatten, "0-d input", np.array(1.0), ValueError, r"Flatten\(\): expected input with at least 1 axes, got shape \(\)"),
    (lambda: layers.Reshape(2, 6), "input whose size does not fit", np.ones((2, 5)), ValueError,
     r"Reshape\(shape=\(2, 6\)\): cannot reshape input of shape \(2, 5\)"),
    (lambda: layers.Reshape(2, 6), "0-d input", np.array(1.0), ValueError, r"Reshape.*at least 1 axes"),
    (lambda: layers.Softmax(axis=1), "1-D input without the axis", np.ones(4), ValueError,
     r"Softmax\(axis=1\): expected input with entries along axis 1, got shape \(4,\)"),
    (layers.Softmax, "0-d input", np.array(1.0), ValueError, r"Softmax\(axis=-1\): expected input with entries along axis -1"),
    (layers.Softmax, "no classes", np.ones((3, 0)), ValueError, r"Softmax.*entries along axis -1, got shape \(3, 0\)"),
    (layers.LogSoftmax, "0-d input", np.array(1.0), ValueError, r"LogSoftmax\(axis=-1\): expected input with entries along axis -1"),
    (lambda: layers.LogSoftmax(axis=-3), "2-D input for axis -3", np.ones((2, 3)), ValueError,
     r"LogSoftmax\(axis=-3\).*got shape \(2, 3\)"),
    (lambda: layers.Linear(4, 3, rng=0), "0-d input", np.array(1.0), ValueError, r"Linear.*at least 1 axes, got shape \(\)"),
    (lambda: layers.Linear(4, 3, rng=0), "zero features", np.ones((2, 0)), ValueError, r"Linear.*4 features.*\(2, 0\)"),
]


def _if_exported(name: str, rows: Callable[[type], list]) -> list:
    """Rows for a layer another piece of work adds; none until it is exported."""
    cls = getattr(layers, name, None)
    return rows(cls) if cls is not None else []


EXPLICIT_LAYER_ROWS += _if_exported("MaxPool1d", lambda cls: [
    (lambda: cls(3, stride=2, padding=1), "2-D input", np.ones((3, 9)), ValueError,
     r"MaxPool1d\(kernel_size=\(3,\).*expected a 3-D input \(N, C, L\), got shape \(3, 9\)"),
])
EXPLICIT_LAYER_ROWS += _if_exported("AvgPool2d", lambda cls: [
    (lambda: cls(2), "3-D input", np.ones((3, 5, 7)), ValueError,
     r"AvgPool2d\(kernel_size=\(2, 2\)\): expected a 4-D input \(N, C, H, W\), got shape \(3, 5, 7\)"),
    (lambda: cls(2), "image smaller than the kernel", np.ones((1, 1, 1, 7)), ValueError,
     r"AvgPool2d\(kernel_size=\(2, 2\)\): the input's spatial size \(1, 7\).*smaller than the kernel"),
])
EXPLICIT_LAYER_ROWS += _if_exported("ConvTranspose1d", lambda cls: [
    (lambda: cls(3, 2, 4, stride=2, padding=1, rng=0), "wrong channel count", np.ones((2, 4, 5)), ValueError,
     r"ConvTranspose1d\(3, 2.*expected 3 input channels \(axis 1\), got 4"),
    (lambda: cls(3, 2, 4, stride=2, padding=1, rng=0), "2-D input", np.ones((2, 5)), ValueError,
     r"ConvTranspose1d\(3, 2.*expected a 3-D input \(N, C, L\), got shape \(2, 5\)"),
])
EXPLICIT_LAYER_ROWS += _if_exported("SinusoidalPositionalEncoding", lambda cls: [
    (lambda: cls(5), "wrong feature size", np.ones((2, 6, 4)), ValueError,
     r"SinusoidalPositionalEncoding\(dim=5\): expected input with 5 features on axis -1, got shape \(2, 6, 4\)"),
    (lambda: cls(5), "2-D input", np.ones((2, 5)), ValueError,
     r"SinusoidalPositionalEncoding\(dim=5\): expected a 3-D input, got shape \(2, 5\)"),
])

# Classes whose every bad input is one of the generic rows above: they accept any shape.
NO_EXPLICIT_ROW = {
    "Identity": "passes any floating-point array through; only the generic dtype/list rows apply",
    "ReLU": "elementwise on any shape; only the generic rows apply",
    "LeakyReLU": "elementwise on any shape; only the generic rows apply",
    "ELU": "elementwise on any shape; only the generic rows apply",
    "Sigmoid": "elementwise on any shape; only the generic rows apply",
    "Tanh": "elementwise on any shape; only the generic rows apply",
    "SiLU": "elementwise on any shape; only the generic rows apply",
    "GELU": "elementwise on any shape; only the generic rows apply",
}

EXPLICIT_PARAMS = [
    # registry rows: (description, input, error, pattern[, call kwargs]); the case's kwargs by default
    pytest.param(case.make, row[0], row[1], row[2], row[3], row[4] if len(row) > 4 else case.call_kwargs,
                 id=f"{case.name}-{row[0]}")
    for case in LAYER_CASES for row in case.bad_inputs
] + [
    pytest.param(make, description, value, error, pattern, {}, id=f"{make().describe()}-{description}")
    for make, description, value, error, pattern in EXPLICIT_LAYER_ROWS
]


def _send_bad(device, value: Any) -> Any:
    if callable(value):
        return value(device)
    if isinstance(value, tuple):
        return tuple(_send_bad(device, v) for v in value)
    return _send(device, value)


@pytest.mark.parametrize("make,description,value,error,pattern,kwargs", EXPLICIT_PARAMS)
def test_layer_specific_bad_input_raises_before_changing_state(make, description, value, error, pattern, kwargs, device):
    layer = make().to(device)
    optimizer = optim.SGD(layer, lr=0.01, momentum=0.9) if layer.parameters() else None
    if optimizer is not None:  # give the gradients and the momentum slots values
        for p in layer.parameters():
            p.grad = device.send(np.full(p.shape, 0.25), p.dtype)
        optimizer.step()
    before = snapshot(layer, optimizer)
    bad = _send_bad(device, value)
    sent = {key: _send_bad(device, item) for key, item in kwargs.items()}
    with pytest.raises(error, match=pattern):
        layer(bad, train=True, **sent)
    assert_unchanged(before, snapshot(layer, optimizer))


# --------------------------------------------------------------------------------------------
# Zero-size batches: each layer either works with the shapes preserved or raises a clear error
# --------------------------------------------------------------------------------------------

# Layers that refuse an empty batch: class name -> (applies to the case?, error, pattern, why).
ZERO_BATCH_RAISES: dict[str, tuple[Callable[[LayerCase, Layer], bool], type, str, str]] = {
    "BatchNorm1d": (lambda case, layer: case.train, ValueError, r"BatchNorm1d\(.*training needs more than one value per channel",
                    "batch statistics of no samples are undefined (eval mode works: running statistics)"),
    "BatchNorm2d": (lambda case, layer: case.train, ValueError, r"BatchNorm2d\(.*training needs more than one value per channel",
                    "batch statistics of no samples are undefined (eval mode works: running statistics)"),
}
# Axis 0 is time, not the batch, for time-major recurrent layers: zero steps is no sequence.
for _name in ("RNN", "LSTM", "GRU"):
    ZERO_BATCH_RAISES[_name] = (lambda case, layer: not getattr(layer, "batch_first", True), ValueError,
                                rf"{_name}\(.*expected a sequence of at least one step", "axis 0 is time (batch_first=False)")


def _zero_batch_cases() -> list[LayerCase]:
    def batch_free(case: LayerCase) -> bool:  # keyword arrays (masks, states) would need slicing too
        return not any(isinstance(v, (np.ndarray, tuple, list)) for v in case.call_kwargs.values())

    return [c for c in LAYER_CASES if np.ndim(c.x) >= 1 and batch_free(c)]


ZERO_CASES = _zero_batch_cases()


@pytest.mark.parametrize("case", ZERO_CASES, ids=[c.name for c in ZERO_CASES])
def test_zero_size_batch_keeps_shapes_or_raises_a_clear_error(case, device):
    ready = prepare(case, device)
    layer = ready.layer
    layer.zero_grad()
    before = snapshot(layer)
    x_host = np.asarray(case.x)[:0]
    x0 = _send(device, x_host)
    policy = ZERO_BATCH_RAISES.get(type(layer).__name__)
    if case.before_forward:
        case.before_forward(layer)
    if policy is not None and policy[0](case, layer):
        _applies, error, pattern, _why = policy
        with pytest.raises(error, match=pattern):
            layer(x0, case.train)
        assert_unchanged(before, snapshot(layer))
        return
    y, backprop = layer(x0, case.train)
    assert backend.is_array(y), f"{case.name}: expected one output array"
    full_y = ready.y
    assert tuple(y.shape) == (0, *tuple(full_y.shape)[1:]), f"{case.name}: empty batch gave output shape {tuple(y.shape)}"
    assert y.dtype == full_y.dtype
    dx = backprop(device.send(np.zeros(tuple(y.shape)), y.dtype))
    if _is_float_input(case) and case.check_input_gradient:
        assert tuple(dx.shape) == x_host.shape
    for name, p in layer.named_parameters():
        if p.grad is not None:  # no samples: a zero gradient of the parameter's shape
            grad = backend.to_numpy(p.grad)
            assert grad.shape == p.shape, f"{name}: gradient shape {grad.shape}"
            np.testing.assert_array_equal(grad, np.zeros(p.shape), err_msg=f"{case.name}: {name} gradient from no samples")
    for name, value in snapshot(layer).items():
        if name.startswith(("parameter", "buffer")):
            np.testing.assert_array_equal(value, before[name], err_msg=f"{case.name}: an empty batch changed {name}")


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def _loss_cases_by_kind() -> list:
    """One registry case per (loss class, target kind): integer labels or float targets."""
    chosen, seen = [], set()
    for case in LOSS_CASES:
        key = (type(case.make()), np.issubdtype(np.asarray(case.target).dtype, np.floating))
        if key not in seen:
            seen.add(key)
            chosen.append(case)
    return chosen


LOSS_KIND_CASES = _loss_cases_by_kind()


def _nan_at(host: np.ndarray, value: float) -> np.ndarray:
    bad = np.array(host, dtype=np.float64, copy=True)
    bad.reshape(-1)[1] = value
    return bad


def _loss_rows(case) -> list[tuple[str, Callable, Callable, type, str]]:
    """(description, output(dev), target(dev), error, pattern) for the case's loss."""
    name = re.escape(type(case.make()).__name__)
    out, target = np.asarray(case.output), np.asarray(case.target)
    float_target = np.issubdtype(target.dtype, np.floating)
    t = lambda dev: _send(dev, target)  # noqa: E731
    o = lambda dev: dev.send(out, "float32")  # noqa: E731
    rows = [
        ("output as a python list", lambda dev: out.tolist(), t, TypeError, rf"{name}: expected the model output as an array"),
        ("target as a python list", o, lambda dev: target.tolist(), TypeError, rf"{name}: expected the target as an array"),
        ("integer output", lambda dev: dev.send(np.round(out).astype(np.int64)), t, TypeError, rf"{name}: expected a floating-point output"),
        ("complex output", lambda dev: dev.send(out.astype(np.complex128)), t, TypeError, rf"{name}: expected a floating-point output"),
        ("0-d output", lambda dev: dev.send(np.array(1.0), "float32"), t, ValueError, rf"{name}: expected an output with a batch axis"),
        ("target on another device", o, lambda dev: _send(_other_device(dev), target), DeviceError,
         rf"{name}: output is on .* but target on"),
        ("NaN in the output", lambda dev: dev.send(_nan_at(out, math.nan), "float32"), t, FloatingPointError,
         rf"{name}: the model output contains NaN or Inf \(first at index"),
        ("+Inf in the output", lambda dev: dev.send(_nan_at(out, math.inf), "float32"), t, FloatingPointError,
         rf"{name}: the model output contains NaN or Inf"),
        ("-Inf in the output", lambda dev: dev.send(_nan_at(out, -math.inf), "float32"), t, FloatingPointError,
         rf"{name}: the model output contains NaN or Inf"),
        ("target with a missing sample", o, lambda dev: _send(dev, target[:-1]), ValueError, rf"{name}: expected .*target of shape|{name}: expected integer labels of shape"),
    ]
    if float_target:
        rows += [
            ("NaN in the target", o, lambda dev: dev.send(_nan_at(target, math.nan), "float32"), FloatingPointError,
             rf"{name}: the loss is not finite although the output is; check the target"),
            ("integer target", o, lambda dev: dev.send(np.round(target).astype(np.int64)), (TypeError, ValueError),
             rf"{name}: (expected a floating-point target|expected integer labels of shape)"),
        ]
    else:
        classes = out.shape[-1]
        rows += [
            ("label equal to the number of classes", o, lambda dev: dev.send(np.where(target == target.flat[0], classes, target)),
             ValueError, rf"{name}: labels must lie in \[0, {classes - 1}\] for {classes} classes, got values in \[\d+, {classes}\]"),
            ("negative label", o, lambda dev: dev.send(np.where(target == target.flat[0], -1, target)),
             ValueError, rf"{name}: labels must lie in \[0, {classes - 1}\].*got values in \[-1,"),
            ("float labels", o, lambda dev: dev.send(target.astype(np.float64), "float32"), TypeError,
             rf"{name}: integer class labels expected, got dtype float32"),
            ("bool labels", o, lambda dev: dev.send(target > 0), TypeError, rf"{name}: integer class labels expected, got dtype bool"),
        ]
    return rows


LOSS_PARAMS = [
    pytest.param(case, row, id=f"{case.name}-{row[0]}") for case in LOSS_KIND_CASES for row in _loss_rows(case)
]


@pytest.mark.parametrize("case,row", LOSS_PARAMS)
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_every_loss_rejects_bad_input_with_a_clear_error(case, row, device):
    description, make_output, make_target, error, pattern = row
    output, target = make_output(device), make_target(device)
    kept = [_host(a) for a in (output, target) if backend.is_array(a)]
    with pytest.raises(error, match=pattern):
        case.make()(output, target)
    for array, copy in zip([a for a in (output, target) if backend.is_array(a)], kept):
        np.testing.assert_array_equal(_host(array), copy)  # the loss left its arguments alone


@pytest.mark.parametrize("case", LOSS_KIND_CASES, ids=[c.name for c in LOSS_KIND_CASES])
def test_every_loss_on_an_empty_batch_is_zero_with_an_empty_delta(case, device):
    output = device.send(np.asarray(case.output)[:0], "float32")
    target = _send(device, np.asarray(case.target)[:0])
    value, delta = case.make()(output, target)
    assert float(backend.to_numpy(value)) == 0.0
    assert tuple(delta.shape) == tuple(output.shape) and delta.dtype == output.dtype


@pytest.mark.parametrize("case", LOSS_KIND_CASES, ids=[c.name for c in LOSS_KIND_CASES])
def test_every_loss_keeps_the_output_dtype_whatever_the_target_dtype(case, device):
    output = device.send(np.asarray(case.output), "float32")
    target = _send(device, np.asarray(case.target), "float64")
    value, delta = case.make()(output, target)
    assert value.dtype == output.dtype and delta.dtype == output.dtype


@pytest.mark.parametrize("make,pattern", [
    (lambda: losses.SoftmaxCrossEntropy(reduction="avg"), r"reduction must be one of"),
    (lambda: losses.SoftmaxCrossEntropy(label_smoothing=1.0), r"label_smoothing must be in \[0, 1\)"),
    (lambda: losses.SoftmaxCrossEntropy(label_smoothing=-0.1), r"label_smoothing must be in \[0, 1\)"),
    (lambda: losses.Huber(delta=0.0), r"Huber: delta must be > 0"),
    (lambda: losses.Huber(delta=math.nan), r"Huber: delta must be > 0"),
    (lambda: losses.SoftmaxCrossEntropy(weight=[1.0, -1.0]), r"SoftmaxCrossEntropy: weight must be finite and >= 0"),
    (lambda: losses.NLL(weight=[[1.0]]), r"NLL: weight must be a 1-D array of numbers"),
    (lambda: losses.BCEWithLogits(pos_weight=math.inf), r"BCEWithLogits: pos_weight must be finite and >= 0"),
    (lambda: losses.KLDivergence(reduction="avg"), r"KLDivergence: reduction must be one of \('batchmean'"),
    (lambda: losses.SoftmaxCrossEntropy(weight=[1.0, 2.0], label_smoothing=0.1), r"label_smoothing together with weight"),
    (lambda: losses.MSE(reduction="avg"), r"MSE: reduction must be one of"),
])
def test_loss_settings_out_of_range_are_value_errors(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


# --------------------------------------------------------------------------------------------
# Optimizers: every hyper-parameter of every exported optimizer
# --------------------------------------------------------------------------------------------

_RANGE = r"{name}: {param} must be in "
# hyper-parameter name -> [(bad value, error, pattern)]; patterns get {name} (the class) and {param}.
HYPER_ROWS: dict[str, list[tuple[Any, type, str]]] = {
    "lr": [(0.0, ValueError, _RANGE + r"\(0, inf\)"), (-1e-3, ValueError, _RANGE), (math.nan, ValueError, _RANGE),
           (math.inf, ValueError, _RANGE), ("0.1", TypeError, r"{name}: lr must be a number, got str"),
           (lambda step: -0.1, ValueError, r"{name}: lr\(0\) of the schedule must be in \[0, inf\)")],
    "momentum": [(-0.1, ValueError, _RANGE + r"\[0, 1\)"), (1.0, ValueError, _RANGE + r"\[0, 1\)"),
                 (math.nan, ValueError, _RANGE)],
    "dampening": [(-0.1, ValueError, _RANGE + r"\[0, 1\]"), (1.5, ValueError, _RANGE + r"\[0, 1\]")],
    "weight_decay": [(-1e-4, ValueError, _RANGE + r"\[0, inf\)"), (math.nan, ValueError, _RANGE),
                     (math.inf, ValueError, _RANGE)],
    "eps": [(0.0, ValueError, _RANGE + r"\(0, inf\)"), (-1e-8, ValueError, _RANGE)],
    "betas": [((1.0, 0.999), ValueError, r"{name}: betas\[0\] must be in \[0, 1\)"),
              ((0.9, -0.1), ValueError, r"{name}: betas\[1\] must be in \[0, 1\)"),
              ((0.9,), TypeError, r"{name}: betas must be a pair"), (0.9, TypeError, r"{name}: betas must be a pair")],
    "alpha": [(1.0, ValueError, _RANGE + r"\[0, 1\)"), (-0.1, ValueError, _RANGE)],
    "lr_decay": [(-1.0, ValueError, _RANGE + r"\[0, inf\)")],
    "initial_accumulator_value": [(-1.0, ValueError, _RANGE + r"\[0, inf\)")],
    "clip_norm": [(0.0, ValueError, _RANGE + r"\(0, inf\)"), (-1.0, ValueError, _RANGE)],
    "clip_value": [(0.0, ValueError, _RANGE + r"\(0, inf\)")],
    "norm_type": [(0.0, ValueError, r"{name}: norm_type must be a number > 0 or math.inf, got 0.0"),
                  ("2", ValueError, r"{name}: norm_type must be a number > 0")],
    "rho": [(1.5, ValueError, _RANGE + r"\[0, 1\]"), (-0.1, ValueError, _RANGE)],
    "momentum_decay": [(-1.0, ValueError, _RANGE + r"\[0, inf\)")],
    "maximize": [(1, TypeError, r"{name}: maximize must be True or False, got 1")],
    "flat": [("yes", TypeError, r"{name}: flat must be True, False or None \(chosen per device\), got 'yes'")],
    "decoupled_weight_decay": [("yes", TypeError, r"{name}: decoupled_weight_decay must be True or False")],
}
# Constructor arguments that take any value of their kind, with the reason.
HYPER_WITHOUT_ROWS = {
    "params": "checked by the Parameter rows below",
    "nesterov": "a flag; its consistency with momentum/dampening has its own row",
    "amsgrad": "a flag", "centered": "a flag",
    "clip": "**clip forwards clip_norm/clip_value, which have rows",
}


def _constructor_parameters(cls: type) -> list[str]:
    names = []
    for klass in (cls, optim.Optimizer):
        for name, p in inspect.signature(klass.__init__).parameters.items():
            if name != "self" and name not in names and p.kind is not p.VAR_KEYWORD:
                names.append(name)
    return names


OPTIMIZERS = exported_optimizer_classes()
HYPER_PARAMS = [
    pytest.param(cls, param, value, error, pattern, id=f"{name}-{param}={value!r}")
    for name, cls in OPTIMIZERS.items()
    for param in _constructor_parameters(cls) if param in HYPER_ROWS
    for value, error, pattern in HYPER_ROWS[param]
]


def _model_with_state(device):
    model = gf.Sequential(layers.Linear(3, 4, rng=0), layers.Tanh(), layers.Linear(4, 2, rng=1)).to(device)
    first = optim.Adam(model, lr=0.01)
    for p in model.parameters():
        p.grad = device.send(np.full(p.shape, 0.5), p.dtype)
    first.step()
    return model, first


@pytest.mark.parametrize("cls,param,value,error,pattern", HYPER_PARAMS)
def test_every_optimizer_rejects_out_of_range_hyper_parameters(cls, param, value, error, pattern, device):
    model, first = _model_with_state(device)
    before = snapshot(model, first)
    with pytest.raises(error, match=pattern.format(name=cls.__name__, param=re.escape(param))):
        cls(model, **{param: value})
    assert_unchanged(before, snapshot(model, first))


@pytest.mark.parametrize("cls", list(OPTIMIZERS.values()), ids=list(OPTIMIZERS))
def test_every_optimizer_rejects_missing_or_foreign_parameters(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__}: got no parameters to optimize"):
        cls([])
    with pytest.raises(TypeError, match=rf"{cls.__name__}: expected Parameters \(or a Layer\), got ndarray"):
        cls([np.ones(3)])


def test_sgd_rejects_nesterov_without_momentum():
    with pytest.raises(ValueError, match="SGD: nesterov needs momentum > 0 and dampening = 0"):
        optim.SGD(layers.Linear(2, 2, rng=0), lr=0.1, nesterov=True)


@pytest.mark.parametrize("cls", list(OPTIMIZERS.values()), ids=list(OPTIMIZERS))
def test_setting_a_bad_lr_keeps_the_old_one(cls, device):
    model, _ = _model_with_state(device)
    optimizer = cls(model, lr=0.05)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match=rf"{cls.__name__}: lr must be in \(0, inf\)"):
            optimizer.lr = bad
        assert optimizer.lr == 0.05


@pytest.mark.parametrize("cls", list(OPTIMIZERS.values()), ids=list(OPTIMIZERS))
def test_a_schedule_going_negative_or_nan_stops_the_step_before_any_update(cls, device):
    model, _ = _model_with_state(device)
    schedule = lambda step: 0.01 if step < 2 else (-0.01 if step == 2 else math.nan)  # noqa: E731
    optimizer = cls(model, lr=schedule)
    for _ in range(2):
        optimizer.step()
    before = snapshot(model, optimizer)
    with pytest.raises(ValueError, match=rf"{cls.__name__}: the lr schedule gave -0.01 at step 2; it must be finite and >= 0"):
        optimizer.step()
    assert_unchanged(before, snapshot(model, optimizer))


@pytest.mark.parametrize("cls", list(OPTIMIZERS.values()), ids=list(OPTIMIZERS))
def test_a_bad_gradient_stops_the_step_before_any_parameter_is_updated(cls, device):
    model, _ = _model_with_state(device)
    optimizer = cls(model, lr=0.01)
    optimizer.step()
    last = model.parameters()[-1]  # the others come first: a step that updated as it went would move them
    rows = [
        ("wrong shape", device.send(np.ones((7,)), "float32"), r"has shape \(7,\), dtype float32"),
        ("wrong dtype", device.send(np.ones(last.shape), "float64"), r"has shape \(2,\), dtype float64 on .*expected"),
        ("another device", _other_device(device).send(np.ones(last.shape), "float32"),
         rf"has shape \(2,\), dtype float32 on {re.escape(_other_device(device).name)}; .* on {re.escape(device.name)}"),
        ("a python list", np.ones(last.shape).tolist(), r"has a list"),
    ]
    for description, grad, pattern in rows:
        for p in model.parameters():
            p.grad = device.send(np.full(p.shape, 0.5), p.dtype)
        last.grad = grad
        before = snapshot(model, optimizer)
        with raises_in_row(description, ValueError, rf"{cls.__name__}.step: the gradient of parameter 3 {pattern}"):
            optimizer.step()
        assert_unchanged(before, snapshot(model, optimizer))


@pytest.mark.parametrize("cls", list(OPTIMIZERS.values()), ids=list(OPTIMIZERS))
def test_loading_a_bad_optimizer_state_changes_nothing(cls, device):
    model, _ = _model_with_state(device)
    optimizer = cls(model, lr=0.01)
    optimizer.step()
    good = optimizer.state_dict()
    slot = f"0.{cls.slot_names[0]}"
    shape = model.parameters()[0].shape
    good_slots = dict(good["slots"], **{slot: np.ones(shape)})
    before = snapshot(model, optimizer)
    name = rf"{cls.__name__}\.load_state_dict: "
    rows = [
        ("wrong shape", {"step": 5, "slots": dict(good_slots, **{slot: np.ones((7, 7))})}, ValueError,
         rf"slot {re.escape(repr(slot))} has shape \(7, 7\)"),
        ("no such parameter", {"step": 5, "slots": dict(good_slots, **{"99.x": np.ones(3)})}, ValueError,
         r"slot '99.x' names no parameter"),
        ("misspelt slot", {"step": 5, "slots": dict(good_slots, **{"0.exp_avgg": np.ones(shape)})}, ValueError,
         rf"slot '0.exp_avgg': {cls.__name__} keeps no slot 'exp_avgg'"),
        ("step a string", {"step": "x", "slots": good_slots}, ValueError, r"step must be an int >= 0, got 'x'"),
        ("negative step", {"step": -5, "slots": good_slots}, ValueError, r"step must be an int >= 0, got -5"),
        ("step a bool", {"step": True, "slots": good_slots}, ValueError, r"step must be an int >= 0, got True"),
        ("param_steps too short", {"step": 5, "param_steps": [1], "slots": good_slots}, ValueError,
         r"param_steps must be a list of 4 ints"),
        ("param step above step", {"step": 1, "param_steps": [2, 1, 1, 1], "slots": good_slots}, ValueError,
         r"param_steps\[0\] must be an int in \[0, step=1\], got 2"),
        ("integer slot", {"step": 5, "slots": dict(good_slots, **{slot: np.ones(shape, dtype=np.int64)})}, TypeError,
         r"slot '0\.\w+' has dtype int64; expected floating-point"),
        ("a list as slot", {"step": 5, "slots": dict(good_slots, **{slot: [[1.0]]})}, TypeError, r"slot '0\.\w+' must be an array"),
        ("unknown key", {"step": 5, "slots": good_slots, "stepp": 1}, ValueError, r"unknown key\(s\) \['stepp'\]"),
        ("not a dict", [("step", 5)], TypeError, r"expected a dict"),
    ]
    for description, state, error, pattern in rows:
        with raises_in_row(description, error, name + pattern):
            optimizer.load_state_dict(state)
        assert_unchanged(before, snapshot(model, optimizer))
    optimizer.load_state_dict({"step": 5, "slots": good_slots})  # the good one loads
    assert optimizer.step_count == 5 and optimizer.param_steps[0] == 5


def test_clipping_functions_reject_non_positive_limits():
    model, _ = _model_with_state(gf.device("cpu"))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"clip_grad_norm: max_norm must be > 0, got 0"):
        optim.clip_grad_norm(model, 0)
    with pytest.raises(ValueError, match=r"clip_grad_value: clip_value must be > 0, got -1"):
        optim.clip_grad_value(model, -1)
    assert_unchanged(before, snapshot(model))


# --------------------------------------------------------------------------------------------
# Models: construction, moves and state loading
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make,error,pattern", [
    (lambda: layers.Linear(0, 3), ValueError, r"Linear: in_features must be a positive int, got 0"),
    (lambda: layers.Linear(3, -2), ValueError, r"Linear: out_features must be a positive int, got -2"),
    (lambda: layers.Linear(3.0, 2), ValueError, r"Linear: in_features must be a positive int, got 3.0"),
    (lambda: layers.Linear(3, 2, dtype="int64"), TypeError, r"Parameter: a trainable array must be floating-point, got dtype int64"),
    (lambda: layers.Linear(3, 2, dtype="float8"), ValueError, r"unknown dtype 'float8'"),
    (lambda: layers.Linear(3, 2, init="nope"), ValueError, r"Linear: init must be a callable or one of \[.*\], got 'nope'"),
    (lambda: layers.Linear(3, 2, device="gpu"), ValueError, r"unknown device 'gpu'"),
    (lambda: layers.LeakyReLU(-0.1), ValueError, r"LeakyReLU: negative_slope must be >= 0"),
    (lambda: layers.LeakyReLU(math.nan), ValueError, r"LeakyReLU: negative_slope must be >= 0"),
    (lambda: layers.ELU(0.0), ValueError, r"ELU: alpha must be > 0"),
    (lambda: layers.GELU("erf"), ValueError, r"GELU: approximate must be 'none' or 'tanh'"),
    (lambda: layers.Softmax(axis="last"), TypeError, r"Softmax: axis must be an int"),
    (lambda: layers.LogSoftmax(axis=1.0), TypeError, r"LogSoftmax: axis must be an int"),
    (lambda: layers.Reshape(-1, -1), ValueError, r"Reshape: the shape must be positive ints with at most one -1"),
    (lambda: layers.Reshape(0, 3), ValueError, r"Reshape: the shape must be positive ints"),
    (lambda: gf.Sequential(layers.ReLU(), "relu"), TypeError, r"Sequential: item 1 is a str, not a Layer"),
    (lambda: gf.Residual(np.ones(3)), TypeError, r"Residual: the body is a ndarray, not a Layer"),
    (lambda: gf.Concat(), ValueError, r"Concat: needs at least one branch"),
    (lambda: gf.Concat(layers.ReLU(), 3), TypeError, r"Concat: branch 1 is a int, not a Layer"),
    (lambda: gf.seed("42"), TypeError, r"seed: expected a non-negative int"),
    (lambda: gf.seed(-1), TypeError, r"seed: expected a non-negative int"),
])
def test_constructors_reject_bad_arguments(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def _landed_constructor_rows() -> list:
    """Construction rows for layers other work adds; each class's rows appear once it is exported."""
    table = {
        "Conv2d": [(lambda c: c(0, 2, 3), r"Conv2d: in_channels must be a positive int, got 0"),
                   (lambda c: c(2, 2, 0), r"Conv2d: kernel_size must be an int >= 1"),
                   (lambda c: c(2, 2, 3, stride=0), r"Conv2d: stride must be an int >= 1"),
                   (lambda c: c(2, 2, 3, padding=-1), r"Conv2d: padding must be a non-negative int"),
                   (lambda c: c(2, 2, 3, dilation=0), r"Conv2d: dilation must be an int >= 1"),
                   (lambda c: c(4, 4, 3, groups=3), r"Conv2d: groups=3 must divide both in_channels=4 and out_channels=4"),
                   (lambda c: c(2, 2, 3, stride=2, padding="same"), r"Conv2d: padding='same' needs stride 1"),
                   (lambda c: c(2, 2, (3, 3, 3)), r"Conv2d: kernel_size must be .* a tuple of 2 such ints")],
        "Conv1d": [(lambda c: c(2, 2, 3, padding="full"), r"Conv1d: padding must be an int, a tuple of ints, 'same' or 'valid'")],
        "ConvTranspose2d": [(lambda c: c(2, 2, 3, stride=1, output_padding=1),
                             r"ConvTranspose2d: output_padding must be smaller than stride or dilation")],
        "MaxPool2d": [(lambda c: c(0), r"MaxPool2d: kernel_size must be an int >= 1"),
                      (lambda c: c(2, stride=0), r"MaxPool2d: stride must be an int >= 1")],
        "AvgPool2d": [(lambda c: c(2, padding=2), r"AvgPool2d: padding must be at most half the kernel size")],
        "BatchNorm2d": [(lambda c: c(0), r"BatchNorm2d: num_features must be a positive int"),
                        (lambda c: c(3, eps=0), r"BatchNorm2d: eps must be > 0"),
                        (lambda c: c(3, momentum=1.5), r"BatchNorm2d: momentum must be in \[0, 1\]"),
                        (lambda c: c(3, momentum=-0.1), r"BatchNorm2d: momentum must be in \[0, 1\]")],
        "GroupNorm": [(lambda c: c(3, 4), r"GroupNorm: num_groups=3 must divide num_channels=4"),
                      (lambda c: c(2, 4, eps=-1), r"GroupNorm: eps must be > 0")],
        "Dropout": [(lambda c: c(-0.1), r"Dropout: p must be a number in \[0, 1\), got -0.1"),
                    (lambda c: c(1.0), r"Dropout: p must be a number in \[0, 1\), got 1.0"),
                    (lambda c: c(math.nan), r"Dropout: p must be a number in \[0, 1\), got nan"),
                    (lambda c: c(True), r"Dropout: p must be a number in \[0, 1\)")],
        "LayerNorm": [(lambda c: c(0), r"LayerNorm: normalized_shape must be a positive int"),
                      (lambda c: c(4, eps=0), r"LayerNorm: eps must be > 0")],
        "Embedding": [(lambda c: c(0, 3), r"Embedding: num_embeddings must be a positive int"),
                      (lambda c: c(5, 3, padding_idx=5), r"Embedding: padding_idx must be an int in \[0, 5\)")],
        "MultiHeadAttention": [(lambda c: c(6, 4), r"MultiHeadAttention: embed_dim \(6\) must be divisible by num_heads \(4\)"),
                               (lambda c: c(6, 2, dropout=1.0), r"MultiHeadAttention: dropout must be in \[0, 1\), got 1.0"),
                               (lambda c: c(6, 2, kdim=0), r"MultiHeadAttention: kdim must be a positive int, got 0"),
                               (lambda c: c(6, 2, vdim=2.5), r"MultiHeadAttention: vdim must be a positive int, got 2.5")],
        "LSTM": [(lambda c: c(3, 0), r"LSTM: hidden_size must be a positive int"),
                 (lambda c: c(3, 4, proj_size=4), r"LSTM: proj_size must be an int in \[0, hidden_size=4\), got 4"),
                 (lambda c: c(3, 4, proj_size=-1), r"LSTM: proj_size must be an int in \[0, hidden_size=4\), got -1"),
                 (lambda c: c(3, 4, forget_bias=math.nan), r"LSTM: forget_bias must be a finite number, got nan"),
                 (lambda c: c(3, 4, forget_bias=1.0, bias=False), r"LSTM: forget_bias=1.0 needs bias=True"),
                 (lambda c: c(3, 4, num_layers=2, dropout=1.0), r"LSTM: dropout must be a number in \[0, 1\), got 1.0"),
                 (lambda c: c(3, 4, num_layers=2, dropout=-0.1), r"LSTM: dropout must be a number in \[0, 1\), got -0.1")],
        "GRU": [(lambda c: c(3, 2, num_layers=0), r"GRU: num_layers must be a positive int"),
                (lambda c: c(3, 2, dropout=math.nan), r"GRU: dropout must be a number in \[0, 1\), got nan")],
        "RNN": [(lambda c: c(3, 2, nonlinearity="sigmoid"), r"RNN: nonlinearity must be 'tanh' or 'relu', got 'sigmoid'")],
        "RNNCell": [(lambda c: c(0, 2), r"RNNCell: input_size must be a positive int, got 0"),
                    (lambda c: c(3, 2, nonlinearity="gelu"), r"RNNCell: nonlinearity must be 'tanh' or 'relu'")],
        "LSTMCell": [(lambda c: c(3, 0), r"LSTMCell: hidden_size must be a positive int, got 0"),
                     (lambda c: c(3, 2, forget_bias=math.inf), r"LSTMCell: forget_bias must be a finite number, got inf")],
        "GRUCell": [(lambda c: c(3, True), r"GRUCell: hidden_size must be a positive int, got True")],
        "LearnedPositionalEncoding": [(lambda c: c(0, 4), r"LearnedPositionalEncoding: max_len must be a positive int")],
        "TransformerEncoderBlock": [(lambda c: c(6, 2, mlp_ratio=0), r"TransformerEncoderBlock: mlp_ratio \* embed_dim must be >= 1"),
                                    (lambda c: c(6, 2, activation="swish"),
                                     r"TransformerEncoderBlock: activation must be one of \('gelu', 'gelu_tanh', 'relu'\), got 'swish'")],
        "TransformerDecoderBlock": [(lambda c: c(6, 2, mlp_ratio=0.01), r"TransformerDecoderBlock: mlp_ratio \* embed_dim must be >= 1"),
                                    (lambda c: c(6, 2, activation="tanh"), r"TransformerDecoderBlock: activation must be one of"),
                                    (lambda c: c(6, 2, memory_dim=0), r"MultiHeadAttention: kdim must be a positive int, got 0")],
    }
    return [pytest.param(name, make, pattern, id=f"{name}-{i}")
            for name, rows in table.items() if hasattr(layers, name) for i, (make, pattern) in enumerate(rows)]


@pytest.mark.parametrize("name,make,pattern", _landed_constructor_rows())
def test_constructors_of_later_layers_reject_out_of_range_hyper_parameters(name, make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make(getattr(layers, name))


# -- learning-rate schedules ---------------------------------------------------------------------

SCHEDULE_VALID = {"lr": 0.1, "max_lr": 0.1, "after": 0.1, "total_steps": 10, "step_size": 2, "gamma": 0.5,
                  "warmup_steps": 3, "milestones": [3, 5], "schedules": [0.1, 0.05, 0.01], "first_cycle": 4,
                  "base_lr": 0.05, "step_size_up": 2}
_NUMBER = [(0.0, ValueError), (-0.1, ValueError), (math.nan, TypeError), ("0.1", TypeError)]
_COUNT = [(0, ValueError), (-1, ValueError), (2.5, TypeError)]
SCHEDULE_ROWS: dict[str, list[tuple[Any, type]]] = {
    "lr": _NUMBER, "max_lr": _NUMBER, "after": [(0.0, ValueError), (-1.0, ValueError)],
    "total_steps": _COUNT, "step_size": _COUNT, "warmup_steps": _COUNT,
    "gamma": [(0.0, ValueError), (1.5, ValueError)], "factor": [(0.0, ValueError), (1.0, ValueError)],
    "pct_start": [(0.0, ValueError), (1.0, ValueError)],
    "div_factor": [(0.0, ValueError), (-1.0, ValueError)], "final_div_factor": [(0.0, ValueError)],
    "min_lr": [(-0.1, ValueError)], "start_factor": [(-0.1, ValueError), (1.5, ValueError)],
    "patience": [(-1, ValueError), (1.5, TypeError)], "cooldown": [(-1, ValueError)],
    "min_delta": [(-1.0, ValueError)], "mode": [("sideways", ValueError)],
    "milestones": [([5, 3], ValueError), ([0, 3], ValueError), ([2.5, 3], TypeError)],
    "schedules": [("x", TypeError), ([0.1, -1.0, 0.1], ValueError)],
    "power": [(0.0, ValueError), (-1.0, ValueError)], "first_cycle": _COUNT, "cycle_mult": _COUNT,
    "base_lr": _NUMBER, "step_size_up": _COUNT, "step_size_down": [(0, ValueError), (2.5, TypeError)],
    "anneal_strategy": [("cosine", ValueError)], "three_phase": [(1, TypeError)],
    "threshold_mode": [("relative", ValueError)],
}
SCHEDULE_WITHOUT_ROWS = {"monitor": "any metric name; fit checks it against the logs"}


def exported_schedule_classes() -> dict[str, type]:
    base = getattr(optim, "Schedule", None)
    if base is None:
        return {}
    return {name: getattr(optim, name) for name in optim.__all__
            if isinstance(getattr(optim, name), type) and issubclass(getattr(optim, name), base) and getattr(optim, name) is not base}


def _schedule_parameters(cls: type) -> list[str]:
    return [n for n in inspect.signature(cls.__init__).parameters if n != "self"]


SCHEDULE_PARAMS = [
    pytest.param(cls, param, value, error, id=f"{name}-{param}={value!r}")
    for name, cls in exported_schedule_classes().items()
    for param in _schedule_parameters(cls) if param in SCHEDULE_ROWS
    for value, error in SCHEDULE_ROWS[param]
]


@pytest.mark.parametrize("cls,param,value,error", SCHEDULE_PARAMS)
def test_every_schedule_rejects_out_of_range_settings(cls, param, value, error):
    kwargs = {p: SCHEDULE_VALID[p] for p in _schedule_parameters(cls) if p in SCHEDULE_VALID}
    kwargs[param] = value
    with pytest.raises(error, match=rf"{cls.__name__}: {re.escape(param)}\b.*must"):
        cls(**kwargs)


def test_every_schedule_setting_has_rows():
    unknown = {f"{name}.{param}" for name, cls in exported_schedule_classes().items() for param in _schedule_parameters(cls)
               if param not in SCHEDULE_ROWS and param not in SCHEDULE_WITHOUT_ROWS}
    assert not unknown, f"schedule arguments without bad-value rows in SCHEDULE_ROWS: {sorted(unknown)}"


@pytest.mark.parametrize("spec,error,pattern", [
    ("gpu", ValueError, r"unknown device 'gpu'"),
    (3, TypeError, r"device must be a string"),
])
def test_moving_a_model_to_a_bad_device_or_dtype_changes_nothing(spec, error, pattern, device):
    model, first = _model_with_state(device)
    before = snapshot(model, first)
    with pytest.raises(error, match=pattern):
        model.to(spec)
    with pytest.raises(ValueError, match=r"Sequential.to: dtype must be one of .*got 'int64'"):
        model.to(dtype="int64")
    assert_unchanged(before, snapshot(model, first))


def test_loading_a_state_that_does_not_fit_changes_nothing(device):
    model, first = _model_with_state(device)
    state = {k: backend.to_numpy(v).copy() for k, v in model.state_dict().items()}
    before = snapshot(model, first)
    wrong = dict(state, **{"0.weight": np.zeros((5, 5))})
    with pytest.raises(ValueError, match=r"shape mismatches: 0.weight: model \(4, 3\) vs given \(5, 5\)"):
        model.load_state_dict(wrong)
    missing = {k: v for k, v in state.items() if k != "2.bias"}
    with pytest.raises(ValueError, match=r"missing keys: \['2.bias'\]"):
        model.load_state_dict(missing)
    with pytest.raises(ValueError, match=r"unexpected keys: \['9.weight'\]"):
        model.load_state_dict(dict(state, **{"9.weight": np.zeros(3)}))
    assert_unchanged(before, snapshot(model, first))


# --------------------------------------------------------------------------------------------
# Data, training loops and datasets
# --------------------------------------------------------------------------------------------

X4 = np.random.default_rng(0).normal(size=(6, 3))
Y4 = np.arange(6) % 2

DATA_ROWS = [
    ("empty dataset", lambda: data.BatchIterator(np.zeros((0, 3)), np.zeros(0)), ValueError, r"BatchIterator: the dataset is empty"),
    ("0-d x", lambda: data.BatchIterator(np.float64(1.0)), ValueError, r"BatchIterator: the dataset is empty \(x has shape \(\)\)"),
    ("y with fewer samples", lambda: data.BatchIterator(X4, Y4[:4]), ValueError, r"BatchIterator: x has 6 samples but y has 4"),
    ("0-d y", lambda: data.BatchIterator(X4, np.int64(1)), ValueError, r"x has 6 samples but y has none \(a 0-d array\)"),
    ("complex x", lambda: data.BatchIterator(X4.astype(np.complex64)), TypeError, r"BatchIterator: x must hold real numbers.*complex64"),
    ("string labels", lambda: data.BatchIterator(X4, np.array(["a"] * 6)), TypeError, r"BatchIterator: y must hold real numbers.*<U1"),
    ("object x", lambda: data.BatchIterator(np.array([[1, "a"]] * 6, dtype=object)), TypeError, r"x must hold real numbers.*object"),
    ("batch_size 0", lambda: data.BatchIterator(X4, batch_size=0), ValueError, r"batch_size must be a positive int, got 0"),
    ("batch_size -1", lambda: data.BatchIterator(X4, batch_size=-1), ValueError, r"batch_size must be a positive int, got -1"),
    ("batch_size 2.0", lambda: data.BatchIterator(X4, batch_size=2.0), ValueError, r"batch_size must be a positive int, got 2.0"),
    ("batch_size True", lambda: data.BatchIterator(X4, batch_size=True), ValueError, r"batch_size must be a positive int, got True"),
    ("unknown dtype", lambda: data.BatchIterator(X4, dtype="float8"), ValueError, r"unknown dtype 'float8'"),
    ("integer dtype", lambda: data.BatchIterator(X4, dtype="int64"), ValueError, r"BatchIterator: dtype must be a floating-point dtype"),
    ("unknown device", lambda: data.BatchIterator(X4, device="tpu"), ValueError, r"unknown device 'tpu'"),
    ("digits test_fraction 0", lambda: datasets.digits(test_fraction=0.0), ValueError, r"digits: test_fraction must be in \(0, 1\)"),
    ("digits test_fraction 1.5", lambda: datasets.digits(test_fraction=1.5), ValueError, r"digits: test_fraction must be in \(0, 1\)"),
    ("mnist1d no samples", lambda: datasets.mnist1d(num_samples=0), ValueError, r"mnist1d: num_samples must be an int >= 10"),
]


@pytest.mark.parametrize("description,make,error,pattern", DATA_ROWS, ids=[r[0] for r in DATA_ROWS])
def test_data_functions_reject_bad_input(description, make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


def _fit_rows():
    mse = losses.MSE()
    rows = [
        ("empty dataset", lambda m, o: train.fit(m, mse, o, (np.zeros((0, 3)), np.zeros((0, 2))), verbose=False),
         ValueError, r"BatchIterator: the dataset is empty"),
        ("negative epochs", lambda m, o: train.fit(m, mse, o, (X4, np.zeros((6, 2))), epochs=-1, verbose=False),
         ValueError, r"fit: epochs must be a non-negative int, got -1"),
        ("x alone instead of an (x, y) pair", lambda m, o: train.fit(m, mse, o, X4, verbose=False),
         TypeError, r"data must be a BatchIterator or an \(x, y\) pair"),
        ("wrong feature size", lambda m, o: train.fit(m, mse, o, (np.zeros((6, 5)), np.zeros((6, 2))), verbose=False),
         ValueError, r"Linear\(in_features=3.*expected input with 3 features on axis -1, got shape \(6, 5\)"),
        ("wrong target shape", lambda m, o: train.fit(m, mse, o, (X4, np.zeros((6, 3))), verbose=False),
         ValueError, r"MSE: expected target of shape \(6, 2\)"),
        ("NaN inputs", lambda m, o: train.fit(m, mse, o, (np.full((6, 3), np.nan), np.zeros((6, 2))), verbose=False),
         FloatingPointError, r"MSE: the model output contains NaN or Inf"),
        ("evaluate on an empty dataset", lambda m, o: train.evaluate(m, mse, (np.zeros((0, 3)), np.zeros((0, 2)))),
         ValueError, r"BatchIterator: the dataset is empty"),
        ("predict on an empty array", lambda m, o: train.predict(m, np.zeros((0, 3))), ValueError, r"the dataset is empty"),
        ("predict on complex inputs", lambda m, o: train.predict(m, X4.astype(complex)), TypeError, r"x must hold real numbers"),
    ]
    return rows


FIT_ROWS = _fit_rows()


@pytest.mark.parametrize("description,call,error,pattern", FIT_ROWS, ids=[r[0] for r in FIT_ROWS])
def test_training_loops_reject_bad_data_before_any_update(description, call, error, pattern):
    model, first = _model_with_state(gf.device("cpu"))
    optimizer = optim.SGD(model, lr=0.1, momentum=0.9)
    before = snapshot(model, optimizer)
    with pytest.raises(error, match=pattern):
        call(model, optimizer)
    after = snapshot(model, optimizer)
    if description == "NaN inputs":  # the step raised before the update: only gradients may be reset
        after = {k: v for k, v in after.items() if not k.startswith("gradient")}
        before = {k: v for k, v in before.items() if not k.startswith("gradient")}
    assert_unchanged(before, after)


# --------------------------------------------------------------------------------------------
# Checkpoints (gradflow.save / gradflow.load, from the training work)
# --------------------------------------------------------------------------------------------

needs_checkpoints = pytest.mark.skipif(not hasattr(gf, "save"), reason="gradflow.save/load not merged yet")


@needs_checkpoints
def test_loading_a_missing_checkpoint_is_a_file_not_found_error(tmp_path):
    model, first = _model_with_state(gf.device("cpu"))
    before = snapshot(model, first)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        gf.load(tmp_path / "missing.safetensors", model, first)
    assert_unchanged(before, snapshot(model, first))


@needs_checkpoints
def test_saving_below_a_file_fails_and_leaves_the_file_alone(tmp_path):
    model, first = _model_with_state(gf.device("cpu"))
    blocker = tmp_path / "not_a_directory"
    blocker.write_bytes(b"keep me")
    with pytest.raises(OSError):
        gf.save(blocker / "run.safetensors", model, first)
    assert blocker.read_bytes() == b"keep me" and [p.name for p in tmp_path.iterdir()] == ["not_a_directory"]


@needs_checkpoints
def test_a_failed_save_keeps_the_previous_checkpoint(tmp_path):
    from gradflow.checkpoint import CheckpointError

    model, first = _model_with_state(gf.device("cpu"))
    path = tmp_path / "run.safetensors"
    gf.save(path, model, first)
    good = path.read_bytes()
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        gf.save(path, model, first, extra={"not json": object()})
    assert path.read_bytes() == good and [p.name for p in tmp_path.iterdir()] == ["run.safetensors"]


@needs_checkpoints
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores permission bits, so nothing is read-only")
def test_saving_into_a_read_only_directory_is_a_permission_error(tmp_path):
    model, first = _model_with_state(gf.device("cpu"))
    tmp_path.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            gf.save(tmp_path / "run.safetensors", model, first)
    finally:
        tmp_path.chmod(0o700)
    assert list(tmp_path.iterdir()) == []


def _sysfs_is_read_only() -> bool:
    probe = "/sys/gradflow-write-probe"
    try:
        open(probe, "wb").close()
    except OSError:
        return os.path.isdir("/sys")
    os.unlink(probe)
    return False


@needs_checkpoints
@pytest.mark.skipif(not _sysfs_is_read_only(), reason="needs Linux's sysfs, where no one (not even root) creates files")
def test_saving_into_a_directory_no_one_may_write_is_a_permission_error():
    model, first = _model_with_state(gf.device("cpu"))
    with pytest.raises(PermissionError):
        gf.save("/sys/gradflow-run.safetensors", model, first)
    assert not os.path.exists("/sys/gradflow-run.safetensors")


@needs_checkpoints
def test_saving_over_a_directory_fails_and_keeps_it(tmp_path):
    model, first = _model_with_state(gf.device("cpu"))
    target = tmp_path / "run.safetensors"
    target.mkdir()
    with pytest.raises(IsADirectoryError, match="is a directory"):
        gf.save(target, model, first)
    assert target.is_dir() and [p.name for p in tmp_path.iterdir()] == ["run.safetensors"]


@needs_checkpoints
@pytest.mark.parametrize("damage", ["truncated", "not a checkpoint", "empty"])
def test_loading_a_damaged_checkpoint_changes_nothing(tmp_path, damage):
    from gradflow.checkpoint import CheckpointError

    model, first = _model_with_state(gf.device("cpu"))
    path = tmp_path / "run.safetensors"
    gf.save(path, model, first)
    data = path.read_bytes()
    path.write_bytes({"truncated": data[: len(data) // 2], "not a checkpoint": b"hello, world" * 10, "empty": b""}[damage])
    other, other_optimizer = _model_with_state(gf.device("cpu"))
    for p in other.parameters():
        p.value += 1.0
    before = snapshot(other, other_optimizer)
    with pytest.raises(CheckpointError):
        gf.load(path, other, other_optimizer)
    assert_unchanged(before, snapshot(other, other_optimizer))


@needs_checkpoints
@pytest.mark.parametrize("with_optimizer", [False, True])
def test_loading_a_checkpoint_of_another_architecture_changes_nothing(tmp_path, with_optimizer):
    from gradflow.checkpoint import CheckpointError

    model, first = _model_with_state(gf.device("cpu"))
    path = tmp_path / "run.safetensors"
    gf.save(path, model, first)
    other = gf.Sequential(layers.Linear(3, 5, rng=0), layers.Tanh(), layers.Linear(5, 2, rng=1))
    other_optimizer = optim.Adam(other, lr=0.01)
    other_optimizer.step()
    before = snapshot(other, other_optimizer)
    pattern = r"the optimizer state does not fit" if with_optimizer else r"shape mismatches: 0.weight: model \(5, 3\) vs given \(4, 3\)"
    with pytest.raises(CheckpointError, match=pattern):
        gf.load(path, other, other_optimizer if with_optimizer else None)
    assert_unchanged(before, snapshot(other, other_optimizer))


# --------------------------------------------------------------------------------------------
# Coverage: a class exported without cases or rows fails here
# --------------------------------------------------------------------------------------------

# Exported layer classes that cannot have a registry case, with the reason.
NO_REGISTRY_CASE: dict[str, str] = {}


def test_every_exported_layer_has_a_registry_case():
    missing = [name for name, cls in LAYER_CLASSES.items() if cls not in CASES_BY_CLASS and name not in NO_REGISTRY_CASE]
    assert not missing, f"exported layers without a case in tests/cases: {missing}"


def test_every_exported_layer_has_an_explicit_bad_input_row():
    with_rows = {type(case.make()) for case in LAYER_CASES if case.bad_inputs}
    with_rows |= {type(make()) for make, *_ in EXPLICIT_LAYER_ROWS}
    missing = [name for name, cls in LAYER_CLASSES.items() if cls not in with_rows and name not in NO_EXPLICIT_ROW]
    assert not missing, (
        f"exported layers without a bad-input row (add bad_inputs to their registry case, a row to "
        f"EXPLICIT_LAYER_ROWS, or a reason to NO_EXPLICIT_ROW): {missing}"
    )
    stale = [name for name in NO_EXPLICIT_ROW if name not in LAYER_CLASSES]
    assert not stale, f"NO_EXPLICIT_ROW names classes that are not exported: {stale}"


def test_every_exported_loss_has_a_registry_case():
    covered = {type(case.make()) for case in LOSS_CASES}
    missing = [name for name, cls in exported_loss_classes().items() if cls not in covered]
    assert not missing, f"exported losses without a case in tests/cases: {missing}"


def test_every_optimizer_hyper_parameter_has_rows():
    unknown = {f"{name}.{param}" for name, cls in OPTIMIZERS.items() for param in _constructor_parameters(cls)
               if param not in HYPER_ROWS and param not in HYPER_WITHOUT_ROWS}
    assert not unknown, f"optimizer arguments without bad-value rows in HYPER_ROWS: {sorted(unknown)}"


# --------------------------------------------------------------------------------------------
# Issue 13: containers, fit/evaluate data (every batch) and checkpoint metadata
# --------------------------------------------------------------------------------------------

CONTAINER_ROWS = [
    ("Sequential item not a layer", lambda: gf.Sequential(layers.Linear(2, 2), 3), TypeError, r"Sequential: item 1 is a int, not a Layer"),
    ("Sequential of a class", lambda: gf.Sequential(layers.Linear), TypeError, r"Sequential: item 0 is a type"),
    ("Sequential index out of range", lambda: gf.Sequential(layers.Linear(2, 2))[5], IndexError, r"Sequential: index 5 is out of range for 1 layers"),
    ("Sequential index not an int", lambda: gf.Sequential(layers.Linear(2, 2))["a"], TypeError, r"Sequential: index must be an int, got 'a'"),
    ("Residual body not a layer", lambda: gf.Residual(3), TypeError, r"Residual: the body is a int"),
    ("Residual body changes the shape", lambda: gf.Residual(layers.Linear(2, 3, rng=0))(np.ones((1, 2), np.float32)),
     ValueError, r"Residual: the body Linear.*changed the shape from \(1, 2\) to \(1, 3\)"),
    ("Concat without branches", lambda: gf.Concat(), ValueError, r"Concat: needs at least one branch"),
    ("Concat branch not a layer", lambda: gf.Concat(layers.Linear(2, 2), 5), TypeError, r"Concat: branch 1 is a int"),
    ("Concat axis not an int", lambda: gf.Concat(layers.Linear(2, 2), axis="x"), TypeError, r"Concat: axis must be an int, got 'x'"),
    ("Concat axis out of range", lambda: gf.Concat(layers.Linear(2, 2), layers.Linear(2, 2), axis=5)(np.ones((1, 2), np.float32)),
     ValueError, r"Concat\(axis=5\): the branches' outputs \(\(1, 2\), \(1, 2\)\) cannot be concatenated on axis 5"),
    ("Concat of different ranks", lambda: gf.Concat(layers.Linear(2, 2), gf.Sequential(layers.Linear(2, 2), layers.Reshape((1, 2))))(
        np.ones((1, 2), np.float32)), ValueError, r"cannot be concatenated on axis -1"),
]


@pytest.mark.parametrize("description,call,error,pattern", CONTAINER_ROWS, ids=[r[0] for r in CONTAINER_ROWS])
def test_containers_reject_bad_input_with_a_clear_error(description, call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def _labels_data(n=24):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 3)).astype(np.float32), rng.integers(0, 2, size=n)


def _bad_last(value):
    x, y = _labels_data()
    y = y.copy()
    y[-1] = value
    return x, y


FIT_DATA_ROWS = [
    # (description, data, validation, loss, error, pattern)
    ("label -1 in the last batch", _bad_last(-1), None, losses.SoftmaxCrossEntropy(), ValueError,
     r"fit: data: SoftmaxCrossEntropy: labels must lie in \[0, 1\].*got -1 at sample 23"),
    ("label = classes in the last batch", _bad_last(2), None, losses.SoftmaxCrossEntropy(), ValueError,
     r"fit: data: .*got 2 at sample 23"),
    ("NLL label out of range", _bad_last(5), None, losses.NLL(), ValueError, r"fit: data: NLL: labels must lie"),
    ("bad validation label", _labels_data(), _bad_last(-3), losses.SoftmaxCrossEntropy(), ValueError,
     r"fit: validation: SoftmaxCrossEntropy: labels .*got -3 at sample 23"),
    ("validation of the wrong width", _labels_data(), (np.ones((4, 5), np.float32), np.zeros(4, np.int64)),
     losses.SoftmaxCrossEntropy(), ValueError, r"Linear\(in_features=3.*expected input with 3 features"),
    ("NaN regression target in the last batch", (np.ones((24, 3), np.float32), np.r_[np.zeros(23), np.nan][:, None] * np.ones((1, 2))),
     None, losses.MSE(), ValueError, r"fit: data: MSE: the target contains NaN or Inf"),
    ("x and y of different lengths", (np.ones((24, 3), np.float32), np.zeros(23, np.int64)), None,
     losses.SoftmaxCrossEntropy(), ValueError, r"BatchIterator: x has 24 samples but y has 23"),
    ("no batch", BatchIterator(np.ones((5, 3), np.float32), np.zeros(5, np.int64), 8, drop_last=True), None,
     losses.SoftmaxCrossEntropy(), ValueError, r"fit: data yields no batch"),
    ("not data", iter([]), None, losses.SoftmaxCrossEntropy(), TypeError, r"data must be a BatchIterator or an \(x, y\) pair"),
]


@pytest.mark.parametrize("description,data,validation,loss,error,pattern", FIT_DATA_ROWS, ids=[r[0] for r in FIT_DATA_ROWS])
def test_fit_rejects_bad_data_in_any_batch_before_changing_state(description, data, validation, loss, error, pattern):
    width = 2
    model = gf.Sequential(layers.Linear(3, width, rng=0), layers.BatchNorm1d(width), layers.Dropout(0.3, seed=2))
    optimizer = optim.SGD(model, lr=0.1)
    before = snapshot(model, optimizer)
    with pytest.raises(error, match=pattern):
        train.fit(model, loss, optimizer, data, 2, batch_size=8, validation=validation, shuffle=False, verbose=0)
    assert_unchanged(before, snapshot(model, optimizer))


@pytest.mark.parametrize("loss", [None, losses.SoftmaxCrossEntropy()], ids=["metrics only", "with a loss"])
def test_evaluate_rejects_a_bad_label_in_any_batch(loss):
    model = gf.Sequential(layers.Linear(3, 2, rng=0), layers.BatchNorm1d(2))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"evaluate: data: .*labels must lie in \[0, 1\]"):
        train.evaluate(model, loss, _bad_last(-1), batch_size=8)
    assert_unchanged(before, snapshot(model))


CHECKPOINT_METADATA_ROWS = [
    ("epoch not an int", "epoch", "3", r"epoch must be a non-negative int"),
    ("optimizer step negative", "optimizer.step", -5, r"optimizer.step must be a non-negative int"),
    ("generator named by the file", "rng.init.bit_generator", "seed", r"bit_generator must be one of"),
    ("rng not an object", "rng", [], r"rng must be an object"),
]


@needs_checkpoints
@pytest.mark.parametrize("description,field,value,pattern", CHECKPOINT_METADATA_ROWS, ids=[r[0] for r in CHECKPOINT_METADATA_ROWS])
def test_checkpoint_metadata_is_checked_before_anything_changes(tmp_path, description, field, value, pattern):
    import hashlib
    import json

    import safetensors.numpy

    from gradflow import checkpoint as ck

    model, first = _model_with_state(gf.device("cpu"))
    path = gf.save(tmp_path / "run.safetensors", model, first, epoch=1)
    document = ck.read(path).metadata
    node = document
    *parents, last = field.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    text = json.dumps(document)
    arrays = safetensors.numpy.load_file(str(path))
    path.write_bytes(safetensors.numpy.save(arrays, {"gradflow": text, "gradflow_sha256": hashlib.sha256(text.encode()).hexdigest()}))
    other, other_optimizer = _model_with_state(gf.device("cpu"))
    for p in other.parameters():
        p.value += 1.0
    before = snapshot(other, other_optimizer)
    with pytest.raises(ck.CheckpointError, match=pattern):
        gf.load(path, other, other_optimizer)
    assert_unchanged(before, snapshot(other, other_optimizer))
