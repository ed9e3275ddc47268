"""Elementwise activations and the softmax family.

Each layer maps x of any shape to y of the same shape. The δ rule is ``dx = dy ⊙ f'(x)``
(softmax and log-softmax couple the entries along ``axis``; see their docstrings).
"""

from __future__ import annotations

import math

from .. import backend
from ..backend import Array
from ..core import Backprop, Layer, check_input


class _Elementwise(Layer):
    """Shared boundary check; subclasses implement ``_forward(x, xp) -> (y, backprop)``.

    With ``input_grad=False`` there is nothing to compute backward: backprop returns ``None``.
    """

    skips_input_grad = True
    forward_changes_state = False

    def forward(self, x: Array, train: bool, input_grad: bool = True) -> tuple[Array, Backprop]:
        check_input(self, x)
        y, backprop = self._forward(x, backend.namespace(x))
        return (y, backprop) if input_grad else (y, _no_input_delta)

    def predict(self, x: Array) -> Array:
        with backend.device_context(x):  # CuPy: the result goes to x's GPU
            return self.forward(x, False)[0]

    def _forward(self, x: Array, xp) -> tuple[Array, Backprop]:
        raise NotImplementedError


def _no_input_delta(dy: Array) -> None:
    return None


class ReLU(_Elementwise):
    """``y = max(x, 0)``; δ: ``dx = dy ⊙ [x > 0]``."""

    def _forward(self, x, xp):
        y = xp.maximum(x, 0.0)
        # one fused kernel where the backend has one (CuPy), else the mask product (not
        # xp.where: NumPy's where is ~10x slower on float32 here)
        return y, lambda dy: backend.fused.relu_backward(dy, y)


class LeakyReLU(_Elementwise):
    """``y = x`` for x > 0, else ``slope·x``; δ: ``dx = dy`` or ``slope·dy``."""

    def __init__(self, negative_slope: float = 0.01):
        if not negative_slope >= 0:
            raise ValueError(f"LeakyReLU: negative_slope must be >= 0, got {negative_slope}")
        self.negative_slope = float(negative_slope)

    def _forward(self, x, xp):
        positive = x > 0
        y = xp.where(positive, x, self.negative_slope * x)
        return y, lambda dy: xp.where(positive, dy, self.negative_slope * dy)

    def extra_repr(self) -> str:
        return f"negative_slope={self.negative_slope}"


class ELU(_Elementwise):
    """``y = x`` for x > 0, else ``α(eˣ − 1)``; δ: ``dy`` or ``dy ⊙ (y + α)``."""

    def __init__(self, alpha: float = 1.0):
        if not alpha > 0:
            raise ValueError(f"ELU: alpha must be > 0, got {alpha}")
        self.alpha = float(alpha)

    def _forward(self, x, xp):
        positive = x > 0
        # expm1 of min(x, 0) never overflows for large positive x
        y = xp.where(positive, x, self.alpha * xp.expm1(xp.minimum(x, 0.0)))
        return y, lambda dy: xp.where(positive, dy, dy * (y + self.alpha))

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


def _sigmoid(x: Array, xp) -> Array:
    """σ(x) computed from e^{-|x|}, finite for any x."""
    e = xp.exp(-xp.abs(x))
    return xp.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


class Sigmoid(_Elementwise):
    """``y = 1 / (1 + e⁻ˣ)``; δ: ``dx = dy ⊙ y(1 − y)``."""

    def _forward(self, x, xp):
        y = _sigmoid(x, xp)
        return y, lambda dy: dy * y * (1.0 - y)


class Tanh(_Elementwise):
    """``y = tanh(x)``; δ: ``dx = dy ⊙ (1 − y²)``."""

    def _forward(self, x, xp):
        y = xp.tanh(x)
        return y, lambda dy: dy * (1.0 - y * y)


class SiLU(_Elementwise):
    """``y = x σ(x)`` (swish); δ: ``dx = dy ⊙ (σ + x σ (1 − σ))``."""

    def _forward(self, x, xp):
        s = _sigmoid(x, xp)
        return x * s, lambda dy: dy * (s * (1.0 + x * (1.0 - s)))


_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


class GELU(_Elementwise):
    """Gaussian error linear unit.

    exact (default): ``y = x Φ(x) = ½ x (1 + erf(x/√2))``; δ: ``dy ⊙ (Φ(x) + x φ(x))``.
    tanh form (``approximate="tanh"``): ``y = ½ x (1 + tanh(u))`` with
    ``u = √(2/π)(x + 0.044715 x³)``; δ: ``dy ⊙ (½(1 + t) + ½ x (1 − t²) u')``.

    The exact form keeps only its derivative ``Φ(x) + x φ(x)`` for the δ, computed beside y;
    NumPy float32 takes Φ from the erfc approximation PyTorch's CPU erf uses (absolute error
    ≤ 1.5e-7, :func:`gradflow.backend.primitives.gelu_exact`).
    """

    def __init__(self, approximate: str = "none"):
        if approximate not in ("none", "tanh"):
            raise ValueError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate

    def _forward(self, x, xp):
        if backend.fused.available(x):  # one kernel each way (CuPy); recomputes Φ(x) backward
            y = backend.fused.bias_gelu(x, None, self.approximate)
            return y, lambda dy: backend.fused.gelu_backward(dy, x, self.approximate)
        if self.approximate == "tanh":
            t = xp.tanh(_SQRT_2_OVER_PI * (x + 0.044715 * x * x * x))
            y = 0.5 * x * (1.0 + t)

            def backprop(dy):
                du = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * x * x)
                return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)

            return y, backprop
        # keeps only the derivative Φ(x) + x φ(x), computed beside y (backend.primitives.gelu_exact)
        y, slope = backend.primitives.gelu_exact(x)
        return y, lambda dy: dy * slope

    def extra_repr(self) -> str:
        return f"approximate={self.approximate!r}"


class _AlongAxis(_Elementwise):
    """Softmax-like layers: normalise along ``axis``, which the input must have (non-empty)."""

    def __init__(self, axis: int = -1):
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"{type(self).__name__}: axis must be an int, got {axis!r}")
        self.axis = axis

    def _check_axis(self, x: Array) -> None:
        if not -x.ndim <= self.axis < x.ndim or x.shape[self.axis] == 0:
            raise ValueError(f"{self.describe()}: expected input with entries along axis {self.axis}, got shape {tuple(x.shape)}")


class Softmax(_AlongAxis):
    """``y_i = e^{x_i} / Σ_j e^{x_j}`` along ``axis``; δ: ``dx = y ⊙ (dy − Σ_j dy_j y_j)``."""

    def _forward(self, x, xp):
        self._check_axis(x)
        shifted = x - xp.max(x, axis=self.axis, keepdims=True)
        e = xp.exp(shifted)
        y = e / xp.sum(e, axis=self.axis, keepdims=True)
        return y, lambda dy: y * (dy - xp.sum(dy * y, axis=self.axis, keepdims=True))

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class LogSoftmax(_AlongAxis):
    """``y = x − logsumexp(x)`` along ``axis``; δ: ``dx = dy − softmax(x) Σ_j dy_j``."""

    def _forward(self, x, xp):
        self._check_axis(x)
        shifted = x - xp.max(x, axis=self.axis, keepdims=True)
        log_norm = xp.log(xp.sum(xp.exp(shifted), axis=self.axis, keepdims=True))
        y = shifted - log_norm
        return y, lambda dy: dy - xp.exp(y) * xp.sum(dy, axis=self.axis, keepdims=True)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"
