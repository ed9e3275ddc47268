"""What an array is, where it lives and how it reaches the host; dtype helpers."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import array_api_compat
import numpy as np

from . import placement as _placement
from .common import Array, DeviceError, Namespace
from .library import NullContext

_NAMESPACE_BY_TYPE: dict[type, Namespace] = {}


def namespace(*arrays: Array) -> Namespace:
    """The array namespace of ``arrays`` (cached per array type: a dict look-up)."""
    kind = type(arrays[0])
    xp = _NAMESPACE_BY_TYPE.get(kind)
    if xp is None:
        xp = array_api_compat.array_namespace(arrays[0])
        _NAMESPACE_BY_TYPE[kind] = xp
    return xp


_IS_ARRAY_BY_TYPE: dict[type, bool] = {}


def is_array(x: object) -> bool:
    """True for an array of any array-API library (cached per type: a dict look-up)."""
    kind = type(x)
    known = _IS_ARRAY_BY_TYPE.get(kind)
    if known is None:
        known = _IS_ARRAY_BY_TYPE[kind] = array_api_compat.is_array_api_obj(x)
    return known


def device_of(x: Array) -> "_placement.Device":
    """The gradflow :class:`Device` an array lives on."""
    if isinstance(x, (np.ndarray, np.generic)):
        return _placement.device("cpu")
    if array_api_compat.is_cupy_array(x):
        return _placement.device(f"cuda:{x.device.id}")
    if array_api_compat.is_torch_array(x):
        if x.device.type != "cpu":
            raise DeviceError(f"torch tensors on {x.device} are not a gradflow device")
        return _placement.device("torch")
    if type(x).__module__.startswith("array_api_strict"):
        if str(x.device) != str(_placement.device("strict").native):
            raise DeviceError(f"array-api-strict arrays on {x.device} are not a gradflow device; use 'strict' (device1)")
        return _placement.device("strict")
    raise TypeError(f"expected an array, got {type(x).__name__}")


_NO_CONTEXT = NullContext()  # shared: arrays of libraries without a current device


def device_context(x: Array | Sequence[Array]) -> Any:
    """The context in which work on ``x`` must run: ``with backend.device_context(x): ...``.

    CuPy allocates every new array (creation functions, ``astype``, ``*_like``, elementwise
    and matmul results) on the *current* GPU and refuses, or with peer access silently
    misplaces, work on another GPU's arrays; so code that makes or combines CuPy arrays runs
    inside the context of the GPU that owns them. For every other library (NumPy, strict,
    torch CPU) this is one shared do-nothing context (a dict look-up). ``x`` may be a tuple or
    list of arrays (the first one decides).
    """
    kind = _KIND_BY_TYPE.get(type(x))  # the common case first: one dict look-up
    if kind is not None and kind != "cupy":
        return _NO_CONTEXT
    if isinstance(x, (tuple, list)):
        x = x[0] if x else None
    if library_kind(x) != "cupy":
        return _NO_CONTEXT
    device = getattr(x, "device", None)  # a cupy.cuda.Device: its own context manager (re-entrant, per thread)
    # a measuring proxy that declares CuPy but wraps host arrays has no device context
    return device if hasattr(device, "__enter__") else _NO_CONTEXT


_LAST_SENT = threading.local()


def remember_host_copy(sent: Array, host: np.ndarray) -> None:
    """Note that ``sent`` was just sent from ``host`` (the data loader does this per batch), so a
    layer checking the values of ``sent`` (Embedding's id range) can read ``host`` instead of
    fetching ``sent``: no device-to-host sync inside a training step. Only the latest batch
    of each thread is remembered."""
    _LAST_SENT.pair = (sent, host)


def known_host_copy(x: Array) -> np.ndarray | None:
    """The host array ``x`` was sent from, if it is the latest batch remembered, else None."""
    pair = getattr(_LAST_SENT, "pair", None)
    return pair[1] if pair is not None and pair[0] is x else None


def to_numpy(x: Array) -> np.ndarray:
    """Copy any supported array to a NumPy array on the host (an explicit transfer)."""
    if isinstance(x, np.ndarray):
        return x
    if isinstance(x, np.generic):
        return np.asarray(x)
    if not is_array(x):
        return np.asarray(x)
    return device_of(x)._library.to_host(x)


def to_float(x: Array) -> float:
    """A Python float from a 0-d array: a host transfer, so a sync on GPUs. Use outside hot loops."""
    return float(to_numpy(x))


def same_device(a: Array, b: Array) -> bool:
    """True when two arrays are of the same library and on the same device."""
    if isinstance(a, (np.ndarray, np.generic)) and isinstance(b, (np.ndarray, np.generic)):
        return True  # subclasses and NumPy scalars too: np.memmap weights, np.float32(1) targets
    if type(a) is not type(b):
        return False
    return a.device == b.device


_DTYPE_KINDS: dict[tuple[type, Any], str] = {}  # keyed with the type: dtypes of two libraries
                                                # may hash alike and must not be compared


def _dtype_kind(dtype: Any) -> str:
    """``"floating"``, ``"integral"`` or ``"other"``; cached per dtype, because ``str`` of a
    NumPy dtype runs Python code (a few µs, on every loss and layer call otherwise)."""
    key = (type(dtype), dtype)
    try:
        return _DTYPE_KINDS[key]
    except (KeyError, TypeError):
        pass
    name = dtype_name(dtype)
    kind = ("floating" if "float" in name and "complex" not in name
            else "integral" if name.startswith(("int", "uint")) else "other")
    try:
        _DTYPE_KINDS[key] = kind
    except TypeError:  # an unhashable dtype object: not cached
        pass
    return kind


def is_floating(dtype: Any) -> bool:
    """True for real floating dtypes of any namespace."""
    return _dtype_kind(dtype) == "floating"


def is_integral(dtype: Any) -> bool:
    """True for signed and unsigned integer dtypes (not bool) of any namespace."""
    return _dtype_kind(dtype) == "integral"


def dtype_name(dtype: Any) -> str:
    """``"float32"`` for np.float32, torch.float32, array_api_strict.float32..."""
    return str(dtype).rsplit(".", 1)[-1]


def computes_on_host(x: Array) -> bool:
    """True when operations on ``x`` run on the host CPU as they are called (NumPy, torch CPU,
    array-api-strict): an array call costs a few µs of dispatch there, and a copy costs a pass
    over memory. False for CuPy (and measuring proxies that declare it), where every call is a
    kernel launch and saving calls pays more than saving copies."""
    return library_kind(x) != "cupy"


_KIND_BY_TYPE: dict[type, str] = {}


def library_kind(x: Array) -> str:
    """Which library's fast paths apply to ``x``: ``"numpy"``, ``"cupy"``, ``"torch"`` or
    ``"other"`` (array-api-strict and anything else: portable code only). Cached per type.

    A measuring proxy (``gradflow.testing.counting``) declares the library it wraps with a
    ``gradflow_library`` class attribute, so counted steps take the same paths as real ones.
    """
    kind = _KIND_BY_TYPE.get(type(x))
    if kind is None:
        declared = getattr(type(x), "gradflow_library", None)
        if declared is not None:
            kind = declared
        elif isinstance(x, np.ndarray):
            kind = "numpy"
        elif array_api_compat.is_cupy_array(x):
            kind = "cupy"
        elif array_api_compat.is_torch_array(x):
            kind = "torch"
        else:
            kind = "other"
        _KIND_BY_TYPE[type(x)] = kind
    return kind

