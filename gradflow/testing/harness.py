"""Check a layer or a loss on every device in one call.

    from gradflow.testing import check_layer
    report = check_layer(lambda: MyLayer(4, 3, rng=0), np.random.default_rng(0).normal(size=(5, 4)),
                         reference=my_numpy_forward)

For each device present (NumPy, the strict simulated device, torch CPU, CuPy) this checks:
forward against a NumPy float64 reference; the δ-backward against finite differences in float64;
that a non-contiguous input gives the same output; that neither the input nor the δ is modified;
and that float32 output, input δ and parameter gradients match the NumPy device's.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import backend
from ..backend import Device, DeviceError
from ..core import Layer
from .gradcheck import gradcheck

HostArray = np.ndarray
Reference = Callable[..., HostArray]

PARITY_TOLERANCE = {"float32": (1e-4, 1e-5), "float64": (1e-10, 1e-12)}
CANDIDATE_DEVICES = ("cpu", "strict", "torch", "cuda:0", "cuda:1")


def available_devices(names: Sequence[str] = CANDIDATE_DEVICES) -> list[tuple[str, Device | None, str]]:
    """``(name, device or None, why it is missing)`` for each candidate device.

    Args:
        names: the device names to try (default: cpu, strict, torch, cuda).
    """
    found = []
    for name in names:
        try:
            found.append((name, backend.device(name), ""))
        except (DeviceError, ImportError, ValueError) as error:
            found.append((name, None, str(error).splitlines()[0]))
    return found


@dataclass
class Report:
    """What a harness call checked, per device, and which devices it skipped and why."""

    checked: dict[str, list[str]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        lines = [f"{name}: {', '.join(checks)}" for name, checks in self.checked.items()]
        lines += [f"{name}: skipped ({why})" for name, why in self.skipped.items()]
        return "\n".join(lines)


def _resolve_devices(devices: Sequence[str | Device] | None, report: Report) -> list[Device]:
    if devices is not None:
        return [backend.device(d) for d in devices]
    usable = []
    for name, dev, why in available_devices():
        if dev is None:
            report.skipped[name] = why
        else:
            usable.append(dev)
    return usable


def assert_close(actual: Any, expected: Any, rtol: float, atol: float, what: str) -> None:
    """``|a − e| ≤ atol + rtol·|e|`` everywhere, with a message naming the worst entry.

    Args:
        actual: the array to check (any device).
        expected: the reference values.
        rtol: relative tolerance.
        atol: absolute tolerance.
        what: names the quantity in the failure message.
    """
    a = backend.to_numpy(actual).astype(np.float64)
    e = np.asarray(backend.to_numpy(expected), dtype=np.float64)
    if a.shape != e.shape:
        raise AssertionError(f"{what}: shape {a.shape} != expected {e.shape}")
    if a.size == 0:
        return
    excess = np.abs(a - e) - (atol + rtol * np.abs(e))
    nan_mismatch = np.isnan(a) != np.isnan(e)
    if np.any(excess > 0) or np.any(nan_mismatch):
        index = np.unravel_index(int(np.nanargmax(np.where(nan_mismatch, np.inf, excess))), a.shape)
        raise AssertionError(
            f"{what}: {int(np.sum(excess > 0))} of {a.size} entries differ beyond rtol={rtol:g}, atol={atol:g}; "
            f"worst at {tuple(int(i) for i in index)}: {a[index]!r} vs expected {e[index]!r}"
        )


def _send_value(dev: Device, value: Any, dtype: str) -> Any:
    """Host arrays go to ``dev`` (floating ones cast to ``dtype``), also inside tuples and lists."""
    if isinstance(value, np.ndarray):
        return dev.send(value, dtype if np.issubdtype(value.dtype, np.floating) else None)
    if isinstance(value, (tuple, list)):
        return type(value)(_send_value(dev, item, dtype) for item in value)
    return value


def _send_kwargs(dev: Device, kwargs: dict[str, Any], dtype: str) -> dict[str, Any]:
    return {key: _send_value(dev, value, dtype) for key, value in kwargs.items()}


def _non_contiguous(dev: Device, host: HostArray, dtype: str) -> Any:
    """The same values as ``host`` but as a strided view (every other entry of a wider array)."""
    if host.ndim == 0:
        return _send_value(dev, host, dtype)
    wide = np.zeros(host.shape[:-1] + (2 * host.shape[-1],), dtype=host.dtype)
    wide[..., ::2] = host
    return _send_value(dev, wide, dtype)[..., ::2]


def check_layer(
    make_layer: Callable[[], Layer],
    x: HostArray,
    *,
    reference: Reference | None = None,
    devices: Sequence[str | Device] | None = None,
    train: bool = False,
    call_kwargs: dict[str, Any] | None = None,
    before_forward: Callable[[Layer], None] | None = None,
    check_gradients: bool = True,
    check_input_gradient: bool = True,
    parity: bool = True,
    noncontiguous: bool = True,
    max_full: int = 256,
    reference_tolerance: tuple[float, float] = (1e-9, 1e-12),
    inputs: Sequence[str] = (),
) -> Report:
    """Run the layer checks on every device present (or on ``devices``); raise on the first failure.

    make_layer: builds the layer, identically on every call (seed its initialisation).
    x: the sample input as a host float64 array (or an integer array, e.g. embedding ids, which
    keeps its dtype; pass ``check_input_gradient=False`` then). reference: ``f(params, x, **call_kwargs)`` in
    NumPy float64, with ``params`` the layer's ``state_dict`` as NumPy arrays.
    call_kwargs: extra arguments for the call (host arrays are sent to each device).
    before_forward: called with the layer before each forward (e.g. reseed a dropout RNG).

    train: run the layer in training mode. check_gradients: compare the δ-backward with finite
    differences. check_input_gradient: include the input δ. parity: compare float32 on each device
    with NumPy's. noncontiguous: also feed a non-contiguous view of ``x``. max_full: arrays up to
    this size are checked entry by entry, larger ones along random directions. reference_tolerance:
    ``(rtol, atol)`` for the comparison with ``reference``.
    inputs: names of ``call_kwargs`` that are differentiable inputs too (cross-attention's key
    and value, a decoder's memory): the backprop returns ``(dx, d_<name>, ...)`` in this order,
    and each of those δs gets the shape, finite-difference and float32 parity checks of ``dx``.
    Returns a :class:`Report` of what ran on each device and which devices were skipped.
    """
    inputs = tuple(inputs)
    report = Report()
    kwargs = call_kwargs or {}
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float64)
    baseline: dict[str, Any] | None = None  # the NumPy device's float32 run, computed when first needed
    for dev in _resolve_devices(devices, report):
        checks = report.checked.setdefault(dev.name, [])
        layer = make_layer().to(dev, "float64")
        hook = (lambda: before_forward(layer)) if before_forward else None
        sent = _send_kwargs(dev, kwargs, "float64")
        x64 = _send_value(dev, x, "float64")
        if hook:
            hook()
        y64, backprop = layer(x64, train, **sent)
        if reference is not None:
            params = {k: backend.to_numpy(v) for k, v in layer.state_dict().items()}
            expected = reference(params, x.copy(), **kwargs)
            assert_close(y64, expected, *reference_tolerance, f"{dev.name}: {layer.describe()} forward vs NumPy reference")
            checks.append("forward")
        dy_host = np.random.default_rng(1234).standard_normal(tuple(y64.shape))
        dy = dev.send(dy_host, "float64")
        layer.zero_grad()
        dx = backprop(dy)
        deltas = _split_deltas(layer, dx, inputs, dev)
        dx = deltas.pop("input")
        for name, delta in deltas.items():
            expected_shape = tuple(np.shape(kwargs[name]))
            if tuple(delta.shape) != expected_shape:
                raise AssertionError(f"{dev.name}: {layer.describe()} returned a δ of shape {tuple(delta.shape)} for {name} {expected_shape}")
            assert_close(sent[name], kwargs[name], 0, 0, f"{dev.name}: {layer.describe()} modified its input {name}")
        assert_close(x64, x, 0, 0, f"{dev.name}: {layer.describe()} modified its input")
        assert_close(dy, dy_host, 0, 0, f"{dev.name}: {layer.describe()} backprop modified the δ it was given")
        if check_input_gradient and dx is not None and tuple(dx.shape) != tuple(x.shape):
            raise AssertionError(f"{dev.name}: {layer.describe()} returned a δ of shape {tuple(dx.shape)} for input {x.shape}")
        checks.append("inputs unmodified")
        if check_gradients:
            try:
                gradcheck(layer, x64, train=train, max_full=max_full, check_input=check_input_gradient,
                          before_forward=hook, inputs=inputs, **sent)
            except AssertionError as error:
                raise AssertionError(f"{dev.name}: {layer.describe()}: {error}") from None
            checks.append("gradients")
        if noncontiguous:
            if hook:
                hook()
            y_strided = layer(_non_contiguous(dev, x, "float64"), train, **sent)[0]
            assert_close(y_strided, y64, 1e-12, 1e-12, f"{dev.name}: {layer.describe()} non-contiguous input")
            checks.append("non-contiguous")
        if parity:
            outcome = _float32_run(make_layer, dev, x, dy_host, train, kwargs, before_forward, inputs)
            if baseline is None:
                cpu = backend.device("cpu")
                baseline = outcome if dev == cpu else _float32_run(make_layer, cpu, x, dy_host, train, kwargs, before_forward, inputs)
            if dev.name != "cpu":
                rtol, atol = PARITY_TOLERANCE["float32"]
                for key, value in outcome.items():
                    assert_close(value, baseline[key], rtol, atol * max(1.0, float(np.max(np.abs(baseline[key]), initial=0))),
                                 f"{dev.name}: {key} differs from the NumPy device's (float32)")
                checks.append("parity")
    return report


def _split_deltas(layer: Layer, dx: Any, inputs: tuple[str, ...], dev: Device) -> dict[str, Any]:
    """``{"input": dx, name: d_name, ...}`` from what a backprop returned."""
    if not inputs:
        return {"input": dx}
    if not isinstance(dx, tuple) or len(dx) != 1 + len(inputs):
        raise AssertionError(f"{dev.name}: {layer.describe()} backprop must return (dx, "
                             f"{', '.join('d_' + n for n in inputs)}), got {type(dx).__name__}")
    return dict(zip(("input", *inputs), dx))


def _float32_run(make_layer, dev, x, dy_host, train, kwargs, before_forward, inputs=()) -> dict[str, np.ndarray]:
    layer = make_layer().to(dev, "float32")
    if before_forward:
        before_forward(layer)
    y, backprop = layer(_send_value(dev, x, "float32"), train, **_send_kwargs(dev, kwargs, "float32"))
    deltas = _split_deltas(layer, backprop(dev.send(dy_host, "float32")), tuple(inputs), dev)
    dx = deltas.pop("input")
    outcome = {"output": backend.to_numpy(y).astype(np.float64)}
    for name, delta in deltas.items():
        outcome[f"δ of {name}"] = backend.to_numpy(delta).astype(np.float64)
    if dx is not None:
        outcome["input δ"] = backend.to_numpy(dx).astype(np.float64)
    for name, p in layer.named_parameters():
        if p.grad is not None:
            outcome[f"gradient of {name}"] = backend.to_numpy(p.grad).astype(np.float64)
    return outcome


def check_loss(
    make_loss: Callable[[], Any],
    output: HostArray,
    target: HostArray,
    *,
    reference: Callable[[HostArray, HostArray], float] | None = None,
    devices: Sequence[str | Device] | None = None,
    target_is_float: bool | None = None,
) -> Report:
    """Check a loss's value against a NumPy float64 reference and its δ against finite differences,
    on every device, plus float32 parity and that neither argument is modified.

    make_loss: builds the loss. output: the sample output (host float64). target: the sample target
    (host; integer labels or float targets). reference: ``f(output, target) -> float`` in NumPy
    float64. devices: devices to check (default: every device present). target_is_float: send
    the target as floats (default: when ``target`` is a float array).
    """
    report = Report()
    output = np.asarray(output, dtype=np.float64)
    floating_target = np.issubdtype(np.asarray(target).dtype, np.floating) if target_is_float is None else target_is_float
    baseline = None
    for dev in _resolve_devices(devices, report):
        checks = report.checked.setdefault(dev.name, [])
        loss = make_loss()
        z = dev.send(output, "float64")
        t = dev.send(target, "float64" if floating_target else None)
        value, delta = loss(z, t)
        assert_close(z, output, 0, 0, f"{dev.name}: {loss!r} modified the output")
        assert_close(t, target, 0, 0, f"{dev.name}: {loss!r} modified the target")
        if reference is not None:
            assert_close(value, np.asarray(reference(output.copy(), np.array(target, copy=True)), np.float64), 1e-9, 1e-12,
                         f"{dev.name}: {loss!r} value vs NumPy reference")
            checks.append("value")
        numeric = np.zeros_like(output)
        eps = 1e-6
        flat = numeric.reshape(-1)
        for i in range(output.size):
            bumped = output.copy().reshape(-1)
            bumped[i] += eps
            # the δ is the gradient of the value's sum (of the value itself unless reduction="none")
            plus = float(np.sum(backend.to_numpy(loss(dev.send(bumped.reshape(output.shape), "float64"), t)[0])))
            bumped[i] -= 2 * eps
            minus = float(np.sum(backend.to_numpy(loss(dev.send(bumped.reshape(output.shape), "float64"), t)[0])))
            flat[i] = (plus - minus) / (2 * eps)
        assert_close(delta, numeric, 1e-6, 1e-8, f"{dev.name}: {loss!r} δ vs finite differences")
        checks.append("gradients")
        outcome = _float32_loss(make_loss, dev, output, target, floating_target)
        if baseline is None:
            cpu = backend.device("cpu")
            baseline = outcome if dev == cpu else _float32_loss(make_loss, cpu, output, target, floating_target)
        if dev.name != "cpu":
            for key in outcome:
                assert_close(outcome[key], baseline[key], 1e-4, 1e-6, f"{dev.name}: loss {key} parity (float32)")
            checks.append("parity")
    return report


def _float32_loss(make_loss, dev, output, target, floating_target) -> dict[str, np.ndarray]:
    value, delta = make_loss()(dev.send(output, "float32"), dev.send(target, "float32" if floating_target else None))
    return {"value": backend.to_numpy(value).astype(np.float64), "δ": backend.to_numpy(delta).astype(np.float64)}
