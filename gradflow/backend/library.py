"""The interface one array library implements to back a gradflow device."""

from __future__ import annotations

from typing import Any, TYPE_CHECKING

import numpy as np

from .common import Array, Namespace

if TYPE_CHECKING:
    from .rng import DeviceRNG


class Library:
    """How one array library creates, moves and seeds arrays. Subclassed once per library."""

    kind = ""

    def __init__(self, index: int = 0):
        self.index = index

    @property
    def name(self) -> str:
        return self.kind

    def namespace(self) -> Namespace:
        raise NotImplementedError

    def native_device(self) -> Any:
        raise NotImplementedError

    def from_host(self, host: np.ndarray) -> Array:
        raise NotImplementedError

    def to_host(self, x: Array) -> np.ndarray:
        raise NotImplementedError

    def extra_dtype(self, name: str) -> Any:
        """A dtype the namespace does not name (CuPy's bfloat16), or a DeviceError saying why not."""
        from .common import DeviceError

        raise DeviceError(f"device {self.name} has no dtype {name}")

    def owns(self, x: Array) -> bool:
        """True when ``x`` is an array of this library on this device."""
        raise NotImplementedError

    def context(self) -> Any:
        return NullContext()

    def synchronize(self) -> None:
        pass

    def memory(self) -> dict[str, int]:
        return {}

    def free_cached_memory(self) -> None:
        pass

    def rng(self, seed: int) -> "DeviceRNG":
        from .rng import HostRNG

        return HostRNG(self, seed)


class NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

