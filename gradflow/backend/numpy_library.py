"""NumPy on the host: the ``cpu`` device."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import Array, Namespace
from .library import Library


class NumPyLibrary(Library):
    """NumPy on the host (``"cpu"``)."""
    kind = "cpu"

    def namespace(self) -> Namespace:
        """array-api-compat's NumPy namespace."""
        import array_api_compat.numpy as xp

        return xp

    def native_device(self) -> Any:
        """``"cpu"``."""
        return "cpu"

    def from_host(self, host: np.ndarray) -> Array:
        """A copy of ``host`` (so the caller's array is never shared)."""
        return np.array(host, copy=True)

    def to_host(self, x: Array) -> np.ndarray:
        """``x`` as a NumPy array (no copy)."""
        return np.asarray(x)

    def owns(self, x: Array) -> bool:
        """True when ``x`` is a NumPy array or scalar."""
        return isinstance(x, (np.ndarray, np.generic))

