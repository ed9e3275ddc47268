"""Gradient checking against central finite differences, in float64, on any device.

The scalar checked is ``L = Σ y ⊙ w`` for a fixed random ``w`` of the output's shape, so the
analytic gradient is what ``backprop(w)`` returns (for the input) and adds (for parameters).
Small arrays are checked entry by entry (the full Jacobian-vector product); large ones along a
few random directions, ``(L(θ + h v) − L(θ − h v)) / 2h ≈ ⟨∇L, v⟩``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import backend
from ..backend import Array
from ..core import Layer, Parameter

# Tolerances of the gradient check per dtype (relative, absolute): float64 is the one that
# proves correctness; the others only catch gross errors and are used by parity checks.
TOLERANCES = {
    "float64": (1e-6, 1e-8),
    "float32": (2e-2, 1e-3),
    "float16": (1e-1, 1e-2),
    "bfloat16": (2e-1, 5e-2),
}


class GradcheckError(AssertionError):
    """An analytic gradient disagrees with finite differences; the message names the worst entry."""


@dataclass
class GradcheckResult:
    """What was checked and the worst relative error seen per array."""

    checked: dict[str, str] = field(default_factory=dict)  # name -> "full" or "directions"
    worst: dict[str, float] = field(default_factory=dict)  # name -> max error / tolerance

    @property
    def max_ratio(self) -> float:
        """The largest error relative to its tolerance over every checked array (<= 1 passes)."""
        return max(self.worst.values(), default=0.0)


def _score(analytic: np.ndarray, numeric: np.ndarray, rtol: float, atol: float) -> np.ndarray:
    """Error over tolerance per entry: ≤ 1 passes."""
    scale = np.maximum(np.abs(analytic), np.abs(numeric))
    return np.abs(analytic - numeric) / (atol + rtol * scale)


def gradcheck(
    layer: "Layer | Callable[[Array], tuple[Array, Callable]]",
    x: Array,
    *,
    train: bool = True,
    eps: float = 1e-6,
    rtol: float | None = None,
    atol: float | None = None,
    max_full: int = 256,
    directions: int = 6,
    seed: int = 0,
    check_input: bool = True,
    params: "list[tuple[str, Parameter]] | None" = None,
    before_forward: Callable[[], None] | None = None,
    inputs: "tuple[str, ...]" = (),
    **kwargs: Any,
) -> GradcheckResult:
    """Check ``layer``'s δ-backward (input δ and parameter gradients) against finite differences.

    layer: a :class:`Layer` (its parameters are checked) or any ``f(x) -> (y, backprop)`` with
    ``params`` listing the parameters it uses. x: a float64 array on the layer's device.
    before_forward: called before every forward (e.g. to reseed a dropout mask).
    inputs: names of keyword arguments in ``kwargs`` that are differentiable inputs too (the
    key/value of cross-attention, a decoder's memory): ``backprop`` then returns the tuple
    ``(dx, d_<inputs[0]>, ...)`` and each δ is checked like the input's.
    Raises :class:`GradcheckError` naming the worst entry; returns a :class:`GradcheckResult`.

    train: call the layer in training mode. eps: the finite-difference step. rtol, atol: the
    tolerances (default: by dtype, tight for float64). max_full: check every entry of arrays up to
    this size, else ``directions`` random directions (seeded by ``seed``). check_input: also check
    the input δ. params: ``(name, Parameter)`` pairs to check (default: the layer's). kwargs: extra
    call arguments for the layer.
    """
    device = backend.device_of(x)
    if isinstance(layer, Layer):
        params = list(layer.named_parameters()) if params is None else params
        call = lambda value, /, **extra: layer(value, train, **{**kwargs, **extra})  # noqa: E731
    else:
        if inputs:
            raise TypeError("gradcheck: inputs= needs a Layer (the keyword inputs are passed to its call)")
        params = params or []
        call = layer
    # Integer inputs (embedding ids) are not differentiable: the parameters set the dtype.
    float_dtype = x.dtype if backend.is_floating(x.dtype) else (params[0][1].dtype if params else None)
    if float_dtype is None:
        raise TypeError("gradcheck: x is not floating point and there are no parameters to check")
    if check_input and not backend.is_floating(x.dtype):
        raise TypeError(f"gradcheck: cannot check the δ of a {backend.dtype_name(x.dtype)} input; pass check_input=False")
    dtype = backend.dtype_name(float_dtype)
    default_rtol, default_atol = TOLERANCES.get(dtype, TOLERANCES["float32"])
    rtol = default_rtol if rtol is None else rtol
    atol = default_atol if atol is None else atol
    for name, p in params:
        if backend.dtype_name(p.dtype) != dtype:
            raise TypeError(f"gradcheck: parameter {name} is {backend.dtype_name(p.dtype)} but x is {dtype}; cast both")

    def forward(value: Array, /, **extra: Array) -> Array:
        if before_forward is not None:
            before_forward()
        return call(value, **extra)

    y, backprop = forward(x)
    rng = np.random.default_rng(seed)
    weights_host = rng.standard_normal(tuple(y.shape))
    weights = device.send(weights_host, float_dtype)
    saved_grads = [(p, p.grad) for _, p in params]
    for _, p in params:
        p.grad = None
    try:
        dx = backprop(weights)
        if inputs:
            if not isinstance(dx, tuple) or len(dx) != 1 + len(inputs):
                raise GradcheckError(f"gradcheck: backprop must return (dx, {', '.join('d_' + n for n in inputs)}), "
                                     f"got {type(dx).__name__}")
            dx, input_deltas = dx[0], dx[1:]
        analytic = {name: (None if p.grad is None else backend.to_numpy(p.grad).astype(np.float64)) for name, p in params}
    finally:
        for p, grad in saved_grads:
            p.grad = grad

    def loss_at(value: Array, /, **extra: Array) -> float:
        out = forward(value, **extra)[0]
        return float(np.sum(backend.to_numpy(out).astype(np.float64) * weights_host))

    result = GradcheckResult()
    host_x = backend.to_numpy(x).astype(np.float64)
    if check_input:
        if dx is None:
            raise GradcheckError("gradcheck: backprop returned None for the input δ")
        _check_array(
            "input", host_x, backend.to_numpy(dx).astype(np.float64),
            lambda host: loss_at(device.send(host, x.dtype)),
            eps, rtol, atol, max_full, directions, rng, result,
        )
    for name, delta in zip(inputs, input_deltas if inputs else ()):
        given = kwargs[name]
        if delta is None:
            raise GradcheckError(f"gradcheck: backprop returned None for the δ of {name}")
        _check_array(
            name, backend.to_numpy(given).astype(np.float64), backend.to_numpy(delta).astype(np.float64),
            lambda host, name=name, given=given: loss_at(x, **{name: device.send(host, given.dtype)}),
            eps, rtol, atol, max_full, directions, rng, result,
        )
    for name, p in params:
        original = p.value
        host_p = backend.to_numpy(original).astype(np.float64)
        grad = analytic[name] if analytic[name] is not None else np.zeros_like(host_p)

        def loss_with_param(host: np.ndarray, p: Parameter = p) -> float:
            p.value = device.send(host, original.dtype)
            return loss_at(x)

        try:
            _check_array(name, host_p, grad, loss_with_param, eps, rtol, atol, max_full, directions, rng, result)
        finally:
            p.value = original
    return result


def _check_array(
    name: str,
    host: np.ndarray,
    analytic: np.ndarray,
    loss: Callable[[np.ndarray], float],
    eps: float,
    rtol: float,
    atol: float,
    max_full: int,
    directions: int,
    rng: np.random.Generator,
    result: GradcheckResult,
) -> None:
    if analytic.shape != host.shape:
        raise GradcheckError(f"gradcheck: gradient of {name} has shape {analytic.shape}, expected {host.shape}")
    if host.size == 0:
        result.checked[name] = "empty"
        result.worst[name] = 0.0
        return
    if host.size <= max_full:
        # C order on purpose: zeros_like would copy an F-ordered host's layout, and reshape(-1)
        # of that is a copy, so the differences written below would never reach ``numeric``.
        numeric = np.zeros(host.shape, dtype=np.float64)
        flat_numeric = numeric.reshape(-1)
        for i in range(host.size):
            bumped = host.copy().reshape(-1)
            bumped[i] += eps
            plus = loss(bumped.reshape(host.shape))
            bumped[i] -= 2 * eps
            minus = loss(bumped.reshape(host.shape))
            flat_numeric[i] = (plus - minus) / (2 * eps)
        scores = _score(analytic, numeric, rtol, atol)
        worst = int(np.argmax(scores))
        result.checked[name] = "full"
        result.worst[name] = float(scores.reshape(-1)[worst])
        if scores.reshape(-1)[worst] > 1:
            index = np.unravel_index(worst, host.shape)
            raise GradcheckError(
                f"gradcheck: gradient of {name} at index {tuple(int(i) for i in index)} is "
                f"{analytic[index]:.10g} (analytic) vs {numeric[index]:.10g} (finite differences); "
                f"{int(np.sum(scores > 1))} of {host.size} entries outside rtol={rtol:g}, atol={atol:g}"
            )
        return
    worst_ratio = 0.0
    for k in range(directions):
        v = rng.standard_normal(host.shape)
        v /= np.linalg.norm(v)
        numeric = (loss(host + eps * v) - loss(host - eps * v)) / (2 * eps)
        projected = float(np.sum(analytic * v))
        score = float(_score(np.array(projected), np.array(numeric), rtol, atol))
        worst_ratio = max(worst_ratio, score)
        if score > 1:
            raise GradcheckError(
                f"gradcheck: directional derivative of {name} along random direction {k} is {projected:.10g} "
                f"(analytic) vs {numeric:.10g} (finite differences), outside rtol={rtol:g}, atol={atol:g}"
            )
    result.checked[name] = "directions"
    result.worst[name] = worst_ratio
