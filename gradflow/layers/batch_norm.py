"""Batch normalisation over channels: BatchNorm1d ((N, C) or (N, C, L)) and BatchNorm2d ((N, C, H, W))."""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from .. import init as _init
from ..backend import Array
from ..core import Backprop, Buffer, Layer, Parameter, check_delta, check_input, record_buffer
from .spatial import LAYOUTS


class _BatchNorm(Layer):
    """Normalise each channel c over the batch (and spatial) axes, then scale and shift.

    Shapes: x (N, C, *S) -> y of the same shape; weight γ and bias β (C,) (with ``affine``);
    buffers running_mean and running_var (C,), starting at 0 and 1.

    Train (batch statistics over the m = N·|S| entries of each channel):
    ``μ = mean(x)``, ``σ² = mean((x − μ)²)`` (biased), ``x̂ = (x − μ)/√(σ² + ε)``, ``y = γ x̂ + β``;
    running statistics move by ``r ← (1 − momentum) r + momentum · stat`` using the *unbiased*
    variance ``σ² m/(m − 1)`` (as PyTorch).
    δ rule (train): ``dx = (1/√(σ² + ε)) (g − mean(g) − x̂ · mean(g ⊙ x̂))`` with ``g = γ dy``
    (means over the channel's m entries).
    Eval: ``y = γ (x − r_μ)/√(r_σ² + ε) + β``; δ rule ``dx = γ dy / √(r_σ² + ε)``.
    Gradients (both modes): ``dγ = Σ dy ⊙ x̂``, ``dβ = Σ dy`` over every axis but C.

    Arguments: num_features C (positive int); eps (> 0); momentum (a number in [0, 1], or None
    for PyTorch's cumulative average: the k-th training batch moves the statistics by
    ``r ← (1 − 1/k) r + (1/k) stat``, so they are the plain mean of every batch's; the count k
    is kept in the int64 buffer ``num_batches_tracked``); affine (bool: learn γ and β);
    track_running_stats (bool, default True; False keeps no running statistics at all and
    normalises with the batch statistics in eval mode too, as PyTorch).
    """

    ndims: tuple[int, ...] = (4,)

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: "float | None" = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, device: Any = "cpu", dtype: str = "float32"):
        name = type(self).__name__
        if not isinstance(num_features, int) or isinstance(num_features, bool) or num_features <= 0:
            raise ValueError(f"{name}: num_features must be a positive int, got {num_features!r}")
        if not (isinstance(eps, (int, float)) and eps > 0):
            raise ValueError(f"{name}: eps must be > 0, got {eps!r}")
        if momentum is not None and not (isinstance(momentum, (int, float)) and not isinstance(momentum, bool)
                                         and 0 <= momentum <= 1):
            raise ValueError(f"{name}: momentum must be in [0, 1] or None (cumulative average), got {momentum!r}")
        if not isinstance(track_running_stats, bool):
            raise TypeError(f"{name}: track_running_stats must be a bool, got {track_running_stats!r}")
        self.num_features, self.eps = num_features, float(eps)
        self.momentum = None if momentum is None else float(momentum)
        self.track_running_stats = track_running_stats
        dev = backend.device(device)
        self.weight = Parameter(dev.send(_init.ones((num_features,)), dtype)) if affine else None
        self.bias = Parameter(dev.send(_init.zeros((num_features,)), dtype)) if affine else None
        if track_running_stats:
            self.running_mean: Buffer | None = Buffer(dev.send(_init.zeros((num_features,)), dtype))
            self.running_var: Buffer | None = Buffer(dev.send(_init.ones((num_features,)), dtype))
        else:
            self.running_mean = self.running_var = None
        if track_running_stats and momentum is None:
            self.num_batches_tracked = Buffer(dev.send(backend.host_zeros((), "int64")))

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        like = (self.running_mean.value if self.running_mean is not None
                else self.weight.value if self.weight is not None else None)
        check_input(self, x, like=like)
        if x.ndim not in self.ndims:
            layouts = " or ".join(f"{n}-D {LAYOUTS.get(n - 2, '(N, C)')}" for n in self.ndims)
            raise ValueError(f"{self.describe()}: expected a {layouts} input, got shape {tuple(x.shape)}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{self.describe()}: expected {self.num_features} channels (axis 1), got {x.shape[1]} "
                             f"in an input of shape {tuple(x.shape)}")
        xp = backend.namespace(x)
        axes = (0, *range(2, x.ndim))
        count = math.prod(x.shape) // self.num_features
        batch_stats = train or not self.track_running_stats
        if batch_stats and count < 2:
            raise ValueError(f"{self.describe()}: training needs more than one value per channel to estimate the "
                             f"variance, got an input of shape {tuple(x.shape)}")
        per_channel = (1, self.num_features) + (1,) * (x.ndim - 2)
        if batch_stats:
            mean = xp.mean(x, axis=axes, keepdims=True)
            centered = x - mean
            var = xp.mean(centered * centered, axis=axes, keepdims=True)
            inv_std = 1.0 / xp.sqrt(var + self.eps)
            x_hat = centered * inv_std
            if train and self.track_running_stats:
                self._update_running(xp.reshape(mean, (-1,)), xp.reshape(var, (-1,)) * (count / (count - 1)))
        else:
            inv_std = xp.reshape(1.0 / xp.sqrt(self.running_var.value + self.eps), per_channel)
            x_hat = (x - xp.reshape(self.running_mean.value, per_channel)) * inv_std
        if self.weight is not None:
            gamma = xp.reshape(self.weight.value, per_channel)
            y = x_hat * gamma + xp.reshape(self.bias.value, per_channel)
        else:
            gamma, y = None, x_hat
        out_shape = tuple(y.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, out_shape)
            if self.weight is not None:
                self.weight.accumulate(xp.sum(dy * x_hat, axis=axes))
                self.bias.accumulate(xp.sum(dy, axis=axes))
            g = dy * gamma if gamma is not None else dy
            if not batch_stats:
                return g * inv_std
            return inv_std * (g - xp.mean(g, axis=axes, keepdims=True)
                              - x_hat * xp.mean(g * x_hat, axis=axes, keepdims=True))

        return y, backprop

    def _update_running(self, mean: Array, unbiased_var: Array) -> None:
        m = self.momentum
        record_buffer(self.running_mean)  # undone if a later layer of this call refuses
        record_buffer(self.running_var)
        if m is None:  # cumulative average: weight 1/k for the k-th batch, computed on the device (no sync)
            xp = backend.namespace(mean)
            self.num_batches_tracked.value = self.num_batches_tracked.value + 1
            m = 1.0 / xp.astype(self.num_batches_tracked.value, mean.dtype)
        self.running_mean.value = (1.0 - m) * self.running_mean.value + m * mean
        self.running_var.value = (1.0 - m) * self.running_var.value + m * unbiased_var

    def extra_repr(self) -> str:
        parts = [str(self.num_features)]
        if self.eps != 1e-5:
            parts.append(f"eps={self.eps:g}")
        if self.momentum is None:
            parts.append("momentum=None")
        elif self.momentum != 0.1:
            parts.append(f"momentum={self.momentum:g}")
        if self.weight is None:
            parts.append("affine=False")
        if not self.track_running_stats:
            parts.append("track_running_stats=False")
        return ", ".join(parts)


class BatchNorm1d(_BatchNorm):
    """Batch norm for (N, C) features or (N, C, L) sequences; statistics per channel C.

    See :class:`_BatchNorm` for the forward and δ rules.
    """

    ndims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch norm for images (N, C, H, W); statistics per channel over N, H and W.

    Train: ``y = γ (x − μ_B)/√(σ²_B + ε) + β`` with batch statistics μ_B, σ²_B (biased); running
    statistics updated with momentum (unbiased variance). Eval: the running statistics instead.
    δ rule (train): ``dx = (g − mean(g) − x̂ mean(g x̂)) / √(σ²_B + ε)``, ``g = γ dy``.
    Gradients: ``dγ = Σ dy x̂``, ``dβ = Σ dy``. See :class:`_BatchNorm` for details.

    Example::

        bn = BatchNorm2d(8)
        y, backprop = bn(device("cpu").send(np.random.default_rng(0).normal(size=(4, 8, 5, 5)), "float32"), train=True)
        bn.running_mean.value    # moved 10% of the way towards the batch means
    """

    ndims = (4,)
