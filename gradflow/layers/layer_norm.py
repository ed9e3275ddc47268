"""Layer normalisation over the trailing axes."""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from .. import init as _init
from ..backend import Array
from ..core import Backprop, Layer, Parameter, check_delta, check_input


class LayerNorm(Layer):
    """Normalise each sample over its trailing ``normalized_shape`` axes (Ba et al. 2016).

    Shapes: x (N, *, *normalized_shape) -> y of the same shape; weight γ and bias β have
    ``normalized_shape`` (when ``elementwise_affine``). With K = prod(normalized_shape) entries
    per group:

    Forward: ``μ = mean(x)``, ``σ² = mean((x − μ)²)`` (biased), ``x̂ = (x − μ) / √(σ² + ε)``,
    ``y = γ ⊙ x̂ + β``.

    δ rule, with ``g = dy ⊙ γ`` and r = 1/√(σ² + ε):
    ``dx = r (g − mean(g) − x̂ ⊙ mean(g ⊙ x̂))`` (means over the group).
    Gradients: ``dγ = Σ dy ⊙ x̂``, ``dβ = Σ dy`` (sums over the leading axes).

    Arguments: normalized_shape (a positive int or a tuple of them: the trailing axes);
    eps (> 0); elementwise_affine (bool: learn γ, and β unless ``bias=False``); bias (bool,
    default True; False keeps γ and drops β: ``y = γ ⊙ x̂``, as PyTorch's ``bias=False``).
    """

    def __init__(
        self,
        normalized_shape: "int | tuple[int, ...]",
        eps: float = 1e-5,
        elementwise_affine: bool = True,
        bias: bool = True,
        *,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in shape):
            raise ValueError(f"LayerNorm: normalized_shape must be a positive int or tuple of them, got {normalized_shape!r}")
        if not eps > 0:
            raise ValueError(f"LayerNorm: eps must be > 0, got {eps!r}")
        self.normalized_shape = shape
        self.eps = float(eps)
        self._axes = tuple(range(-len(shape), 0))
        self._count = math.prod(shape)
        dev = backend.device(device)
        if not isinstance(bias, bool):
            raise TypeError(f"LayerNorm: bias must be a bool, got {bias!r}")
        if elementwise_affine:
            self.weight: Parameter | None = Parameter(dev.send(_init.ones(shape), dtype))
            self.bias: Parameter | None = Parameter(dev.send(_init.zeros(shape), dtype)) if bias else None
        else:
            self.weight = self.bias = None

    def _check(self, x: Any) -> None:
        like = self.weight.value if self.weight is not None else None
        check_input(self, x, min_ndim=len(self.normalized_shape) + 1, like=like)
        if tuple(x.shape[x.ndim - len(self.normalized_shape):]) != self.normalized_shape:
            raise ValueError(
                f"{self.describe()}: expected input whose trailing axes are {self.normalized_shape}, "
                f"got shape {tuple(x.shape)}"
            )

    def _group_dot(self, a: Array, b: Array, stat_shape: tuple[int, ...], xp: Any) -> Array:
        """``mean(a ⊙ b)`` over each group, shaped like the statistics: a dot product per group
        (no product array of x's size on NumPy; :func:`gradflow.backend.primitives.row_dot`)."""
        rows = tuple(stat_shape[:len(stat_shape) - len(self._axes)]) + (self._count,)
        dot = backend.primitives.row_dot(xp.reshape(a, rows), xp.reshape(b, rows))
        return xp.reshape(dot, stat_shape) / self._count

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        self._check(x)
        xp = backend.namespace(x)
        axes = self._axes
        mean = xp.mean(x, axis=axes, keepdims=True)
        centred = x - mean
        stat_shape = tuple(mean.shape)
        inv_std = 1.0 / xp.sqrt(self._group_dot(centred, centred, stat_shape, xp) + self.eps)
        gamma = None if self.weight is None else self.weight.value
        beta = None if self.bias is None else self.bias.value
        fused = beta is not None and backend.fused.available(x)  # one kernel each way (CuPy)
        if fused:
            y, x_hat = backend.fused.layer_norm_affine(x, mean, inv_std, gamma, beta)
        else:
            x_hat = centred
            x_hat *= inv_std  # in place: centred is this call's own temporary
            if gamma is None:
                y = x_hat
            else:
                y = x_hat * gamma
                if beta is not None:
                    y += beta
        shape = tuple(x.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, shape)
            if gamma is None:
                g = dy
            else:
                leading = tuple(range(dy.ndim - len(axes)))
                self.weight.accumulate(xp.sum(dy * x_hat, axis=leading))
                if beta is not None:
                    self.bias.accumulate(xp.sum(dy, axis=leading))
                g = dy * gamma
            mean_g = xp.mean(g, axis=axes, keepdims=True)
            mean_gx = self._group_dot(g, x_hat, stat_shape, xp)
            if fused:
                return backend.fused.layer_norm_backward(g, x_hat, inv_std, mean_g, mean_gx)
            # r (g − mean(g) − x̂ mean(g x̂)), in place from the first array that is this call's own
            if gamma is None:
                dx = g - mean_g  # g is the caller's dy
            else:
                dx = g  # g = dy γ, made here
                dx -= mean_g
            dx -= x_hat * mean_gx
            dx *= inv_std
            return dx

        return y, backprop

    def extra_repr(self) -> str:
        shape = self.normalized_shape[0] if len(self.normalized_shape) == 1 else self.normalized_shape
        text = f"{shape}, eps={self.eps:g}, elementwise_affine={self.weight is not None}"
        return text + (", bias=False" if self.weight is not None and self.bias is None else "")


class RMSNorm(Layer):
    """Root-mean-square normalisation over the trailing axes (Zhang & Sennrich 2019), as PyTorch's RMSNorm.

    Shapes: x (N, *, *normalized_shape) -> y of the same shape; weight γ of ``normalized_shape``
    (with ``elementwise_affine``); no bias, no centring. With K = prod(normalized_shape):

    Forward: ``r = 1/√(mean(x²) + ε)``, ``x̂ = x r``, ``y = γ ⊙ x̂``.
    δ rule, with ``g = dy ⊙ γ``: ``dx = r (g − x̂ ⊙ mean(g ⊙ x̂))`` (mean over the K entries).
    Gradient: ``dγ = Σ dy ⊙ x̂`` (sum over the leading axes).

    Arguments: normalized_shape (a positive int or a tuple of them); eps (a number > 0, or None
    for the machine epsilon of the input's dtype, PyTorch's default); elementwise_affine (bool).
    """

    def __init__(
        self,
        normalized_shape: "int | tuple[int, ...]",
        eps: "float | None" = None,
        elementwise_affine: bool = True,
        *,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
        if not shape or any(isinstance(n, bool) or not isinstance(n, int) or n <= 0 for n in shape):
            raise ValueError(f"RMSNorm: normalized_shape must be a positive int or tuple of them, got {normalized_shape!r}")
        if eps is not None and not (isinstance(eps, (int, float)) and not isinstance(eps, bool)
                                    and math.isfinite(eps) and eps > 0):
            raise ValueError(f"RMSNorm: eps must be a finite number > 0 or None, got {eps!r}")
        self.normalized_shape = shape
        self.eps = None if eps is None else float(eps)
        self._axes = tuple(range(-len(shape), 0))
        dev = backend.device(device)
        self.weight: Parameter | None = Parameter(dev.send(_init.ones(shape), dtype)) if elementwise_affine else None

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        like = self.weight.value if self.weight is not None else None
        check_input(self, x, min_ndim=len(self.normalized_shape) + 1, like=like)
        if tuple(x.shape[x.ndim - len(self.normalized_shape):]) != self.normalized_shape:
            raise ValueError(f"{self.describe()}: expected input whose trailing axes are {self.normalized_shape}, "
                             f"got shape {tuple(x.shape)}")
        xp = backend.namespace(x)
        axes = self._axes
        eps = self.eps if self.eps is not None else float(xp.finfo(x.dtype).eps)
        inv_rms = 1.0 / xp.sqrt(xp.mean(x * x, axis=axes, keepdims=True) + eps)
        x_hat = x * inv_rms
        gamma = None if self.weight is None else self.weight.value
        y = x_hat if gamma is None else x_hat * gamma
        shape = tuple(x.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, shape)
            if gamma is None:
                g = dy
            else:
                self.weight.accumulate(xp.sum(dy * x_hat, axis=tuple(range(dy.ndim - len(axes)))))
                g = dy * gamma
            return inv_rms * (g - x_hat * xp.mean(g * x_hat, axis=axes, keepdims=True))

        return y, backprop

    def extra_repr(self) -> str:
        shape = self.normalized_shape[0] if len(self.normalized_shape) == 1 else self.normalized_shape
        eps = "" if self.eps is None else f", eps={self.eps:g}"
        return f"{shape}{eps}, elementwise_affine={self.weight is not None}"
