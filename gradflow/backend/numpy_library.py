"""NumPy on the host: the ``cpu`` device."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import Array, Namespace
from .library import Library


class NumPyLibrary(Library):
    kind = "cpu"

    def namespace(self) -> Namespace:
        import array_api_compat.numpy as xp

        return xp

    def native_device(self) -> Any:
        return "cpu"

    def from_host(self, host: np.ndarray) -> Array:
        return np.array(host, copy=True)

    def to_host(self, x: Array) -> np.ndarray:
        return np.asarray(x)

    def owns(self, x: Array) -> bool:
        return isinstance(x, (np.ndarray, np.generic))

