"""PyTorch CPU tensors through array-api-compat: the ``torch`` test device."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import Array, Namespace
from .library import Library


class TorchLibrary(Library):
    """PyTorch CPU tensors through array-api-compat (tests only)."""
    kind = "torch"

    def __init__(self, index: int = 0):
        super().__init__(index)
        import torch

        self._torch = torch

    @property
    def name(self) -> str:
        """``"torch:cpu"``."""
        return "torch:cpu"

    def namespace(self) -> Namespace:
        """array-api-compat's torch namespace."""
        import array_api_compat.torch as xp

        return xp

    def native_device(self) -> Any:
        """``torch.device("cpu")``."""
        return self._torch.device("cpu")

    def from_host(self, host: np.ndarray) -> Array:
        """A CPU tensor holding a copy of ``host``."""
        return self._torch.from_numpy(np.array(host, copy=True))

    def to_host(self, x: Array) -> np.ndarray:
        """A NumPy copy of the tensor ``x`` (detached)."""
        return x.detach().cpu().numpy().copy()

    def owns(self, x: Array) -> bool:
        """True when ``x`` is a CPU ``torch.Tensor``."""
        return isinstance(x, self._torch.Tensor) and x.device.type == "cpu"

