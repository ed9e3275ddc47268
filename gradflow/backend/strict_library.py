"""array-api-strict on its simulated ``device1``: the ``strict`` test device (API 2024.12)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import Array, Namespace
from .library import Library


class StrictLibrary(Library):
    """array-api-strict on its simulated ``device1`` (tests only)."""
    kind = "strict"

    def __init__(self, index: int = 0):
        super().__init__(index)
        import array_api_strict

        array_api_strict.set_array_api_strict_flags(api_version="2024.12")
        self._xp = array_api_strict
        self._device = array_api_strict.Device("device1")

    @property
    def name(self) -> str:
        """``"strict:device1"``."""
        return "strict:device1"

    def namespace(self) -> Namespace:
        """The ``array_api_strict`` module (API version 2024.12)."""
        return self._xp

    def native_device(self) -> Any:
        """array-api-strict's ``device1``."""
        return self._device

    def from_host(self, host: np.ndarray) -> Array:
        """A copy of ``host`` on ``device1``."""
        return self._xp.asarray(np.array(host, copy=True), device=self._device)

    def to_host(self, x: Array) -> np.ndarray:
        """A NumPy copy of ``x`` (through DLPack)."""
        return np.array(np.from_dlpack(x), copy=True)

    def owns(self, x: Array) -> bool:
        """True when ``x`` is an array-api-strict array on ``device1``."""
        return isinstance(x, self._xp._array_object.Array) and x.device == self._device

