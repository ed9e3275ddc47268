"""A simulated CuPy for CPU CI: NumPy-backed, with CuPy's device rules (test only).

tests/conftest.py puts this folder on ``sys.path`` when the real CuPy is absent, so ``import
cupy`` and ``array_api_compat.cupy`` run over it unchanged and gradflow's real CuPy adapter
(gradflow/backend/cupy_library.py) is what the tests exercise. What it models, with the source
in CuPy of each rule: see ``_core`` (arrays and the device rule), ``cuda`` (devices, runtime,
streams, NCCL), ``random`` (the Generator API), ``cupyx`` (scatter_add, special.erf), and
docs/gpu.md. What it cannot show: kernel speed, asynchronous streams, real numerics of CUDA
kernels, real NCCL transports, memory pressure.

``cupy._sim.reset(device_count, peer_access)`` configures it; ``cupy._sim.syncs`` counts
device-to-host reads.
"""

from __future__ import annotations

import numpy as _np

from . import _sim
from ._core import ndarray, call as _call, call_without_check as _call_without_check, unwrap as _unwrap
from ._core import _new, PerformanceWarning  # noqa: F401

__version__ = "14.2.0+simulated"
__simulated__ = True

# Dtype objects and scalar types are NumPy's own in CuPy too (cupy/__init__.py re-exports them).
_PASSTHROUGH_TYPES = (type, _np.dtype)
_NOT_EXPORTED = {"ndarray", "asarray", "array", "asanyarray", "ascontiguousarray", "random", "linalg", "fft",
                 "testing", "lib", "ma", "char", "rec", "ctypeslib", "polynomial", "emath", "f2py", "typing",
                 "exceptions", "dtypes", "show_config", "info", "test", "get_include", "matrix", "memmap",
                 "recarray", "chararray", "vectorize", "frompyfunc", "load", "save", "savez", "loadtxt", "savetxt",
                 "genfromtxt", "fromfile", "frombuffer", "fromstring", "fromiter", "fromregex", "array_repr",
                 "array_str", "array2string", "set_printoptions", "get_printoptions", "printoptions",
                 "nested_iters", "nditer", "ndenumerate", "ndindex", "broadcast", "busday_count",
                 "is_busday", "busday_offset", "busdaycalendar", "datetime_as_string", "datetime_data"}
_CREATION_FROM_PROTOTYPE = {"zeros_like", "ones_like", "empty_like", "full_like"}

__all__ = ["ndarray", "asarray", "array", "asnumpy", "is_available", "get_default_memory_pool",
           "get_default_pinned_memory_pool", "ElementwiseKernel", "cuda", "random", "linalg", "fft", "lib"]


def _export() -> None:
    scope = globals()
    for name in dir(_np):
        if name.startswith("_") or name in _NOT_EXPORTED:
            continue
        value = getattr(_np, name)
        if isinstance(value, _PASSTHROUGH_TYPES) or not callable(value):
            if not isinstance(value, type(_np)):
                scope[name] = value
                __all__.append(name)
            continue
        if name in ("result_type", "can_cast", "promote_types", "finfo", "iinfo", "issubdtype", "isdtype",
                    "isscalar", "ndim", "shape", "size"):
            function = _dtype_query(value)
        elif name in _CREATION_FROM_PROTOTYPE:
            function = _prototype(value)
        else:
            function = _kernel(value)
        function.__name__ = name
        scope[name] = function
        __all__.append(name)


def _kernel(np_function):
    return lambda *args, **kwargs: _call(np_function, args, kwargs)


def _prototype(np_function):
    return lambda *args, **kwargs: _call_without_check(np_function, args, kwargs)


def _dtype_query(np_function):
    def query(*args, **kwargs):
        args = tuple(a.dtype if isinstance(a, ndarray) else a for a in args)
        return np_function(*args, **kwargs)

    return query


_export()
bool_ = _np.bool_


def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, blocking=False):
    """cupy/_core/core.pyx ``array``: a CuPy array on the current device is cast (copied when
    asked); another device's array is copied to the current device; host data is transferred."""
    if isinstance(obj, ndarray):
        if obj._dev == _sim.current():
            out = obj.astype(obj.dtype if dtype is None else dtype, order=order, copy=bool(copy))
        else:
            out = obj.copy(order="C" if order == "K" else order).astype(dtype or obj.dtype, copy=False)
        return out
    host = _np.array(_unwrap(obj, allow_numpy=True), dtype=dtype, order=order, ndmin=ndmin)
    return _new(host, _sim.current())


def asarray(a, dtype=None, order=None, blocking=False):
    return array(a, dtype=dtype, copy=False, order=order or "K")


def ascontiguousarray(a, dtype=None):
    return _call(_np.ascontiguousarray, (a,), {"dtype": dtype})


def asnumpy(a, stream=None, order="C", out=None, blocking=True):
    """cupy/_creation/from_data.py ``asnumpy``: ``a.get()`` for a CuPy array (a sync)."""
    if isinstance(a, ndarray):
        return a.get(order=order)
    return _np.asarray(a, order=order)


def is_available() -> bool:
    return _sim.config.device_count > 0


def get_array_module(*args):
    import sys

    return sys.modules[__name__] if any(isinstance(a, ndarray) for a in args) else _np


class _MemoryPool:
    """cupy/cuda/memory.pyx ``MemoryPool``: every method acts on the current device's pool."""

    def used_bytes(self) -> int:
        return _sim.pool(_sim.current()).used

    def total_bytes(self) -> int:
        return _sim.pool(_sim.current()).held

    def free_bytes(self) -> int:
        p = _sim.pool(_sim.current())
        return p.held - p.used

    def free_all_blocks(self, stream=None) -> None:
        p = _sim.pool(_sim.current())
        p.held = p.used

    def n_free_blocks(self) -> int:
        return 0 if self.free_bytes() == 0 else 1

    def set_limit(self, size=None, fraction=None) -> None:
        pass


class _PinnedMemoryPool:
    def free_all_blocks(self) -> None:
        pass

    def n_free_blocks(self) -> int:
        return 0


_POOL = _MemoryPool()
_PINNED_POOL = _PinnedMemoryPool()


def get_default_memory_pool() -> _MemoryPool:
    return _POOL


def get_default_pinned_memory_pool() -> _PinnedMemoryPool:
    return _PINNED_POOL


from . import cuda, exceptions, lib, linalg, fft, random  # noqa: E402,F401
from ._elementwise import ElementwiseKernel  # noqa: E402,F401

# array_api_compat.cupy does ``from cupy import abs, max, min, round``
abs, max, min, round = absolute, amax, amin, around  # noqa: F821,A001
