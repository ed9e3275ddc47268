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
    """

    def __init__(
        self,
        normalized_shape: "int | tuple[int, ...]",
        eps: float = 1e-5,
        elementwise_affine: bool = True,
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
        if elementwise_affine:
            self.weight: Parameter | None = Parameter(dev.send(_init.ones(shape), dtype))
            self.bias: Parameter | None = Parameter(dev.send(_init.zeros(shape), dtype))
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

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        self._check(x)
        xp = backend.namespace(x)
        axes = self._axes
        mean = xp.mean(x, axis=axes, keepdims=True)
        centred = x - mean
        variance = xp.mean(centred * centred, axis=axes, keepdims=True)
        inv_std = 1.0 / xp.sqrt(variance + self.eps)
        gamma = None if self.weight is None else self.weight.value
        fused = gamma is not None and backend.fused.available(x)  # one kernel each way (CuPy)
        if fused:
            y, x_hat = backend.fused.layer_norm_affine(x, mean, inv_std, gamma, self.bias.value)
        else:
            x_hat = centred * inv_std
            y = x_hat if gamma is None else x_hat * gamma + self.bias.value
        shape = tuple(x.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, shape)
            if gamma is None:
                g = dy
            else:
                leading = tuple(range(dy.ndim - len(axes)))
                self.weight.accumulate(xp.sum(dy * x_hat, axis=leading))
                self.bias.accumulate(xp.sum(dy, axis=leading))
                g = dy * gamma
            mean_g = xp.mean(g, axis=axes, keepdims=True)
            mean_gx = xp.mean(g * x_hat, axis=axes, keepdims=True)
            if fused:
                return backend.fused.layer_norm_backward(g, x_hat, inv_std, mean_g, mean_gx)
            return inv_std * (g - mean_g - x_hat * mean_gx)

        return y, backprop

    def extra_repr(self) -> str:
        shape = self.normalized_shape[0] if len(self.normalized_shape) == 1 else self.normalized_shape
        return f"{shape}, eps={self.eps:g}, elementwise_affine={self.weight is not None}"
