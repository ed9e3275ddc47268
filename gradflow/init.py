"""Weight initializers, drawn on the host from a seeded NumPy generator.

Weights are drawn in float64 on the host and then sent to the layer's device and cast to its
dtype, so a model seeded the same way starts from identical weights on every device and
trajectories on different devices can be compared step by step. (NumPy is used here as the host
random source only; no training arithmetic happens in this module.)

Every initializer has the signature ``init(shape, fan_in, fan_out, rng) -> np.ndarray``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from typing import Any

import numpy as np

Initializer = Callable[[Sequence[int], int, int, np.random.Generator], np.ndarray]

_default_generator = np.random.default_rng(0)


def seed(value: int) -> None:
    """Reseed the generator layers draw from when they are given no ``rng`` of their own.

    Args:
        value: an int seed.
    """
    global _default_generator
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise TypeError(f"seed: expected a non-negative int, got {value!r}")
    _default_generator = np.random.default_rng(value)


def generator(rng: "int | np.random.Generator | None" = None) -> np.random.Generator:
    """A host generator: ``rng`` itself, a new one seeded with it, or the module default."""
    if rng is None:
        return _default_generator
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return np.random.default_rng(int(rng))
    raise TypeError(f"rng must be None, an int seed or a numpy Generator, got {type(rng).__name__}")


def glorot_uniform(shape: "tuple[int, ...]", fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / (fan_in + fan_out)) (Glorot & Bengio 2010).

    Args:
        shape: the parameter's shape.
        fan_in: inputs per output unit (in_features x kernel size).
        fan_out: outputs per input unit.
        rng: a ``numpy.random.Generator``.
    """
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=tuple(shape))


def glorot_normal(shape: "tuple[int, ...]", fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """N(0, 2 / (fan_in + fan_out)).

    Args:
        shape: the parameter's shape.
        fan_in: inputs per output unit (in_features x kernel size).
        fan_out: outputs per input unit.
        rng: a ``numpy.random.Generator``.
    """
    return rng.standard_normal(tuple(shape)) * math.sqrt(2.0 / (fan_in + fan_out))


def he_uniform(shape: "tuple[int, ...]", fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """U(-a, a) with a = sqrt(6 / fan_in) (He et al. 2015), for ReLU layers.

    Args:
        shape: the parameter's shape.
        fan_in: inputs per output unit (in_features x kernel size).
        fan_out: outputs per input unit.
        rng: a ``numpy.random.Generator``.
    """
    limit = math.sqrt(6.0 / fan_in)
    return rng.uniform(-limit, limit, size=tuple(shape))


def he_normal(shape: "tuple[int, ...]", fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """N(0, 2 / fan_in).

    Args:
        shape: the parameter's shape.
        fan_in: inputs per output unit (in_features x kernel size).
        fan_out: outputs per input unit.
        rng: a ``numpy.random.Generator``.
    """
    return rng.standard_normal(tuple(shape)) * math.sqrt(2.0 / fan_in)


def lecun_uniform(shape: "tuple[int, ...]", fan_in: int, fan_out: int, rng: np.random.Generator) -> np.ndarray:
    """U(-a, a) with a = sqrt(3 / fan_in) (PyTorch's default for Linear and Conv).

    Args:
        shape: the parameter's shape.
        fan_in: inputs per output unit (in_features x kernel size).
        fan_out: outputs per input unit.
        rng: a ``numpy.random.Generator``.
    """
    limit = math.sqrt(3.0 / fan_in)
    return rng.uniform(-limit, limit, size=tuple(shape))


def orthogonal(shape: "tuple[int, ...]", fan_in: int, fan_out: int, rng: np.random.Generator,
               gain: float = 1.0) -> np.ndarray:
    """A (semi-)orthogonal matrix (Saxe et al. 2014), flattened over trailing axes.

    Args:
        shape: the parameter's shape.
        fan_in: inputs per output unit (in_features x kernel size).
        fan_out: outputs per input unit.
        rng: a ``numpy.random.Generator``.
        gain: the matrix is scaled by this.
    """
    rows = shape[0]
    cols = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    flat = rng.standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(flat)
    q = q * np.sign(np.diag(r))  # makes the distribution uniform (Mezzadri 2007)
    if rows < cols:
        q = q.T
    return gain * q[:rows, :cols].reshape(tuple(shape))


def zeros(shape: "tuple[int, ...]", fan_in: int = 0, fan_out: int = 0, rng: Any = None) -> np.ndarray:
    """All zeros (biases), a host float64 array.

    Args:
        shape: the parameter's shape.
        fan_in: inputs per output unit (in_features x kernel size).
        fan_out: outputs per input unit.
        rng: a ``numpy.random.Generator``.
    """
    return np.zeros(tuple(shape))


def ones(shape: "tuple[int, ...]", fan_in: int = 0, fan_out: int = 0, rng: Any = None) -> np.ndarray:
    """All ones (normalisation scales), a host float64 array.

    Args:
        shape: the parameter's shape.
        fan_in: inputs per output unit (in_features x kernel size).
        fan_out: outputs per input unit.
        rng: a ``numpy.random.Generator``.
    """
    return np.ones(tuple(shape))


def constant(value: float) -> Initializer:
    """An initializer filling with ``value``."""

    def fill(shape, fan_in=0, fan_out=0, rng=None):
        return np.full(tuple(shape), float(value))

    return fill


# Aliases by the names users know from other libraries.
xavier_uniform = glorot_uniform
xavier_normal = glorot_normal
kaiming_uniform = he_uniform
kaiming_normal = he_normal

_BY_NAME: dict[str, Initializer] = {
    "glorot_uniform": glorot_uniform, "xavier_uniform": glorot_uniform,
    "glorot_normal": glorot_normal, "xavier_normal": glorot_normal,
    "he_uniform": he_uniform, "kaiming_uniform": he_uniform,
    "he_normal": he_normal, "kaiming_normal": he_normal,
    "lecun_uniform": lecun_uniform, "orthogonal": orthogonal,
    "zeros": zeros, "ones": ones,
}


def get(init: "str | Initializer") -> Initializer:
    """An initializer by name (``"he_normal"``...) or the callable itself."""
    if callable(init):
        return init
    try:
        return _BY_NAME[init]
    except KeyError:
        raise ValueError(f"unknown initializer {init!r}; expected one of {sorted(_BY_NAME)}") from None
