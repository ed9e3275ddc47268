"""Group normalisation (Wu & He 2018): statistics per sample over groups of channels."""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from .. import init as _init
from ..backend import Array
from ..core import Backprop, Layer, Parameter, check_delta, check_input


class GroupNorm(Layer):
    """Split the C channels into G groups; normalise each (sample, group) over its channels and
    spatial positions; then scale and shift per channel. Same in train and eval (no running stats).

    Shapes: x (N, C, *S) -> y of the same shape; weight γ and bias β (C,) (with ``affine``).

    Forward: for the m = (C/G)·|S| entries of group (n, g): ``μ = mean(x)``,
    ``σ² = mean((x − μ)²)``, ``x̂ = (x − μ)/√(σ² + ε)``, ``y = γ_c x̂ + β_c``.
    δ rule: ``dx = (1/√(σ² + ε)) (g − mean(g) − x̂ · mean(g ⊙ x̂))`` with ``g = γ_c dy`` and means
    over the group's m entries. Gradients: ``dγ_c = Σ_{n, S} dy ⊙ x̂``, ``dβ_c = Σ_{n, S} dy``.
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True, *,
                 device: Any = "cpu", dtype: str = "float32"):
        for label, value in (("num_groups", num_groups), ("num_channels", num_channels)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"GroupNorm: {label} must be a positive int, got {value!r}")
        if num_channels % num_groups:
            raise ValueError(f"GroupNorm: num_groups={num_groups} must divide num_channels={num_channels}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"GroupNorm: eps must be > 0, got {eps!r}")
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, float(eps)
        dev = backend.device(device)
        self.weight = Parameter(dev.send(_init.ones((num_channels,)), dtype)) if affine else None
        self.bias = Parameter(dev.send(_init.zeros((num_channels,)), dtype)) if affine else None

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        check_input(self, x, like=self.weight.value if self.weight is not None else None)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"{self.describe()}: expected an input (N, {self.num_channels}, *spatial), "
                             f"got shape {tuple(x.shape)}")
        if any(n == 0 for n in x.shape[2:]):
            raise ValueError(f"{self.describe()}: expected a non-empty spatial size to normalise over, got an input "
                             f"of shape {tuple(x.shape)}")
        xp = backend.namespace(x)
        shape = tuple(x.shape)
        grouped = (shape[0], self.num_groups, math.prod(shape[1:]) // self.num_groups)
        per_channel = (1, self.num_channels) + (1,) * (x.ndim - 2)
        xg = xp.reshape(x, grouped)
        mean = xp.mean(xg, axis=2, keepdims=True)
        centered = xg - mean
        inv_std = 1.0 / xp.sqrt(xp.mean(centered * centered, axis=2, keepdims=True) + self.eps)
        x_hat = xp.reshape(centered * inv_std, shape)
        if self.weight is not None:
            gamma = xp.reshape(self.weight.value, per_channel)
            y = x_hat * gamma + xp.reshape(self.bias.value, per_channel)
        else:
            gamma, y = None, x_hat
        axes = (0, *range(2, x.ndim))

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, shape)
            if self.weight is not None:
                self.weight.accumulate(xp.sum(dy * x_hat, axis=axes))
                self.bias.accumulate(xp.sum(dy, axis=axes))
            g = xp.reshape(dy * gamma if gamma is not None else dy, grouped)
            xg_hat = xp.reshape(x_hat, grouped)
            dx = inv_std * (g - xp.mean(g, axis=2, keepdims=True)
                            - xg_hat * xp.mean(g * xg_hat, axis=2, keepdims=True))
            return xp.reshape(dx, shape)

        return y, backprop

    def extra_repr(self) -> str:
        parts = [str(self.num_groups), str(self.num_channels)]
        if self.eps != 1e-5:
            parts.append(f"eps={self.eps:g}")
        if self.weight is None:
            parts.append("affine=False")
        return ", ".join(parts)


class _InstanceNorm(GroupNorm):
    """Normalise each (sample, channel) over its spatial positions: a GroupNorm with one channel
    per group (as PyTorch's InstanceNorm, without running statistics: train and eval agree).

    Arguments: num_features C (positive int); eps (> 0); affine (bool, default False as in
    PyTorch: learn per-channel γ (``weight``) and β (``bias``), shape (C,)).

    Forward: for the |S| entries of (n, c): ``μ = mean(x)``, ``σ² = mean((x − μ)²)`` (biased),
    ``x̂ = (x − μ)/√(σ² + ε)``, ``y = γ_c x̂ + β_c``. δ rule: ``dx = (1/√(σ² + ε))(g − mean(g) −
    x̂ mean(g ⊙ x̂))`` with ``g = γ_c dy``; gradients ``dγ_c = Σ_{n,S} dy ⊙ x̂``, ``dβ_c = Σ_{n,S} dy``.
    """

    ndim = 4

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = False, *,
                 device: Any = "cpu", dtype: str = "float32"):
        name = type(self).__name__
        if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features <= 0:
            raise ValueError(f"{name}: num_features must be a positive int, got {num_features!r}")
        if not (isinstance(eps, (int, float)) and eps > 0 and math.isfinite(eps)):
            raise ValueError(f"{name}: eps must be a finite number > 0, got {eps!r}")
        super().__init__(num_features, num_features, eps, affine, device=device, dtype=dtype)

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        check_input(self, x, like=self.weight.value if self.weight is not None else None)
        if x.ndim != self.ndim or x.shape[1] != self.num_channels:
            layout = "(N, C, L)" if self.ndim == 3 else "(N, C, H, W)"
            raise ValueError(f"{self.describe()}: expected a {self.ndim}-D input {layout} with C = {self.num_channels}, "
                             f"got shape {tuple(x.shape)}")
        if any(n == 0 for n in x.shape[2:]):
            raise ValueError(f"{self.describe()}: expected a non-empty spatial size, got an input of shape {tuple(x.shape)}")
        return super().forward(x, train)

    def extra_repr(self) -> str:
        parts = [str(self.num_channels)]
        if self.eps != 1e-5:
            parts.append(f"eps={self.eps:g}")
        if self.weight is not None:
            parts.append("affine=True")
        return ", ".join(parts)


class InstanceNorm1d(_InstanceNorm):
    """Instance norm for sequences x (N, C, L): each (n, c) normalised over L. See :class:`_InstanceNorm`."""

    ndim = 3


class InstanceNorm2d(_InstanceNorm):
    """Instance norm for images x (N, C, H, W): each (n, c) normalised over H and W (style transfer,
    small-batch generators). See :class:`_InstanceNorm` for the rules and arguments."""

    ndim = 4
