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
        """The device's name as users write it (``"cpu"``, ``"cuda:1"``)."""
        return self.kind

    def namespace(self) -> Namespace:
        """The array-API namespace of this library (``xp``)."""
        raise NotImplementedError

    def native_device(self) -> Any:
        """The library's own device object, for ``device=`` arguments."""
        raise NotImplementedError

    def from_host(self, host: np.ndarray) -> Array:
        """A copy of the NumPy array ``host`` on this device."""
        raise NotImplementedError

    def to_host(self, x: Array) -> np.ndarray:
        """A NumPy copy of the device array ``x`` (a transfer, so a sync on GPUs)."""
        raise NotImplementedError

    def extra_dtype(self, name: str) -> Any:
        """A dtype the namespace does not name (CuPy's bfloat16), or a DeviceError saying why not."""
        from .common import DeviceError

        raise DeviceError(f"device {self.name} has no dtype {name}")

    def owns(self, x: Array) -> bool:
        """True when ``x`` is an array of this library on this device."""
        raise NotImplementedError

    def context(self) -> Any:
        """A context manager making this device current (a no-op where there is none)."""
        return NullContext()

    def synchronize(self) -> None:
        """Wait until the device's queued work is done (a no-op on the host)."""
        pass

    def memory(self) -> dict[str, int]:
        """Memory counters in bytes by name (empty where the library keeps none)."""
        return {}

    def free_cached_memory(self) -> None:
        """Return blocks the library's memory pool keeps for reuse (a no-op without a pool)."""
        pass

    def rng(self, seed: int) -> "DeviceRNG":
        """A :class:`DeviceRNG` drawing for this device, seeded with ``seed`` (host draws, sent)."""
        from .rng import HostRNG

        return HostRNG(self, seed)


class NullContext:
    """A context manager that does nothing (the devices without a current-device notion)."""
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

