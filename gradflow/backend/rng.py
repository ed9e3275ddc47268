"""Per-device random numbers with JSON-serialisable state (dropout masks, shuffling)."""

from __future__ import annotations

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
        raise NotImplementedError

    def normal(self, shape: Sequence[int], dtype: Any) -> Array:
        raise NotImplementedError

    def permutation(self, n: int) -> np.ndarray:
        """A host permutation of ``range(n)`` (used to shuffle data)."""
        raise NotImplementedError

    def get_state(self) -> dict:
        raise NotImplementedError

    def set_state(self, state: dict) -> None:
        raise NotImplementedError


class HostRNG(DeviceRNG):
    """Draws on the host with NumPy's PCG64 and sends the result (NumPy, strict, torch)."""

    def __init__(self, library: Library, seed: int):
        self._library = library
        self._generator = np.random.Generator(np.random.PCG64(seed))

    def _send(self, host: np.ndarray, dtype: Any) -> Array:
        array = self._library.from_host(host)
        xp = self._library.namespace()
        return xp.astype(array, dtype) if array.dtype != dtype else array

    def random(self, shape: Sequence[int], dtype: Any) -> Array:
        host = self._generator.random(tuple(shape), dtype=np.float64)
        if self._library.kind == "cpu":
            return host.astype(dtype, copy=False)
        return self._send(host, dtype)

    def normal(self, shape: Sequence[int], dtype: Any) -> Array:
        host = self._generator.standard_normal(tuple(shape), dtype=np.float64)
        if self._library.kind == "cpu":
            return host.astype(dtype, copy=False)
        return self._send(host, dtype)

    def permutation(self, n: int) -> np.ndarray:
        return self._generator.permutation(n)

    def get_state(self) -> dict:
        return {"kind": "pcg64", "state": self._generator.bit_generator.state}

    def set_state(self, state: dict) -> None:
        if state.get("kind") != "pcg64":
            raise ValueError(f"RNG state of kind {state.get('kind')!r} does not fit a host RNG")
        self._generator.bit_generator.state = state["state"]


class CuPyRNG(DeviceRNG):
    """Counter-based draws on the GPU: each call seeds a fresh generator with (seed, counter),
    so the state is two integers and resuming is exact."""

    def __init__(self, library: Any, seed: int):
        self._library = library
        self._seed = int(seed)
        self._counter = 0
        self._host = np.random.Generator(np.random.PCG64(seed))

    def _next(self) -> Any:
        cupy = self._library._cupy
        self._counter += 1
        key = (self._seed * 1_000_003 + self._counter) % (2**63)
        return cupy.random.default_rng(key)

    def random(self, shape: Sequence[int], dtype: Any) -> Array:
        with self._library.context():
            return self._next().random(tuple(shape), dtype=dtype)

    def normal(self, shape: Sequence[int], dtype: Any) -> Array:
        with self._library.context():
            return self._next().standard_normal(tuple(shape), dtype=dtype)

    def permutation(self, n: int) -> np.ndarray:
        return self._host.permutation(n)

    def get_state(self) -> dict:
        return {"kind": "counter", "seed": self._seed, "counter": self._counter,
                "host": self._host.bit_generator.state}

    def set_state(self, state: dict) -> None:
        if state.get("kind") != "counter":
            raise ValueError(f"RNG state of kind {state.get('kind')!r} does not fit a CUDA RNG")
        self._seed, self._counter = int(state["seed"]), int(state["counter"])
        self._host.bit_generator.state = state["host"]

