"""The one package that knows the array libraries.

Everything device-specific lives here: which library backs a device, how arrays move between
host and device, per-device random numbers, and the few fast primitives (scatter-add, erf)
that some libraries have natively. Layers, losses and optimizers never import NumPy or CuPy;
they ask this module (or the array itself, through the array API) for what they need.

Devices
-------
``"cpu"``          NumPy.
``"cuda"``         CuPy on the current GPU (``"cuda:N"`` for GPU N).
``"auto"``         ``"cuda"`` when CuPy sees a GPU, else ``"cpu"``.
``"strict"``       test only: array-api-strict on its simulated ``device1`` (API 2024.12). It
                   refuses to mix devices and rejects NumPy-only idioms, so code that passes
                   on it almost always runs on CuPy too.
``"torch"``        test only: PyTorch CPU tensors through array-api-compat.

Files, one concern each
-----------------------
``common``           the shared names (``Array``, ``DTYPES``, ``DeviceError``).
``library``          the interface an array library implements to back a device.
``numpy_library``, ``cupy_library``, ``strict_library``, ``torch_library``
                     one adapter per array library: creation, transfers, contexts, memory.
``placement``        :class:`Device` objects and :func:`device`.
``arrays``           what an array is, where it lives, dtype helpers, :func:`to_numpy`.
``rng``              per-device random numbers with JSON state.
``primitives``       fast primitives (scatter-add, erf, windows, fused cross-entropy) with their
                     portable fallbacks.
``host``             host BLAS threads, library versions, and the small host arrays layers and
                     losses build or check before sending (they never import NumPy).
``fused``            fused elementwise kernels (CuPy ``ElementwiseKernel``) for the hot paths, each
                     beside its portable fallback; ``backend.fused.available(x)`` says which runs.
``dlpack``           zero-copy exchange with torch, JAX and others (:func:`from_dlpack`).

Everything public is re-exported here, so code writes ``backend.device(...)``,
``backend.namespace(x)``, ``backend.erf(x)``.
"""

from __future__ import annotations

from .common import DEFAULT_DTYPE, DTYPES, Array, DeviceError, Namespace
from .library import Library
from .rng import CounterRNG, DeviceRNG, HostRNG
from .placement import Device, cuda_device_count, device, devices
from .arrays import (computes_on_host, device_context, device_of, dtype_name, is_array, is_floating, is_integral, known_host_copy,
                     library_kind, namespace, remember_host_copy, same_device, to_float, to_numpy)
from .primitives import (erf, is_deterministic, multiply_by_mask, reshape, scatter_add_rows, set_deterministic,
                         sliding_windows, softmax_cross_entropy, window_count)
from .host import blas_info, host_integer_array, keep_freed_memory, library_versions, limit_blas_threads
from . import fused
from .dlpack import from_dlpack
from .host import (HostArray, averaging_matrix, host_all_finite, host_array, host_first_true, host_zeros,
                   one_hot_rows, window_offset_indices)

__all__ = [
    "DEFAULT_DTYPE", "DTYPES", "Array", "DeviceError", "Namespace", "Library",
    "CounterRNG", "DeviceRNG", "HostRNG", "Device", "cuda_device_count", "device", "devices",
    "computes_on_host", "device_context", "device_of", "dtype_name", "is_array", "is_floating", "is_integral", "library_kind",
    "namespace", "same_device", "to_float", "to_numpy", "known_host_copy", "remember_host_copy",
    "erf", "is_deterministic", "multiply_by_mask", "reshape", "scatter_add_rows", "set_deterministic",
    "sliding_windows", "softmax_cross_entropy", "window_count",
    "blas_info", "host_integer_array", "keep_freed_memory", "library_versions", "limit_blas_threads", "fused", "from_dlpack",
]
__all__ += [  # host-side arrays for layers and losses (they do not import NumPy)
    "HostArray", "host_zeros", "host_array", "host_all_finite", "host_first_true", "averaging_matrix",
    "window_offset_indices", "one_hot_rows",
]
