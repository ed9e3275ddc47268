"""Per-device random numbers with JSON-serialisable state (dropout masks, shuffling)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .common import Array
from .library import Library


class DeviceRNG:
    """Random numbers drawn for one device, with a JSON-serialisable state.

    ``random(shape, dtype)`` gives uniform [0, 1) samples, ``normal(shape, dtype)`` standard
    normal ones, both created on the device. Used for dropout masks and data shuffling.
    """

    def random(self, shape: Sequence[int], dtype: Any) -> Array:
        """Uniform samples in [0, 1) of ``shape`` and ``dtype``, on the device."""
        raise NotImplementedError

    def normal(self, shape: Sequence[int], dtype: Any) -> Array:
        """Standard normal samples of ``shape`` and ``dtype``, on the device."""
        raise NotImplementedError

    def permutation(self, n: int) -> np.ndarray:
        """A host permutation of ``range(n)`` (used to shuffle data)."""
        raise NotImplementedError

    def get_state(self) -> dict:
        """The generator's state as a JSON-serialisable dict."""
        raise NotImplementedError

    def set_state(self, state: dict) -> None:
        """Restore a state from :meth:`get_state`; a state of another kind raises ValueError."""
        raise NotImplementedError


class HostRNG(DeviceRNG):
    """Draws on the host with NumPy's PCG64 and sends the result (NumPy, strict, torch)."""

    def __init__(self, library: Library, seed: int):
        self._library = library
        self._generator = np.random.Generator(np.random.PCG64(seed))

    def _send(self, host: np.ndarray, dtype: Any) -> Array:
        with self._library.context():
            array = self._library.from_host(host)
            xp = self._library.namespace()
            return xp.astype(array, dtype) if array.dtype != dtype else array

    def random(self, shape: Sequence[int], dtype: Any) -> Array:
        """Uniform [0, 1) samples drawn on the host in float64, cast to ``dtype`` and sent."""
        host = self._generator.random(tuple(shape), dtype=np.float64)
        if self._library.kind == "cpu":
            return host.astype(dtype, copy=False)
        return self._send(host, dtype)

    def normal(self, shape: Sequence[int], dtype: Any) -> Array:
        """Standard normal samples drawn on the host in float64, cast to ``dtype`` and sent."""
        host = self._generator.standard_normal(tuple(shape), dtype=np.float64)
        if self._library.kind == "cpu":
            return host.astype(dtype, copy=False)
        return self._send(host, dtype)

    def permutation(self, n: int) -> np.ndarray:
        """A host permutation of ``range(n)``."""
        return self._generator.permutation(n)

    def get_state(self) -> dict:
        """``{"kind": "pcg64", "state": ...}``: the PCG64 bit generator's state."""
        return {"kind": "pcg64", "state": self._generator.bit_generator.state}

    def set_state(self, state: dict) -> None:
        """Restore a ``"pcg64"`` state from :meth:`get_state`."""
        if state.get("kind") != "pcg64":
            raise ValueError(f"RNG state of kind {state.get('kind')!r} does not fit a host RNG")
        self._generator.bit_generator.state = state["state"]


_MASK64 = (1 << 64) - 1
_GAMMA = 0x9E3779B97F4A7C15  # splitmix64's increment: 2^64 / golden ratio


def _mix64(z: int) -> int:
    """splitmix64's finaliser on a Python int (Steele, Lea, Flood, "Fast splittable
    pseudorandom number generators", OOPSLA 2014)."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


class CounterRNG(DeviceRNG):
    """Counter-based draws computed on the device itself (the ``cuda`` devices' generator).

    Word ``k`` of the stream is splitmix64's finaliser applied to ``key + (k + 1)·γ`` (mod 2^64),
    with ``key`` derived from the seed: a pure function of (seed, k), so the state is two
    integers (seed and how many words were used), resuming is exact, and no generator object
    or per-thread cuRAND state is ever built. A draw of n values is ~15 elementwise operations
    on an ``arange`` of uint64 counters, in the device's context. Uniforms take the top 53
    (float64) or 24 (other dtypes, via float32) bits; normals use Box–Muller on two words each.
    ``permutation`` (data shuffling) stays on the host.
    """

    def __init__(self, library: Library, seed: int):
        self._library = library
        self._seed = int(seed)
        self._key = _mix64((self._seed * _GAMMA) & _MASK64)
        self._offset = 0  # words of the stream used so far
        self._host = np.random.Generator(np.random.PCG64(seed))

    def _words(self, n: int) -> Array:
        """The next ``n`` uint64 words of the stream, as a device array."""
        xp = self._library.namespace()
        start = (self._key + (self._offset + 1) * _GAMMA) & _MASK64
        self._offset += n
        z = xp.arange(n, dtype=xp.uint64, device=self._library.native_device()) * _GAMMA + start
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB
        return z ^ (z >> 31)

    def _uniform(self, n: int, dtype: Any) -> Array:
        xp = self._library.namespace()
        if dtype == xp.float64:
            return xp.astype(self._words(n) >> 11, xp.float64) * (2.0 ** -53)
        return xp.astype(self._words(n) >> 40, xp.float32) * xp.asarray(2.0 ** -24, dtype=xp.float32)

    def random(self, shape: Sequence[int], dtype: Any) -> Array:
        """Uniform [0, 1) samples of ``shape`` and ``dtype`` computed on the device."""
        xp = self._library.namespace()
        n = math.prod(shape)
        with self._library.context():
            u = self._uniform(n, dtype)
            return xp.reshape(u if u.dtype == dtype else xp.astype(u, dtype), tuple(shape))

    def normal(self, shape: Sequence[int], dtype: Any) -> Array:
        """Standard normal samples of ``shape`` and ``dtype`` (Box–Muller in float64) on the device."""
        xp = self._library.namespace()
        n = math.prod(shape)
        with self._library.context():
            u = self._uniform(2 * n, xp.float64)
            radius = xp.sqrt(-2.0 * xp.log(1.0 - u[:n]))  # 1 − u lies in (0, 1]
            z = radius * xp.cos((2.0 * math.pi) * u[n:])
            return xp.reshape(xp.astype(z, dtype), tuple(shape))

    def permutation(self, n: int) -> np.ndarray:
        """A host permutation of ``range(n)`` (from the host generator)."""
        return self._host.permutation(n)

    def get_state(self) -> dict:
        """``{"kind": "splitmix64", "seed", "offset", "host"}``: seed, words used and the host generator's state."""
        return {"kind": "splitmix64", "seed": self._seed, "offset": self._offset,
                "host": self._host.bit_generator.state}

    def set_state(self, state: dict) -> None:
        """Restore a ``"splitmix64"`` state from :meth:`get_state`."""
        if state.get("kind") != "splitmix64":
            raise ValueError(f"RNG state of kind {state.get('kind')!r} does not fit a counter-based (CUDA) RNG")
        self.__init__(self._library, int(state["seed"]))
        self._offset = int(state["offset"])
        self._host.bit_generator.state = state["host"]
