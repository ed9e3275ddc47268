"""CuPy on one GPU: the ``cuda:N`` devices."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import Array, Namespace
from .library import Library
from .rng import CuPyRNG, DeviceRNG


class CuPyLibrary(Library):
    kind = "cuda"

    def __init__(self, index: int = 0):
        super().__init__(index)
        import cupy

        self._cupy = cupy

    @property
    def name(self) -> str:
        return f"cuda:{self.index}"

    def namespace(self) -> Namespace:
        import array_api_compat.cupy as xp

        return xp

    def native_device(self) -> Any:
        return self._cupy.cuda.Device(self.index)

    def context(self) -> Any:
        # array-api-compat's CuPy wrapper ignores device=, so allocation must happen inside
        # the device's context to land on the GPU that was asked for.
        return self._cupy.cuda.Device(self.index)

    def from_host(self, host: np.ndarray) -> Array:
        with self._cupy.cuda.Device(self.index):
            return self._cupy.asarray(host)

    def to_host(self, x: Array) -> np.ndarray:
        return self._cupy.asnumpy(x)

    def owns(self, x: Array) -> bool:
        return isinstance(x, self._cupy.ndarray) and x.device.id == self.index

    def synchronize(self) -> None:
        self._cupy.cuda.Device(self.index).synchronize()

    def memory(self) -> dict[str, int]:
        # CuPy keeps freed blocks in a pool for reuse: "held" grows to the peak working set and
        # stays there, which looks like a leak in nvidia-smi but is not one.
        with self._cupy.cuda.Device(self.index):
            pool = self._cupy.get_default_memory_pool()
            free, total = self._cupy.cuda.runtime.memGetInfo()
            return {"in_use": int(pool.used_bytes()), "held": int(pool.total_bytes()),
                    "device_free": int(free), "device_total": int(total)}

    def free_cached_memory(self) -> None:
        with self._cupy.cuda.Device(self.index):
            self._cupy.get_default_memory_pool().free_all_blocks()
            self._cupy.get_default_pinned_memory_pool().free_all_blocks()

    def rng(self, seed: int) -> DeviceRNG:
        return CuPyRNG(self, seed)

