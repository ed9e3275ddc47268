"""The simulated ``cupy.ndarray`` and the rule every CuPy call follows.

A NumPy array plus the id of the GPU that owns it. What CuPy does, and where it says so
(cupy/cupy at 6b6d956):

- New arrays (creation functions, ``astype``, ``*_like``, elementwise, matmul and reduction
  results) are allocated on the *current* device (``_ndarray_init`` allocates through the
  current device's pool; ``cupy/_core/core.pyx``).
- A kernel given an array of another device calls ``_check_peer_access``
  (``cupy/_core/_kernel.pyx``; reductions: ``cupy/_core/_reduction.pyx``): ValueError
  "The device where the array resides (1) is different from the current device (0). Peer access
  is unavailable between these devices." Without peer access that is the end; with it CuPy warns
  (``PerformanceWarning``) and the result lands on the current device.
- Views (basic slicing, reshape of contiguous arrays, transpose, ``as_strided``) launch nothing
  and stay on their base's device.
- ``*_like``, ``zeros``, ``full`` allocate on the current device and launch no kernel on the
  prototype, so they never complain: a ``full_like(x)`` outside x's device context silently puts
  the new array on the wrong GPU.
- ``copy()`` and ``cupy.asarray(x)`` of another device's array copy it to the current device
  (a peer memcpy, allowed without peer access; ``ndarray.copy``, ``_array_from_cupy_ndarray``).
- NumPy arrays are refused as kernel operands: ``TypeError: Unsupported type <class
  'numpy.ndarray'>`` (``cupy/_core/_scalar.pyx``); implicit conversion to NumPy raises
  ``TypeError: Implicit conversion to a NumPy array is not allowed`` (``ndarray.__array__``).
- ``bool()``, ``int()``, ``float()``, ``.item()``, ``.tolist()`` and ``.get()`` copy to the host
  (a sync); the simulation counts them.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable

import numpy as np

from . import _sim


class PerformanceWarning(RuntimeWarning):
    """cupy/_util.pyx ``PerformanceWarning`` (also ``cupy.exceptions.PerformanceWarning``)."""


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class ndarray:
    """A simulated CuPy array: a NumPy array owned by GPU ``device.id``."""

    __slots__ = ("_a", "_dev", "_base", "_size", "_address", "__weakref__")
    __array_ufunc__ = None  # NumPy defers to us (and we refuse NumPy operands), as with CuPy
    __array_priority__ = 100

    def __init__(self, shape: Any, dtype: Any = float, memptr: Any = None, strides: Any = None, order: str = "C"):
        _allocate(self, np.empty(shape, dtype=dtype, order=order), _sim.current())

    # -- identity ---------------------------------------------------------------------------
    @property
    def device(self):
        from .cuda import Device

        return Device(self._dev)

    @property
    def data(self):
        return _MemoryPointer(self)

    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    strides = property(lambda self: self._a.strides)
    itemsize = property(lambda self: self._a.itemsize)
    nbytes = property(lambda self: self._a.nbytes)
    flags = property(lambda self: self._a.flags)
    base = property(lambda self: self._base)

    @property
    def __cuda_array_interface__(self) -> dict:
        contiguous = self._a.flags.c_contiguous
        return {"shape": self._a.shape, "typestr": self._a.dtype.str, "version": 3,
                "data": (self._a.__array_interface__["data"][0], False),
                "strides": None if contiguous else self._a.strides, "descr": self._a.dtype.descr}

    def __repr__(self) -> str:
        return f"simcuda:{self._dev}:" + repr(self._a)

    def __len__(self) -> int:
        return len(self._a)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    # -- host syncs ---------------------------------------------------------------------------
    def get(self, stream: Any = None, order: str = "C", out: Any = None, blocking: bool = True) -> np.ndarray:
        _sim.syncs.record("get()")
        return np.array(self._a, order=order, copy=True)

    def item(self, *args):
        _sim.syncs.record("item()")
        return self._a.item(*args)

    def tolist(self):
        _sim.syncs.record("tolist()")
        return self._a.tolist()

    def __bool__(self) -> bool:
        _sim.syncs.record("bool()")
        return bool(self._a)

    def __float__(self) -> float:
        _sim.syncs.record("float()")
        return float(self._a)

    def __int__(self) -> int:
        _sim.syncs.record("int()")
        return int(self._a)

    def __index__(self) -> int:
        _sim.syncs.record("index()")
        return self._a.__index__()

    def __complex__(self) -> complex:
        _sim.syncs.record("complex()")
        return complex(self._a)

    def __array__(self, dtype: Any = None, copy: Any = None):
        raise TypeError("Implicit conversion to a NumPy array is not allowed. "
                        "Please use `.get()` to construct a NumPy array explicitly.")

    # -- conversions and copies ---------------------------------------------------------------
    def astype(self, dtype: Any, order: str = "K", casting: Any = None, subok: Any = None, copy: bool = True):
        if not copy and np.dtype(dtype) == self._a.dtype:
            return self
        return call(lambda a: a.astype(dtype, order=order, copy=True), (self,))

    def copy(self, order: str = "C"):
        if self._dev == _sim.current():
            return call(lambda a: a.copy(order=order), (self,))
        # ndarray.copy: another device's array is copied to the current one (cudaMemcpyPeer)
        if not (self._a.flags.c_contiguous or self._a.flags.f_contiguous):
            raise NotImplementedError("CuPy cannot copy non-contiguous array between devices.")
        return _new(self._a.copy(order=order), _sim.current())

    def view(self, dtype: Any = None):
        return _view(self._a.view() if dtype is None else self._a.view(dtype), self)

    def fill(self, value: Any) -> None:
        check_devices((self, value))
        self._a.fill(value)

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        self._a[...] = arr

    # -- indexing -----------------------------------------------------------------------------
    def __getitem__(self, key: Any):
        plain = unwrap(key, allow_numpy=True)
        result = self._a[plain]
        if isinstance(result, np.ndarray) and _root(result) is _root(self._a):
            return _view(result, self)  # basic slicing: a view, no kernel
        check_devices((self, key))
        return wrap(result)

    def __setitem__(self, key: Any, value: Any) -> None:
        check_devices((self, key, value))
        self._a[unwrap(key, allow_numpy=True)] = unwrap(value, allow_numpy=True)

    # -- views ---------------------------------------------------------------------------------
    T = property(lambda self: _view(self._a.T, self))
    mT = property(lambda self: _view(self._a.mT, self))

    def __getattr__(self, name: str) -> Callable:
        method = getattr(np.ndarray, name, None)
        if method is None or not callable(method) or name.startswith("__"):
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        return lambda *args, **kwargs: call(method, (self,) + args, kwargs)


def _binary(ufunc: Any, reflected: bool = False) -> Callable:
    if reflected:
        return lambda self, other: call(ufunc, (other, self))
    return lambda self, other: call(ufunc, (self, other))


def _inplace(ufunc: Any) -> Callable:
    def operator(self, other):
        check_devices((self, other))
        ufunc(self._a, unwrap(other), out=self._a)
        return self

    return operator


for _name, _ufunc in {"add": np.add, "sub": np.subtract, "mul": np.multiply, "truediv": np.true_divide,
                      "floordiv": np.floor_divide, "mod": np.remainder, "pow": np.power, "matmul": np.matmul,
                      "and": np.bitwise_and, "or": np.bitwise_or, "xor": np.bitwise_xor,
                      "lshift": np.left_shift, "rshift": np.right_shift}.items():
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
    setattr(ndarray, f"__r{_name}__", _binary(_ufunc, reflected=True))
    setattr(ndarray, f"__i{_name}__", _inplace(_ufunc))
for _name, _ufunc in {"lt": np.less, "le": np.less_equal, "gt": np.greater, "ge": np.greater_equal,
                      "eq": np.equal, "ne": np.not_equal}.items():
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
ndarray.__neg__ = lambda self: call(np.negative, (self,))
ndarray.__pos__ = lambda self: call(np.positive, (self,))
ndarray.__abs__ = lambda self: call(np.absolute, (self,))
ndarray.__invert__ = lambda self: call(np.invert, (self,))
ndarray.__hash__ = None


class _MemoryPointer:
    def __init__(self, array: ndarray):
        self.device_id = array._dev
        self.ptr = array._a.__array_interface__["data"][0]
        self.device = array.device


# -- the rule ------------------------------------------------------------------------------------
def _allocate(obj: ndarray, a: np.ndarray, device: int) -> ndarray:
    obj._a, obj._dev, obj._base = a, device, None
    obj._address = a.__array_interface__["data"][0]
    obj._size = _sim.allocate(device, obj._address, a.nbytes)
    return obj


def _release(self: ndarray, _release_memory=_sim.release) -> None:
    # the default argument keeps the function alive at interpreter exit, when module globals
    # may already be None (arrays freed then printed "Exception ignored in _release")
    if getattr(self, "_base", 1) is None:
        _release_memory(self._dev, self._address, self._size)


ndarray.__del__ = _release


def _new(a: np.ndarray, device: int) -> ndarray:
    return _allocate(ndarray.__new__(ndarray), a, device)


def _view(a: np.ndarray, base: ndarray) -> ndarray:
    obj = ndarray.__new__(ndarray)
    obj._a, obj._dev, obj._base, obj._size, obj._address = a, base._dev, base, 0, 0
    return obj


def unwrap(value: Any, allow_numpy: bool = False) -> Any:
    if type(value) is ndarray:
        return value._a
    if isinstance(value, (list, tuple)):
        return type(value)(unwrap(v, allow_numpy) for v in value)
    if isinstance(value, dict):
        return {k: unwrap(v, allow_numpy) for k, v in value.items()}
    if isinstance(value, np.ndarray) and not allow_numpy:
        raise TypeError(f"Unsupported type {type(value)}")  # cupy/_core/_scalar.pyx
    return value


def wrap(value: Any, device: int | None = None) -> Any:
    if isinstance(value, np.ndarray):
        return _new(value, _sim.current() if device is None else device)
    if isinstance(value, np.generic):
        return _new(np.asarray(value), _sim.current() if device is None else device)
    if isinstance(value, tuple):
        return tuple(wrap(v, device) for v in value)
    if isinstance(value, list):
        return [wrap(v, device) for v in value]
    return value


def _arrays(value: Any):
    if type(value) is ndarray:
        yield value
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _arrays(v)
    elif isinstance(value, dict):
        for v in value.values():
            yield from _arrays(v)


def check_devices(values: Any) -> None:
    """``_check_peer_access`` for every array a kernel is given (cupy/_core/_kernel.pyx)."""
    here = _sim.current()
    for arr in _arrays(values):
        if arr._dev != here:
            message = (f"The device where the array resides ({arr._dev}) is different from the "
                       f"current device ({here}).")
            if not _sim.config.peer_access:
                raise ValueError(f"{message} Peer access is unavailable between these devices.")
            warnings.warn(f"{message} Peer access has been activated automatically.", PerformanceWarning,
                          stacklevel=4)


def call(function: Callable, args: tuple, kwargs: dict | None = None) -> Any:
    """Run ``function`` on the NumPy data as a CuPy kernel would: a result that is a view of an
    input stays on that input's device; anything else is a kernel, so the inputs are checked
    against the current device and the result is allocated there."""
    kwargs = kwargs or {}
    out = kwargs.get("out")
    if out is not None:  # an in-place kernel: checked first, returns ``out`` itself
        check_devices((args, kwargs))
        function(*unwrap(args), **unwrap(kwargs))
        return out
    result = function(*unwrap(args), **unwrap(kwargs))
    if isinstance(result, np.ndarray):
        root = _root(result)
        for arr in _arrays(args):
            if _root(arr._a) is root:
                return _view(result, arr)
    check_devices((args, kwargs))
    return wrap(result)


def call_without_check(function: Callable, args: tuple, kwargs: dict | None = None) -> Any:
    """Creation from a prototype (``zeros_like``...): allocate on the current device, no kernel
    on the prototype, so no device check (cupy/_creation/basic.py)."""
    return wrap(function(*unwrap(args), **unwrap(kwargs or {})))
