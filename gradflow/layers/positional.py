"""Positional encodings for sequences: learned or sinusoidal, added to the input."""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from .. import init as _init
from ..backend import Array
from ..core import Backprop, Layer, Parameter, check_delta, check_input


class LearnedPositionalEncoding(Layer):
    """``y[n, t] = x[n, t] + P[t]`` with a learned table P (max_len, dim).

    Shapes: x (N, T, dim) with T ≤ max_len -> y (N, T, dim).
    δ rule: ``dx = dy``.  Gradient: ``dP[t] = Σ_n dy[n, t]`` for t < T, zero beyond.
    P starts as N(0, 0.02²) entries (GPT-2's choice), small next to unit-scale embeddings.
    """

    def __init__(self, max_len: int, dim: int, *, std: float = 0.02, rng: Any = None,
                 device: Any = "cpu", dtype: str = "float32"):
        for name, value in (("max_len", max_len), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"LearnedPositionalEncoding: {name} must be a positive int, got {value!r}")
        self.max_len, self.dim = max_len, dim
        table = _init.generator(rng).standard_normal((max_len, dim)) * float(std)
        self.weight = Parameter(backend.device(device).send(table, dtype))

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        P = self.weight.value
        check_input(self, x, ndim=3, features=self.dim, like=P)
        T = x.shape[1]
        if T > self.max_len:
            raise ValueError(f"{self.describe()}: the sequence has {T} steps, more than max_len={self.max_len}")
        xp = backend.namespace(x)
        shape = tuple(x.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, shape)
            grad = xp.zeros(tuple(P.shape), dtype=dy.dtype, device=dy.device)
            grad[:T, :] = xp.sum(dy, axis=0)
            self.weight.accumulate(grad)
            return dy

        return x + P[:T, :], backprop

    def extra_repr(self) -> str:
        return f"max_len={self.max_len}, dim={self.dim}"


class SinusoidalPositionalEncoding(Layer):
    """``y[n, t] = x[n, t] + PE[t]`` with the fixed encoding of Vaswani et al. (2017):
    ``PE[t, 2i] = sin(t ω_i)``, ``PE[t, 2i+1] = cos(t ω_i)``, ``ω_i = base^(−2i/dim)``.

    Shapes: x (N, T, dim) -> y (N, T, dim). δ rule: ``dx = dy``. No parameters; PE is computed
    on the input's device in its dtype.
    """

    def __init__(self, dim: int, *, base: float = 10000.0):
        if isinstance(dim, bool) or not isinstance(dim, int) or dim <= 0:
            raise ValueError(f"SinusoidalPositionalEncoding: dim must be a positive int, got {dim!r}")
        if not base > 1:
            raise ValueError(f"SinusoidalPositionalEncoding: base must be > 1, got {base!r}")
        self.dim, self.base = dim, float(base)

    def encoding(self, steps: int, like: Array) -> Array:
        """PE for ``steps`` positions, (steps, dim), on ``like``'s device and dtype."""
        xp = backend.namespace(like)
        pairs = (self.dim + 1) // 2
        positions = xp.arange(steps, dtype=like.dtype, device=like.device)
        frequencies = xp.exp(xp.arange(pairs, dtype=like.dtype, device=like.device) * (-2.0 * math.log(self.base) / self.dim))
        angles = positions[:, None] * frequencies[None, :]
        interleaved = xp.reshape(xp.stack([xp.sin(angles), xp.cos(angles)], axis=-1), (steps, 2 * pairs))
        return interleaved[:, :self.dim]

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        check_input(self, x, ndim=3, features=self.dim)
        shape = tuple(x.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, shape)
            return dy

        return x + self.encoding(x.shape[1], x), backprop

    def extra_repr(self) -> str:
        return f"dim={self.dim}"
