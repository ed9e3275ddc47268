"""Zero-copy exchange with other array libraries through DLPack.

Any object with ``__dlpack__`` and ``__dlpack_device__`` (a torch tensor, a JAX array, a CuPy or
NumPy array) becomes an array of the gradflow device it lives on, without a copy: a CPU tensor
becomes a NumPy array (``numpy.from_dlpack``), a CUDA tensor on GPU N a CuPy array on ``cuda:N``
(``cupy.from_dlpack``, inside that device's context). The other way needs nothing from gradflow:
its arrays are NumPy or CuPy arrays, which implement ``__dlpack__``, so ``torch.from_dlpack(y)``
or ``jax.dlpack.from_dlpack(y)`` take them as they are.

DLPack device types (dlpack.h): 1 = CPU, 2 = CUDA, 3 = CUDA host (pinned), 13 = CUDA managed.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import Array, DeviceError

_CPU, _CUDA, _CUDA_HOST, _CUDA_MANAGED = 1, 2, 3, 13


def from_dlpack(x: Any) -> Array:
    """The array ``x`` (any ``__dlpack__`` producer) as an array of its gradflow device, sharing memory.

    Raises ``TypeError`` for an object without ``__dlpack__``, :class:`DeviceError` for memory
    on a device gradflow has no backend for (ROCm, Metal, ...).
    """
    from . import placement

    if not hasattr(x, "__dlpack__") or not hasattr(x, "__dlpack_device__"):
        raise TypeError(f"from_dlpack: expected an object with __dlpack__ (a tensor or array), got {type(x).__name__}")
    kind, index = x.__dlpack_device__()
    kind, index = int(kind), int(index)
    if kind in (_CPU, _CUDA_HOST):
        return np.from_dlpack(x)
    if kind in (_CUDA, _CUDA_MANAGED):
        device = placement.device(f"cuda:{index}")
        with device:
            return device.xp.from_dlpack(x)
    raise DeviceError(f"from_dlpack: the array lives on DLPack device type {kind} (index {index}); "
                      "gradflow has backends for CPU (1) and CUDA (2) memory only")
