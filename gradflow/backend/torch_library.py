"""PyTorch CPU tensors through array-api-compat: the ``torch`` test device."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import Array, Namespace
from .library import Library


class TorchLibrary(Library):
    kind = "torch"

    def __init__(self, index: int = 0):
        super().__init__(index)
        import torch

        self._torch = torch

    @property
    def name(self) -> str:
        return "torch:cpu"

    def namespace(self) -> Namespace:
        import array_api_compat.torch as xp

        return xp

    def native_device(self) -> Any:
        return self._torch.device("cpu")

    def from_host(self, host: np.ndarray) -> Array:
        return self._torch.from_numpy(np.array(host, copy=True))

    def to_host(self, x: Array) -> np.ndarray:
        return x.detach().cpu().numpy().copy()

    def owns(self, x: Array) -> bool:
        return isinstance(x, self._torch.Tensor) and x.device.type == "cpu"

