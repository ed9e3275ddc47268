"""Property tests: every layer and loss on random shapes and hyper-parameters within their
documented limits. Each example runs the parity harness (gradflow.testing): forward against a
NumPy float64 reference, δ-backward against float64 finite differences (gradcheck; on the CPU
and real GPUs, see ``_run`` for the simulated devices), float32 parity between the CPU and the
strict device (and CUDA when present), non-contiguous inputs and inputs left unmodified.

Layers with a dedicated strategy below draw their own shapes and hyper-parameters; every other
exported layer (for example one that landed after this file was written) falls back to its
registry cases with a random batch size and randomly perturbed values. Examples are derived
deterministically (``derandomize=True``), so a run is reproducible and takes the same time.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy.special import erf

import gradflow as gf
from gradflow import layers as L
from gradflow import losses
from gradflow.testing import Report, available_devices, check_layer, check_loss
from tests.cases import LayerCase, layer_cases, loss_cases
from tests.cases.devices import DIRECTIONAL_MAX_FULL, entry_by_entry
from tests.layers.test_bad_input import LAYER_CLASSES, exported_loss_classes

PROPERTY_DEVICES = [dev for name, dev, _ in available_devices(("cpu", "strict", "cuda")) if dev is not None]
pytestmark = pytest.mark.skipif(len(PROPERTY_DEVICES) < 2, reason="parity needs the strict device (pip install array-api-strict)")


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass
class Example:
    """One drawn configuration: how to build the layer, its input and its NumPy reference."""

    make: Callable[[], Any]
    x: np.ndarray
    reference: Callable[..., np.ndarray] | None
    train: bool = False
    call_kwargs: dict[str, Any] | None = None
    before_forward: Callable[[Any], None] | None = None
    check_input_gradient: bool = True
    parity: bool = True
    noncontiguous: bool = True
    max_full: int = 128
    inputs: tuple[str, ...] = ()


def _run(example: Example) -> None:
    """Every device: forward vs the reference, inputs unmodified, non-contiguous input. The δs:
    finite differences entry by entry on the CPU (and real GPUs); on the simulated devices
    (tests/cases/devices.py), whose arithmetic is NumPy's, float32 parity of every δ and gradient
    with the CPU's, entry by entry, or random-direction finite differences where there is no
    parity (dropout draws other masks there). test_layer_parity runs finite differences on
    every device."""
    report = Report()
    full = [d for d in PROPERTY_DEVICES if entry_by_entry(d)]
    simulated = [d for d in PROPERTY_DEVICES if not entry_by_entry(d)]
    for devices, gradients, max_full in ((full, True, example.max_full),
                                         (simulated, not example.parity, DIRECTIONAL_MAX_FULL)):
        if devices:
            part = check_layer(example.make, example.x, reference=example.reference, devices=devices,
                               train=example.train, call_kwargs=example.call_kwargs,
                               before_forward=example.before_forward, check_gradients=gradients,
                               check_input_gradient=example.check_input_gradient, parity=example.parity,
                               noncontiguous=example.noncontiguous, max_full=max_full, inputs=example.inputs)
            report.checked.update(part.checked)
    for dev in full:
        assert "gradients" in report.checked[dev.name], report
    for dev in simulated:
        assert ("parity" if example.parity else "gradients") in report.checked[dev.name], report
    assert "parity" in report.checked[PROPERTY_DEVICES[1].name] or not example.parity, report


# --------------------------------------------------------------------------------------------
# Strategies: shapes, values and hyper-parameters
# --------------------------------------------------------------------------------------------

seeds = st.integers(0, 2**32 - 1)
shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)


def _values(seed: int, shape: tuple, scale: float = 1.0, away_from: tuple[float, ...] = ()) -> np.ndarray:
    """Normal values; entries closer than 0.05 to a point in ``away_from`` (a kink) are pushed off it."""
    x = np.random.default_rng(seed).normal(size=shape) * scale
    for kink in away_from:
        near = np.abs(x - kink) < 0.05
        x = np.where(near, kink + np.where(x >= kink, 0.05, -0.05), x)
    return x


def _sigmoid(x):
    return 0.5 * (1 + np.tanh(0.5 * x))


@st.composite
def linear_examples(draw):
    fan_in, fan_out = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    bias = draw(st.booleans())
    leading = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple))
    init = draw(st.sampled_from(["glorot_uniform", "he_normal", "lecun_uniform", "orthogonal"]))
    x = _values(draw(seeds), leading + (fan_in,), draw(st.floats(0.1, 3.0)))

    def reference(p, x):
        return x @ p["weight"].T + (p["bias"] if bias else 0.0)

    return Example(lambda: L.Linear(fan_in, fan_out, bias, init=init, rng=7), x, reference)


def _elementwise(make: Callable[[], Any], reference: Callable[[np.ndarray], np.ndarray], kinks: tuple = ()):
    @st.composite
    def examples(draw):
        x = _values(draw(seeds), draw(shapes), draw(st.floats(0.1, 4.0)), kinks)
        return Example(make, x, lambda p, x: reference(x))

    return examples()


@st.composite
def leaky_relu_examples(draw):
    slope = draw(st.floats(0.0, 3.0))
    x = _values(draw(seeds), draw(shapes), 2.0, (0.0,))
    return Example(lambda: L.LeakyReLU(slope), x, lambda p, x: np.where(x > 0, x, slope * x))


@st.composite
def elu_examples(draw):
    alpha = draw(st.floats(0.05, 3.0))
    x = _values(draw(seeds), draw(shapes), 2.0, (0.0,))
    return Example(lambda: L.ELU(alpha), x, lambda p, x: np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))))


@st.composite
def gelu_examples(draw):
    approximate = draw(st.sampled_from(["none", "tanh"]))
    x = _values(draw(seeds), draw(shapes), draw(st.floats(0.1, 4.0)))

    def reference(p, x):
        if approximate == "tanh":
            return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))
        return 0.5 * x * (1 + erf(x / math.sqrt(2)))

    return Example(lambda: L.GELU(approximate), x, reference)


def _softmax_like(cls: type, log: bool):
    @st.composite
    def examples(draw):
        shape = draw(shapes)
        axis = draw(st.integers(-len(shape), len(shape) - 1))
        x = _values(draw(seeds), shape, draw(st.floats(0.1, 5.0)))

        def reference(p, x):
            shifted = x - x.max(axis=axis, keepdims=True)
            log_p = shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))
            return log_p if log else np.exp(log_p)

        return Example(lambda: cls(axis=axis), x, reference)

    return examples()


@st.composite
def reshape_examples(draw):
    trailing = draw(st.lists(st.integers(1, 3), min_size=1, max_size=3).map(tuple))
    target = list(draw(st.permutations(trailing)))
    if draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    batch = draw(st.integers(1, 3))
    x = _values(draw(seeds), (batch, *trailing))
    return Example(lambda: L.Reshape(*target), x, lambda p, x: x.reshape(x.shape[0], *target), noncontiguous=False)


@st.composite
def flatten_examples(draw):
    shape = (draw(st.integers(1, 3)),) + draw(st.lists(st.integers(1, 3), min_size=0, max_size=3).map(tuple))
    return Example(L.Flatten, _values(draw(seeds), shape), lambda p, x: x.reshape(x.shape[0], -1))


@st.composite
def sequential_examples(draw):
    widths = draw(st.lists(st.integers(1, 5), min_size=2, max_size=4))
    activation = draw(st.sampled_from([("tanh", L.Tanh, np.tanh), ("sigmoid", L.Sigmoid, _sigmoid)]))
    x = _values(draw(seeds), (draw(st.integers(1, 4)), widths[0]))

    def make():
        parts = []
        for i, (a, b) in enumerate(zip(widths, widths[1:])):
            parts += [L.Linear(a, b, rng=i), activation[1]()]
        return gf.Sequential(*parts)

    def reference(p, x):
        for i in range(len(widths) - 1):
            x = activation[2](x @ p[f"{2 * i}.weight"].T + p[f"{2 * i}.bias"])
        return x

    return Example(make, x, reference)


@st.composite
def residual_examples(draw):
    width = draw(st.integers(1, 5))
    x = _values(draw(seeds), (draw(st.integers(1, 4)), width))
    return Example(lambda: gf.Residual(gf.Sequential(L.Linear(width, width, rng=3), L.Tanh())), x,
                   lambda p, x: x + np.tanh(x @ p["body.0.weight"].T + p["body.0.bias"]))


@st.composite
def concat_examples(draw):
    width, out = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    x = _values(draw(seeds), (draw(st.integers(1, 4)), width))
    return Example(lambda: gf.Concat(L.Linear(width, out, rng=2), L.Sigmoid()), x,
                   lambda p, x: np.concatenate([x @ p["branches.0.weight"].T + p["branches.0.bias"], _sigmoid(x)], -1))


# -- vision layers (when exported) -----------------------------------------------------------


def _windows(xp_pad: np.ndarray, kernel, stride, dilation, out):
    """(offset, view of x̃ at that kernel offset for every output position) for each offset."""
    import itertools

    for offset in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(i * d, i * d + s * (o - 1) + 1, s) for i, d, s, o in zip(offset, dilation, stride, out))
        yield offset, xp_pad[(slice(None), slice(None)) + index]


def _conv_reference(x, weight, bias, stride, padding, dilation, groups):
    dims = x.ndim - 2
    padded = np.pad(x, [(0, 0), (0, 0)] + [(p, p) for p in padding])
    kernel = weight.shape[2:]
    out = tuple((n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(padded.shape[2:], kernel, stride, dilation))
    c_out, c_in_g = weight.shape[0], weight.shape[1]
    y = np.zeros((x.shape[0], c_out) + out)
    o_g = c_out // groups
    for offset, view in _windows(padded, kernel, stride, dilation, out):
        for g in range(groups):
            w = weight[(slice(g * o_g, (g + 1) * o_g), slice(None)) + offset]  # (o_g, c_in_g)
            y[:, g * o_g:(g + 1) * o_g] += np.einsum("nc...,oc->no...", view[:, g * c_in_g:(g + 1) * c_in_g], w)
    if bias is not None:
        y += bias.reshape((1, -1) + (1,) * dims)
    return y


def _conv_examples(dims: int):
    cls = getattr(L, f"Conv{dims}d", None)

    @st.composite
    def examples(draw):
        groups = draw(st.integers(1, 2))
        c_in, c_out = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
        kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
        dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
        same = draw(st.booleans()) and all(k % 2 == 1 for k in kernel)  # odd kernels: symmetric 'same'
        stride = (1,) * dims if same else tuple(draw(st.integers(1, 2)) for _ in range(dims))
        padding = tuple(d * (k - 1) // 2 for k, d in zip(kernel, dilation)) if same else \
            tuple(draw(st.integers(0, 2)) for _ in range(dims))
        spatial = tuple(max(d * (k - 1) + 1 - 2 * p, 1) + draw(st.integers(0, 3))
                        for k, d, p in zip(kernel, dilation, padding))
        bias = draw(st.booleans())
        x = _values(draw(seeds), (draw(st.integers(1, 2)), c_in) + spatial)

        def make():
            return cls(c_in, c_out, kernel, stride=stride, padding="same" if same else padding, dilation=dilation,
                       groups=groups, bias=bias, rng=5)

        return Example(make, x, lambda p, x: _conv_reference(x, p["weight"], p.get("bias"), stride, padding, dilation, groups))

    return examples()


def _pool_examples(kind: str, dims: int):
    cls = getattr(L, f"{kind}Pool{dims}d", None)

    @st.composite
    def examples(draw):
        kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
        stride = tuple(draw(st.integers(1, 3)) for _ in range(dims))
        padding = tuple(draw(st.integers(0, k // 2)) for k in kernel)
        spatial = tuple(max(k - 2 * p, 1) + draw(st.integers(0, 3)) for k, p in zip(kernel, padding))
        include_pad = draw(st.booleans())
        shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2))) + spatial
        rng = np.random.default_rng(draw(seeds))
        # distinct values at least 0.01 apart: max-pooling has no ties for finite differences to trip on
        x = (rng.permutation(math.prod(shape)).reshape(shape) - math.prod(shape) / 2) * 0.05

        def reference(p, x):
            fill = -np.inf if kind == "Max" else 0.0
            padded = np.pad(x, [(0, 0), (0, 0)] + [(q, q) for q in padding], constant_values=fill)
            real = np.pad(np.ones(x.shape), [(0, 0), (0, 0)] + [(q, q) for q in padding])
            out = tuple((n - k) // s + 1 for n, k, s in zip(padded.shape[2:], kernel, stride))
            views = [v for _, v in _windows(padded, kernel, stride, (1,) * dims, out)]
            if kind == "Max":
                return np.max(views, axis=0)
            counts = sum(v for _, v in _windows(real, kernel, stride, (1,) * dims, out))
            return np.sum(views, axis=0) / (math.prod(kernel) if include_pad else counts)

        def make():
            if kind == "Max":
                return cls(kernel, stride=stride, padding=padding)
            return cls(kernel, stride=stride, padding=padding, count_include_pad=include_pad)

        return Example(make, x, reference)

    return examples()


def _normalised(x, axes, eps):
    mean = x.mean(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(((x - mean) ** 2).mean(axis=axes, keepdims=True) + eps)


def _batch_norm_examples(dims: int):
    cls = getattr(L, f"BatchNorm{dims}d", None)

    @st.composite
    def examples(draw):
        channels = draw(st.integers(1, 3))
        spatial = tuple(draw(st.integers(1, 3)) for _ in range(dims if dims == 2 else draw(st.integers(0, 1))))
        shape = (draw(st.integers(2, 4)), channels) + spatial
        eps, momentum = draw(st.sampled_from([1e-5, 1e-3, 0.1])), draw(st.floats(0.0, 1.0))
        affine = draw(st.booleans())
        x = _values(draw(seeds), shape, draw(st.floats(0.5, 3.0))) + draw(st.floats(-2, 2))
        axes = (0, *range(2, len(shape)))

        def reference(p, x):
            y = _normalised(x, axes, eps)
            if affine:
                per_channel = (1, -1) + (1,) * (x.ndim - 2)
                y = y * p["weight"].reshape(per_channel) + p["bias"].reshape(per_channel)
            return y

        def make():
            layer = cls(channels, eps=eps, momentum=momentum, affine=affine)
            if affine:  # a scale and shift that are not 1 and 0
                layer.weight.value = gf.device("cpu").send(np.linspace(0.5, 1.5, channels), "float32")
                layer.bias.value = gf.device("cpu").send(np.linspace(-0.3, 0.3, channels), "float32")
            return layer

        return Example(make, x, reference, train=True)

    return examples()


@st.composite
def group_norm_examples(draw):
    groups = draw(st.integers(1, 3))
    channels = groups * draw(st.integers(1, 2))
    shape = (draw(st.integers(1, 3)), channels) + tuple(draw(st.integers(1, 3)) for _ in range(draw(st.integers(0, 2))))
    eps = draw(st.sampled_from([1e-5, 1e-2]))
    x = _values(draw(seeds), shape, draw(st.floats(0.5, 3.0)))

    def reference(p, x):
        grouped = x.reshape(x.shape[0], groups, -1)
        y = _normalised(grouped, (2,), eps).reshape(x.shape)
        per_channel = (1, -1) + (1,) * (x.ndim - 2)
        return y * p["weight"].reshape(per_channel) + p["bias"].reshape(per_channel)

    def make():
        layer = L.GroupNorm(groups, channels, eps=eps)
        layer.weight.value = gf.device("cpu").send(np.linspace(0.5, 1.5, channels), "float32")
        layer.bias.value = gf.device("cpu").send(np.linspace(-0.3, 0.3, channels), "float32")
        return layer

    return Example(make, x, reference)


# -- sequence layers (when exported) ---------------------------------------------------------


@st.composite
def dropout_examples(draw):
    p = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9]))
    seed = draw(st.integers(0, 1000))
    train = draw(st.booleans())
    x = _values(draw(seeds), draw(shapes))

    def reference(params, x):
        return x if not train or p == 0.0 else None

    # Each forward redraws the mask: restart the stream so finite differences see the same one.
    return Example(lambda: L.Dropout(p, seed=seed), x, None if train and p else reference, train=train,
                   before_forward=lambda layer: layer.reset_rng(), parity=not train or PROPERTY_DEVICES[-1].kind != "cuda")


@st.composite
def layer_norm_examples(draw):
    normalized = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=2)))
    leading = tuple(draw(st.lists(st.integers(1, 3), min_size=1, max_size=2)))
    eps, affine = draw(st.sampled_from([1e-5, 1e-3, 0.1])), draw(st.booleans())
    x = _values(draw(seeds), leading + normalized, draw(st.floats(0.3, 3.0))) + draw(st.floats(-2, 2))
    axes = tuple(range(-len(normalized), 0))

    def make():
        layer = L.LayerNorm(normalized, eps=eps, elementwise_affine=affine)
        if affine:
            size = math.prod(normalized)
            layer.weight.value = gf.device("cpu").send(np.linspace(0.5, 1.5, size).reshape(normalized), "float32")
            layer.bias.value = gf.device("cpu").send(np.linspace(-0.3, 0.3, size).reshape(normalized), "float32")
        return layer

    def reference(p, x):
        y = _normalised(x, axes, eps)
        return y * p["weight"] + p["bias"] if affine else y

    return Example(make, x, reference)


@st.composite
def embedding_examples(draw):
    vocab, dim = draw(st.integers(2, 8)), draw(st.integers(1, 4))
    padding = draw(st.one_of(st.none(), st.integers(0, vocab - 1)))
    ids = np.random.default_rng(draw(seeds)).integers(0, vocab - (padding is not None), size=draw(shapes))
    if padding is not None:  # the padding row gets no gradient by definition: keep its id out of the input
        ids = np.where(ids >= padding, ids + 1, ids)
    return Example(lambda: L.Embedding(vocab, dim, padding_idx=padding, rng=3), ids, lambda p, x: p["weight"][x],
                   check_input_gradient=False)


def _recurrent_examples(kind: str):
    from tests.cases.sequence import recurrent_ref  # the registry's loop reference, written from the equations

    @st.composite
    def examples(draw):
        cls = getattr(L, kind.upper())
        options = dict(num_layers=draw(st.integers(1, 2)), bidirectional=draw(st.booleans()),
                       batch_first=draw(st.booleans()), return_sequences=draw(st.booleans()))
        features, hidden = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        n, t = draw(st.integers(1, 2)), draw(st.integers(1, 3))
        shape = (n, t, features) if options["batch_first"] else (t, n, features)
        x = _values(draw(seeds), shape)
        return Example(lambda: cls(features, hidden, rng=4, **options), x,
                       lambda p, x: recurrent_ref(kind, p, x, **options)[0], max_full=24)

    return examples()


@st.composite
def attention_examples(draw):
    from tests.cases.sequence import attention_ref

    heads = draw(st.integers(1, 3))
    embed = heads * draw(st.integers(1, 2))
    causal = draw(st.booleans())
    n, t = draw(st.integers(1, 2)), draw(st.integers(1, 4))
    x = _values(draw(seeds), (n, t, embed))
    return Example(lambda: L.MultiHeadAttention(embed, heads, causal=causal, rng=6), x,
                   lambda p, x: attention_ref(p, x, heads, causal), max_full=24)


# Exported class name -> strategy of Examples.
DEDICATED: dict[str, Any] = {
    "Linear": linear_examples(),
    "Identity": _elementwise(L.Identity, lambda x: x),
    "ReLU": _elementwise(L.ReLU, lambda x: np.maximum(x, 0), (0.0,)),
    "Sigmoid": _elementwise(L.Sigmoid, _sigmoid),
    "Tanh": _elementwise(L.Tanh, np.tanh),
    "SiLU": _elementwise(L.SiLU, lambda x: x * _sigmoid(x)),
    "LeakyReLU": leaky_relu_examples(),
    "ELU": elu_examples(),
    "GELU": gelu_examples(),
    "Softmax": _softmax_like(L.Softmax, log=False),
    "LogSoftmax": _softmax_like(L.LogSoftmax, log=True),
    "Reshape": reshape_examples(),
    "Flatten": flatten_examples(),
    "Sequential": sequential_examples(),
    "Residual": residual_examples(),
    "Concat": concat_examples(),
}
_LANDED_LATER = {
    "Conv1d": lambda: _conv_examples(1), "Conv2d": lambda: _conv_examples(2),
    "MaxPool1d": lambda: _pool_examples("Max", 1), "MaxPool2d": lambda: _pool_examples("Max", 2),
    "AvgPool1d": lambda: _pool_examples("Avg", 1), "AvgPool2d": lambda: _pool_examples("Avg", 2),
    "BatchNorm1d": lambda: _batch_norm_examples(1), "BatchNorm2d": lambda: _batch_norm_examples(2),
    "GroupNorm": group_norm_examples,
    "Dropout": dropout_examples, "LayerNorm": layer_norm_examples, "Embedding": embedding_examples,
    "RNN": lambda: _recurrent_examples("rnn"), "LSTM": lambda: _recurrent_examples("lstm"),
    "GRU": lambda: _recurrent_examples("gru"), "MultiHeadAttention": attention_examples,
}
DEDICATED.update({name: strategy() for name, strategy in _LANDED_LATER.items() if hasattr(L, name)})


@pytest.mark.parametrize("name", sorted(DEDICATED))
@_settings(12)
@given(data=st.data())
def test_layer_properties_with_drawn_shapes_and_hyper_parameters(name, data):
    _run(data.draw(DEDICATED[name], label=name))


# --------------------------------------------------------------------------------------------
# Fallback: registry cases with a random batch and perturbed values
# --------------------------------------------------------------------------------------------

CASES_BY_NAME: dict[str, list[LayerCase]] = {}
for _case in layer_cases():
    CASES_BY_NAME.setdefault(type(_case.make()).__name__, []).append(_case)
FALLBACK = sorted(name for name in LAYER_CLASSES if name not in DEDICATED and name in CASES_BY_NAME)


def _has_batch_arrays(case: LayerCase) -> bool:
    return any(isinstance(v, (np.ndarray, tuple, list)) for v in case.call_kwargs.values())


@st.composite
def registry_examples(draw, name: str):
    case = draw(st.sampled_from(CASES_BY_NAME[name]))
    rng = np.random.default_rng(draw(seeds))
    x = np.asarray(case.x)
    if x.ndim >= 1 and not _has_batch_arrays(case):  # keyword arrays (masks, states) share the batch
        # at least two samples: one is a degenerate batch for batch statistics
        x = x[rng.integers(0, x.shape[0], size=draw(st.integers(2, 5)))]
    if np.issubdtype(x.dtype, np.floating):
        x = x + rng.normal(size=x.shape) * 0.01 * max(float(np.std(x)), 1e-3)
    return Example(case.make, x, case.reference, case.train, case.call_kwargs, case.before_forward,
                   case.check_input_gradient, case.parity, case.noncontiguous, min(case.max_full, 24), case.inputs)


@pytest.mark.parametrize("name", FALLBACK)
@_settings(3)
@given(data=st.data())
def test_layer_properties_on_registry_cases_with_drawn_batches(name, data):
    _run(data.draw(registry_examples(name), label=name))


def test_every_exported_layer_has_a_property_strategy():
    missing = [name for name in LAYER_CLASSES if name not in DEDICATED and name not in CASES_BY_NAME]
    assert not missing, f"layers with neither a strategy here nor a registry case: {missing}"
    stale = [name for name in DEDICATED if name not in LAYER_CLASSES]
    assert not stale, f"strategies for classes that are not exported: {stale}"


# --------------------------------------------------------------------------------------------
# Losses
# --------------------------------------------------------------------------------------------


def _log_softmax(z):
    shifted = z - z.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


@st.composite
def class_targets(draw):
    batch = draw(st.lists(st.integers(1, 3), min_size=1, max_size=2).map(tuple))
    classes = draw(st.integers(2, 6))
    rng = np.random.default_rng(draw(seeds))
    logits = rng.normal(size=batch + (classes,)) * draw(st.floats(0.1, 6.0))
    if draw(st.booleans()):
        target = rng.integers(0, classes, size=batch)
        q = np.eye(classes)[target]
    else:
        target = q = rng.dirichlet(np.ones(classes), size=batch)
    return logits, target, q


@st.composite
def cross_entropy_examples(draw):
    logits, target, q = draw(class_targets())
    smoothing = draw(st.sampled_from([0.0, 0.1, 0.5, 0.9]))
    reduction = draw(st.sampled_from(["mean", "sum"]))
    q = (1 - smoothing) * q + smoothing / logits.shape[-1]

    def reference(z, t):
        per_item = -(q * _log_softmax(z)).sum(-1)
        return float(per_item.mean() if reduction == "mean" else per_item.sum())

    return (lambda: losses.SoftmaxCrossEntropy(label_smoothing=smoothing, reduction=reduction)), logits, target, reference


@st.composite
def nll_examples(draw):
    logits, target, q = draw(class_targets())
    log_p = _log_softmax(logits)
    return losses.NLL, log_p, target, lambda z, t: float(-(q * z).sum(-1).mean())


def _regression(cls: type, per_item: Callable, kwargs_strategy=st.just({}), kinks=lambda kw: ()):
    @st.composite
    def examples(draw):
        shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple))
        kwargs = draw(kwargs_strategy)
        reduction = draw(st.sampled_from(["mean", "sum"]))
        rng = np.random.default_rng(draw(seeds))
        target = rng.normal(size=shape)
        residual = _values(int(rng.integers(2**32)), shape, draw(st.floats(0.2, 4.0)), kinks(kwargs))

        def reference(y, t):
            values = per_item(y - t, **kwargs)
            return float(values.mean() if reduction == "mean" else values.sum())

        return (lambda: cls(reduction=reduction, **kwargs)), target + residual, target, reference

    return examples()


def _huber(r, delta=1.0):
    a = np.abs(r)
    return np.where(a <= delta, 0.5 * r * r, delta * (a - 0.5 * delta))


@st.composite
def bce_examples(draw):
    shape = draw(st.lists(st.integers(1, 4), min_size=1, max_size=2).map(tuple))
    rng = np.random.default_rng(draw(seeds))
    logits = rng.normal(size=shape) * draw(st.floats(0.1, 8.0))
    target = (rng.random(shape) > 0.5).astype(float) if draw(st.booleans()) else rng.random(shape)
    return losses.BCEWithLogits, logits, target, lambda z, t: float((np.logaddexp(0, z) - z * t).mean())


LOSS_STRATEGIES = {
    "SoftmaxCrossEntropy": cross_entropy_examples(),
    "NLL": nll_examples(),
    "MSE": _regression(losses.MSE, lambda r: r * r),
    "L1": _regression(losses.L1, np.abs, kinks=lambda kw: (0.0,)),
    "Huber": _regression(losses.Huber, _huber, st.fixed_dictionaries({"delta": st.floats(0.2, 3.0)}),
                         kinks=lambda kw: (0.0,)),
    "BCEWithLogits": bce_examples(),
}


@pytest.mark.parametrize("name", sorted(LOSS_STRATEGIES))
@_settings(10)
@given(data=st.data())
def test_loss_properties_with_drawn_shapes_and_settings(name, data):
    make, output, target, reference = data.draw(LOSS_STRATEGIES[name], label=name)
    report = check_loss(make, output, target, reference=reference, devices=PROPERTY_DEVICES)
    assert "parity" in report.checked[PROPERTY_DEVICES[1].name]


LOSS_FALLBACK = sorted(name for name in exported_loss_classes() if name not in LOSS_STRATEGIES)


@pytest.mark.parametrize("name", LOSS_FALLBACK)
def test_loss_properties_on_registry_cases(name):
    for case in [c for c in loss_cases() if type(c.make()).__name__ == name]:
        check_loss(case.make, case.output, case.target, reference=case.reference, devices=PROPERTY_DEVICES)


def test_every_exported_loss_has_a_property_strategy_or_registry_case():
    covered = set(LOSS_STRATEGIES) | {type(c.make()).__name__ for c in loss_cases()}
    missing = [name for name in exported_loss_classes() if name not in covered]
    assert not missing, f"losses with neither a strategy nor a registry case: {missing}"
