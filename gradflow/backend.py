"""The one module that knows the array libraries.

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
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import array_api_compat

Array = Any  # an array of any array-API library
Namespace = Any

DTYPES = ("float16", "bfloat16", "float32", "float64")
DEFAULT_DTYPE = "float32"


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot give, or arrays sit on the wrong one."""


# --------------------------------------------------------------------------------------------
# Library adapters: the only place where NumPy, CuPy, array-api-strict and torch differ.
# --------------------------------------------------------------------------------------------


class _Library:
    """How one array library creates, moves and seeds arrays. Subclassed once per library."""

    kind = ""

    def __init__(self, index: int = 0):
        self.index = index

    @property
    def name(self) -> str:
        return self.kind

    def namespace(self) -> Namespace:
        raise NotImplementedError

    def native_device(self) -> Any:
        raise NotImplementedError

    def from_host(self, host: np.ndarray) -> Array:
        raise NotImplementedError

    def to_host(self, x: Array) -> np.ndarray:
        raise NotImplementedError

    def owns(self, x: Array) -> bool:
        """True when ``x`` is an array of this library on this device."""
        raise NotImplementedError

    def context(self) -> Any:
        return _NullContext()

    def synchronize(self) -> None:
        pass

    def memory(self) -> dict[str, int]:
        return {}

    def free_cached_memory(self) -> None:
        pass

    def rng(self, seed: int) -> "DeviceRNG":
        return HostRNG(self, seed)


class _NullContext:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _NumPy(_Library):
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


class _Strict(_Library):
    kind = "strict"

    def __init__(self, index: int = 0):
        super().__init__(index)
        import array_api_strict

        array_api_strict.set_array_api_strict_flags(api_version="2024.12")
        self._xp = array_api_strict
        self._device = array_api_strict.Device("device1")

    @property
    def name(self) -> str:
        return "strict:device1"

    def namespace(self) -> Namespace:
        return self._xp

    def native_device(self) -> Any:
        return self._device

    def from_host(self, host: np.ndarray) -> Array:
        return self._xp.asarray(np.array(host, copy=True), device=self._device)

    def to_host(self, x: Array) -> np.ndarray:
        return np.array(np.from_dlpack(x), copy=True)

    def owns(self, x: Array) -> bool:
        return isinstance(x, self._xp._array_object.Array) and x.device == self._device


class _Torch(_Library):
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


class _CuPy(_Library):
    kind = "cuda"

    def __init__(self, index: int = 0):
        super().__init__(index)
        import cupy

        self._cupy = cupy

    @property
    def name(self) -> str:
        return f"cuda:{self.index}"

    def namespace(self) -> Namespace:
        import array_api_compat.cupy as xp

        return xp

    def native_device(self) -> Any:
        return self._cupy.cuda.Device(self.index)

    def context(self) -> Any:
        # array-api-compat's CuPy wrapper ignores device=, so allocation must happen inside
        # the device's context to land on the GPU that was asked for.
        return self._cupy.cuda.Device(self.index)

    def from_host(self, host: np.ndarray) -> Array:
        with self._cupy.cuda.Device(self.index):
            return self._cupy.asarray(host)

    def to_host(self, x: Array) -> np.ndarray:
        return self._cupy.asnumpy(x)

    def owns(self, x: Array) -> bool:
        return isinstance(x, self._cupy.ndarray) and x.device.id == self.index

    def synchronize(self) -> None:
        self._cupy.cuda.Device(self.index).synchronize()

    def memory(self) -> dict[str, int]:
        # CuPy keeps freed blocks in a pool for reuse: "held" grows to the peak working set and
        # stays there, which looks like a leak in nvidia-smi but is not one.
        with self._cupy.cuda.Device(self.index):
            pool = self._cupy.get_default_memory_pool()
            free, total = self._cupy.cuda.runtime.memGetInfo()
            return {"in_use": int(pool.used_bytes()), "held": int(pool.total_bytes()),
                    "device_free": int(free), "device_total": int(total)}

    def free_cached_memory(self) -> None:
        with self._cupy.cuda.Device(self.index):
            self._cupy.get_default_memory_pool().free_all_blocks()
            self._cupy.get_default_pinned_memory_pool().free_all_blocks()

    def rng(self, seed: int) -> "DeviceRNG":
        return CuPyRNG(self, seed)


# --------------------------------------------------------------------------------------------
# Random numbers
# --------------------------------------------------------------------------------------------


class DeviceRNG:
    """Random numbers drawn for one device, with a JSON-serialisable state.

    ``random(shape, dtype)`` gives uniform [0, 1) samples, ``normal(shape, dtype)`` standard
    normal ones, both created on the device. Used for dropout masks and data shuffling.
    """

    def random(self, shape: Sequence[int], dtype: Any) -> Array:
        raise NotImplementedError

    def normal(self, shape: Sequence[int], dtype: Any) -> Array:
        raise NotImplementedError

    def permutation(self, n: int) -> np.ndarray:
        """A host permutation of ``range(n)`` (used to shuffle data)."""
        raise NotImplementedError

    def get_state(self) -> dict:
        raise NotImplementedError

    def set_state(self, state: dict) -> None:
        raise NotImplementedError


class HostRNG(DeviceRNG):
    """Draws on the host with NumPy's PCG64 and sends the result (NumPy, strict, torch)."""

    def __init__(self, library: _Library, seed: int):
        self._library = library
        self._generator = np.random.Generator(np.random.PCG64(seed))

    def _send(self, host: np.ndarray, dtype: Any) -> Array:
        array = self._library.from_host(host)
        xp = self._library.namespace()
        return xp.astype(array, dtype) if array.dtype != dtype else array

    def random(self, shape: Sequence[int], dtype: Any) -> Array:
        host = self._generator.random(tuple(shape), dtype=np.float64)
        if self._library.kind == "cpu":
            return host.astype(dtype, copy=False)
        return self._send(host, dtype)

    def normal(self, shape: Sequence[int], dtype: Any) -> Array:
        host = self._generator.standard_normal(tuple(shape), dtype=np.float64)
        if self._library.kind == "cpu":
            return host.astype(dtype, copy=False)
        return self._send(host, dtype)

    def permutation(self, n: int) -> np.ndarray:
        return self._generator.permutation(n)

    def get_state(self) -> dict:
        return {"kind": "pcg64", "state": self._generator.bit_generator.state}

    def set_state(self, state: dict) -> None:
        if state.get("kind") != "pcg64":
            raise ValueError(f"RNG state of kind {state.get('kind')!r} does not fit a host RNG")
        self._generator.bit_generator.state = state["state"]


class CuPyRNG(DeviceRNG):
    """Counter-based draws on the GPU: each call seeds a fresh generator with (seed, counter),
    so the state is two integers and resuming is exact."""

    def __init__(self, library: _CuPy, seed: int):
        self._library = library
        self._seed = int(seed)
        self._counter = 0
        self._host = np.random.Generator(np.random.PCG64(seed))

    def _next(self) -> Any:
        cupy = self._library._cupy
        self._counter += 1
        key = (self._seed * 1_000_003 + self._counter) % (2**63)
        return cupy.random.default_rng(key)

    def random(self, shape: Sequence[int], dtype: Any) -> Array:
        with self._library.context():
            return self._next().random(tuple(shape), dtype=dtype)

    def normal(self, shape: Sequence[int], dtype: Any) -> Array:
        with self._library.context():
            return self._next().standard_normal(tuple(shape), dtype=dtype)

    def permutation(self, n: int) -> np.ndarray:
        return self._host.permutation(n)

    def get_state(self) -> dict:
        return {"kind": "counter", "seed": self._seed, "counter": self._counter,
                "host": self._host.bit_generator.state}

    def set_state(self, state: dict) -> None:
        if state.get("kind") != "counter":
            raise ValueError(f"RNG state of kind {state.get('kind')!r} does not fit a CUDA RNG")
        self._seed, self._counter = int(state["seed"]), int(state["counter"])
        self._host.bit_generator.state = state["host"]


# --------------------------------------------------------------------------------------------
# Device
# --------------------------------------------------------------------------------------------


class Device:
    """Where arrays live and which namespace computes on them.

    Create with :func:`device`. ``xp`` is the array namespace; ``send`` and ``to_numpy`` are
    the only transfers. Devices compare equal by name (``"cpu"``, ``"cuda:1"``, ...).
    """

    __slots__ = ("_library", "name", "xp", "native", "kind", "_contexts")

    def __init__(self, library: _Library):
        self._library = library
        self.name: str = library.name
        self.kind: str = library.kind
        self.xp: Namespace = library.namespace()
        self.native: Any = library.native_device()
        self._contexts: list[Any] = []  # a stack, so nested `with device:` blocks work

    def __repr__(self) -> str:
        return f"Device({self.name!r})"

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, str):
            try:
                other = device(other)
            except (ValueError, DeviceError):
                return False
        return isinstance(other, Device) and other.name == self.name

    def __hash__(self) -> int:
        return hash(self.name)

    def __enter__(self) -> "Device":
        context = self._library.context()
        context.__enter__()
        self._contexts.append(context)
        return self

    def __exit__(self, *exc: object) -> None:
        self._contexts.pop().__exit__(*exc)

    # -- dtypes and creation ---------------------------------------------------------------
    def dtype(self, name: str | Any = DEFAULT_DTYPE) -> Any:
        """The namespace's dtype object for ``name`` (``"float32"``...) or a dtype itself."""
        if not isinstance(name, str):
            return name
        if name not in DTYPES and name not in ("int64", "int32", "bool", "uint8"):
            raise ValueError(f"unknown dtype {name!r}; expected one of {DTYPES}")
        if not hasattr(self.xp, name):
            raise DeviceError(f"device {self.name} has no dtype {name}")
        return getattr(self.xp, name)

    def owns(self, x: Array) -> bool:
        """True when ``x`` is an array of this device's library on this device."""
        return self._library.owns(x)

    def send(self, x: Array, dtype: str | Any | None = None) -> Array:
        """Copy ``x`` (NumPy, a list, or any supported array) onto this device.

        An array already here is returned as is (cast when ``dtype`` differs).
        """
        if not self._library.owns(x):
            host = to_numpy(x) if is_array(x) else np.asarray(x)
            with self._library.context():
                x = self._library.from_host(host)
        if dtype is not None:
            target = self.dtype(dtype) if isinstance(dtype, str) else dtype
            if x.dtype != target:
                x = self.xp.astype(x, target)
        return x

    def zeros(self, shape: Sequence[int], dtype: str | Any = DEFAULT_DTYPE) -> Array:
        target = self.dtype(dtype) if isinstance(dtype, str) else dtype
        with self._library.context():
            return self.xp.zeros(tuple(shape), dtype=target, device=self.native)

    def rng(self, seed: int) -> DeviceRNG:
        """A generator drawing on this device, seeded with ``seed``."""
        return self._library.rng(seed)

    def synchronize(self) -> None:
        """Wait for queued device work (a no-op on the CPU)."""
        self._library.synchronize()

    def memory(self) -> dict[str, int]:
        """Allocator statistics in bytes: ``in_use`` by live arrays and ``held`` by the memory
        pool (CuPy keeps freed blocks for reuse, so ``held`` stays at the peak: not a leak).
        Empty on devices without a pool (the CPU)."""
        return self._library.memory()

    def free_cached_memory(self) -> None:
        """Give the pool's unused blocks back to the driver (CuPy); a no-op elsewhere."""
        self._library.free_cached_memory()


_LIBRARIES: dict[str, Callable[[int], _Library]] = {
    "cpu": _NumPy,
    "cuda": _CuPy,
    "strict": _Strict,
    "torch": _Torch,
}
_CACHE: dict[str, Device] = {}
_SPEC = re.compile(r"^(cpu|cuda|auto|strict|torch)(?::(\w+))?$")


def cuda_device_count() -> int:
    """How many GPUs CuPy sees here (0 when CuPy is missing or sees none)."""
    try:
        import cupy
    except Exception:
        return 0
    try:
        if not cupy.is_available():
            return 0
        return int(cupy.cuda.runtime.getDeviceCount())
    except Exception:
        return 0


def device(spec: "str | Device" = "auto") -> Device:
    """The :class:`Device` for ``spec``: ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.

    Raises ``ValueError`` for an unknown string and :class:`DeviceError` when CuPy is missing,
    sees no GPU, or the GPU index is out of range.
    """
    if isinstance(spec, Device):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"device must be a string such as 'cpu' or 'cuda:0', got {type(spec).__name__}")
    key = spec.strip().lower()
    match = _SPEC.match(key)
    if match is None:
        raise ValueError(
            f"unknown device {spec!r}; expected 'cpu', 'cuda', 'cuda:N', 'auto' "
            "(or the test devices 'strict' and 'torch')"
        )
    kind, suffix = match.group(1), match.group(2)
    if kind == "auto":
        kind, suffix = ("cuda", None) if cuda_device_count() > 0 else ("cpu", None)
    index = 0
    if kind == "cuda":
        index = _cuda_index(spec, suffix)
    elif suffix is not None and not (kind == "strict" and suffix == "device1") and not (
        kind == "torch" and suffix == "cpu"
    ) and not (kind == "cpu" and suffix == "0"):
        raise ValueError(f"unknown device {spec!r}: {kind!r} takes no index")
    name = f"{kind}:{index}"
    if name not in _CACHE:
        try:
            _CACHE[name] = Device(_LIBRARIES[kind](index))
        except ImportError as error:
            extra = {"strict": "pip install array-api-strict", "torch": "pip install torch"}[kind]
            raise DeviceError(f"device {spec!r} needs a library that is not installed ({error}); {extra}") from error
    return _CACHE[name]


def _cuda_index(spec: str, suffix: str | None) -> int:
    if suffix is not None and not suffix.isdigit():
        raise ValueError(f"unknown device {spec!r}: the GPU index must be a number")
    try:
        import cupy  # noqa: F401
    except ImportError as error:
        raise DeviceError(
            f"device {spec!r} needs CuPy, which is not installed: pip install 'gradflow[cuda12]' "
            "(CUDA 12) or 'gradflow[cuda13]' (CUDA 13)"
        ) from error
    count = cuda_device_count()
    if count == 0:
        raise DeviceError(
            f"device {spec!r}: CuPy is installed but sees no GPU (no driver, no visible device, "
            "or a CUDA version that does not match the cupy-cuda wheel); use device='cpu' or 'auto'"
        )
    if suffix is None:
        import cupy

        return int(cupy.cuda.runtime.getDevice())
    index = int(suffix)
    if index >= count:
        raise DeviceError(f"device {spec!r}: GPU index {index} is out of range; this machine has {count} GPU(s)")
    return index


def devices() -> list[Device]:
    """The devices usable for training here: ``cpu`` and each GPU CuPy sees."""
    found = [device("cpu")]
    found += [device(f"cuda:{i}") for i in range(cuda_device_count())]
    return found


# --------------------------------------------------------------------------------------------
# Arrays
# --------------------------------------------------------------------------------------------

_NAMESPACE_BY_TYPE: dict[type, Namespace] = {}


def namespace(*arrays: Array) -> Namespace:
    """The array namespace of ``arrays`` (cached per array type: a dict look-up)."""
    kind = type(arrays[0])
    xp = _NAMESPACE_BY_TYPE.get(kind)
    if xp is None:
        xp = array_api_compat.array_namespace(arrays[0])
        _NAMESPACE_BY_TYPE[kind] = xp
    return xp


def is_array(x: object) -> bool:
    return array_api_compat.is_array_api_obj(x)


def device_of(x: Array) -> Device:
    """The gradflow :class:`Device` an array lives on."""
    if isinstance(x, (np.ndarray, np.generic)):
        return device("cpu")
    if array_api_compat.is_cupy_array(x):
        return device(f"cuda:{x.device.id}")
    if array_api_compat.is_torch_array(x):
        if x.device.type != "cpu":
            raise DeviceError(f"torch tensors on {x.device} are not a gradflow device")
        return device("torch")
    if type(x).__module__.startswith("array_api_strict"):
        if str(x.device) != str(device("strict").native):
            raise DeviceError(f"array-api-strict arrays on {x.device} are not a gradflow device; use 'strict' (device1)")
        return device("strict")
    raise TypeError(f"expected an array, got {type(x).__name__}")


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
    if isinstance(a, np.ndarray) and isinstance(b, np.ndarray):
        return True  # subclasses too: np.memmap weights (unpickled with mmap_mode) are host arrays
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


# --------------------------------------------------------------------------------------------
# Fast primitives with portable fallbacks
# --------------------------------------------------------------------------------------------


_DETERMINISTIC = False


def set_deterministic(enabled: bool = True) -> bool:
    """Prefer bit-reproducible kernels over faster ones; returns the previous setting.

    Today this changes one thing: :func:`scatter_add_rows` (embedding backward) uses the
    portable one-hot matrix product on CuPy instead of ``cupyx.scatter_add``, whose atomic adds
    sum duplicate rows in a different order from run to run. NumPy and torch-CPU paths are
    deterministic already and stay as they are.
    """
    global _DETERMINISTIC
    previous, _DETERMINISTIC = _DETERMINISTIC, bool(enabled)
    return previous


def is_deterministic() -> bool:
    """Whether :func:`set_deterministic` is on."""
    return _DETERMINISTIC


def scatter_add_rows(target: Array, indices: Array, values: Array, *, portable: bool = False) -> Array:
    """``target[indices[i]] += values[i]`` for every i, duplicates summed. Returns ``target``.

    target: (V, D); indices: (N,) integers; values: (N, D). Uses ``np.add.at`` on NumPy,
    ``cupyx.scatter_add`` on CuPy (atomic adds: not bit-reproducible; see
    :func:`set_deterministic`), ``index_add_`` on torch; elsewhere (or with ``portable=True``,
    or on CuPy in deterministic mode) a one-hot matrix product, which the tests run on every
    device.
    """
    if not portable:
        if isinstance(target, np.ndarray):
            np.add.at(target, np.asarray(indices), values)
            return target
        if array_api_compat.is_cupy_array(target) and not _DETERMINISTIC:
            import cupyx

            cupyx.scatter_add(target, indices, values)
            return target
        if array_api_compat.is_torch_array(target):
            target.index_add_(0, indices, values)
            return target
    return _scatter_add_rows_one_hot(target, indices, values)


_ONE_HOT_BLOCK = 1 << 24  # entries of the (rows, N) one-hot block built at a time


def _scatter_add_rows_one_hot(target: Array, indices: Array, values: Array) -> Array:
    """The portable scatter-add: ``target[r0:r1] += onehot(indices)[r0:r1] @ values``, in blocks
    of target rows so the one-hot matrix stays under ``_ONE_HOT_BLOCK`` entries. A fixed order
    of plain matrix products, so the result does not change from run to run."""
    xp = namespace(target)
    rows = target.shape[0]
    block = max(1, _ONE_HOT_BLOCK // max(int(indices.shape[0]), 1))
    for start in range(0, rows, block):
        stop = min(start + block, rows)
        ids = xp.arange(start, stop, device=target.device, dtype=indices.dtype)
        one_hot = xp.astype(indices[None, :] == ids[:, None], target.dtype)
        target[start:stop, ...] += one_hot @ values
    return target


def window_count(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """How many windows of ``kernel`` taps (spaced ``dilation`` apart) fit in ``size`` at ``stride``."""
    span = dilation * (kernel - 1) + 1
    return 0 if size < span else (size - span) // stride + 1


def sliding_windows(
    x: Array,
    kernel: Sequence[int],
    stride: Sequence[int],
    dilation: Sequence[int],
    *,
    axis: int | None = None,
    portable: bool = False,
) -> Array:
    """Every window over ``d = len(kernel)`` consecutive axes of ``x``, as one array to read from.

    The windowed axes are ``axis, ..., axis + d − 1`` (default: the last d). For x of shape
    (*A, S_1..S_d, *B) returns (*A, k_1..k_d, O_1..O_d, *B) with
    ``out[a, i_1..i_d, o_1..o_d, b] = x[a, o_1 s_1 + i_1 δ_1, ..., o_d s_d + i_d δ_d, b]``
    (s = stride, δ = dilation, O from :func:`window_count`). NumPy, CuPy and torch give a
    strided view of ``x`` without copying (never write to it); elsewhere (or with
    ``portable=True``) the windows are gathered with one basic slice per kernel offset, which
    the tests run on every device.
    """
    d = len(kernel)
    first = x.ndim - d if axis is None else (axis % x.ndim)
    lead, trail = tuple(x.shape[:first]), tuple(x.shape[first + d:])
    spatial = tuple(x.shape[first:first + d])
    out = tuple(window_count(n, k, s, r) for n, k, s, r in zip(spatial, kernel, stride, dilation))
    shape = lead + tuple(kernel) + out + trail
    if 0 in out:
        raise ValueError(f"sliding_windows: axes {spatial} are smaller than the dilated kernel {tuple(kernel)} "
                         f"(dilation {tuple(dilation)})")

    def window_strides(strides: Sequence[int]) -> tuple[int, ...]:
        # A kernel step moves δ entries along its axis, an output step s entries.
        axis_strides = strides[first:first + d]
        return (tuple(strides[:first]) + tuple(t * r for t, r in zip(axis_strides, dilation))
                + tuple(t * s for t, s in zip(axis_strides, stride)) + tuple(strides[first + d:]))

    if not portable:
        if isinstance(x, np.ndarray):
            return np.lib.stride_tricks.as_strided(x, shape, window_strides(x.strides), writeable=False)
        if array_api_compat.is_cupy_array(x):
            import cupy

            return cupy.lib.stride_tricks.as_strided(x, shape, window_strides(x.strides))
        if array_api_compat.is_torch_array(x):
            return x.as_strided(shape, window_strides(x.stride()), x.storage_offset())
    import itertools

    xp = namespace(x)
    pieces = []
    for offset in itertools.product(*(range(k) for k in kernel)):
        index = tuple(slice(i * r, i * r + s * (o - 1) + 1, s)
                      for i, r, s, o in zip(offset, dilation, stride, out))
        pieces.append(x[(*(slice(None),) * first, *index, ...)])
    return xp.reshape(xp.stack(pieces, axis=first), shape)


def erf(x: Array, *, portable: bool = False) -> Array:
    """The error function elementwise, to float64 accuracy.

    Uses the library's own ``erf`` where it has one (SciPy for NumPy, cupyx for CuPy, torch);
    the portable fallback (Cody's rational approximations via :func:`_erf_portable`) runs on
    any namespace and is what the tests use on the strict device.
    """
    if not portable:
        if isinstance(x, np.ndarray):
            try:
                from scipy.special import erf as scipy_erf

                return scipy_erf(x).astype(x.dtype, copy=False)
            except ImportError:
                pass
        elif array_api_compat.is_cupy_array(x):
            import cupyx.scipy.special

            return cupyx.scipy.special.erf(x)
        elif array_api_compat.is_torch_array(x):
            import torch

            return torch.special.erf(x)
    return _erf_portable(x)


# W. J. Cody, "Rational Chebyshev approximations for the error function" (1969): three ranges.
_ERF_A = (3.16112374387056560e00, 1.13864154151050156e02, 3.77485237685302021e02,
          3.20937758913846947e03, 1.85777706184603153e-1)
_ERF_B = (2.36012909523441209e01, 2.44024637934444173e02, 1.28261652607737228e03,
          2.84423683343917062e03)
_ERF_C = (5.64188496988670089e-1, 8.88314979438837594e00, 6.61191906371416295e01,
          2.98635138197400131e02, 8.81952221241769090e02, 1.71204761263407058e03,
          2.05107837782607147e03, 1.23033935479799725e03, 2.15311535474403846e-8)
_ERF_D = (1.57449261107098347e01, 1.17693950891312499e02, 5.37181101862009858e02,
          1.62138957456669019e03, 3.29079923573345963e03, 4.36261909014324716e03,
          3.43936767414372164e03, 1.23033935480374942e03)
_ERF_P = (3.05326634961232344e-1, 3.60344899949804439e-1, 1.25781726111229246e-1,
          1.60837851487422766e-2, 6.58749161529837803e-4, 1.63153871373020978e-2)
_ERF_Q = (2.56852019228982242e00, 1.87295284992346725e00, 5.27905102951428412e-1,
          6.05183413124413191e-2, 2.33520497626869185e-3)


def _erf_portable(x: Array) -> Array:
    xp = namespace(x)
    ax = xp.abs(x)
    # |x| <= 0.5: erf(x) = x * P(x^2) / Q(x^2)
    z = ax * ax
    num = _ERF_A[4] * z
    den = z
    for i in range(3):
        num = (num + _ERF_A[i]) * z
        den = (den + _ERF_B[i]) * z
    small = ax * (num + _ERF_A[3]) / (den + _ERF_B[3])
    # 0.5 < |x| <= 4: erfc(x) = exp(-x^2) * P(x) / Q(x)
    num = _ERF_C[8] * ax
    den = ax
    for i in range(7):
        num = (num + _ERF_C[i]) * ax
        den = (den + _ERF_D[i]) * ax
    medium = 1.0 - xp.exp(-z) * (num + _ERF_C[7]) / (den + _ERF_D[7])
    # |x| > 4: erfc(x) = exp(-x^2)/x * (1/sqrt(pi) + 1/x^2 * P(1/x^2) / Q(1/x^2))
    safe = xp.where(ax > 4.0, ax, xp.full_like(ax, 4.0))
    inv2 = 1.0 / (safe * safe)
    num = _ERF_P[5] * inv2
    den = inv2
    for i in range(4):
        num = (num + _ERF_P[i]) * inv2
        den = (den + _ERF_Q[i]) * inv2
    tail = inv2 * (num + _ERF_P[4]) / (den + _ERF_Q[4])
    large = 1.0 - xp.exp(-safe * safe) / safe * (1.0 / math.sqrt(math.pi) - tail)
    result = xp.where(ax <= 0.5, small, xp.where(ax <= 4.0, medium, large))
    return xp.where(x < 0, -result, result)


def limit_blas_threads(count: int) -> Any:
    """A context manager limiting the host BLAS (NumPy's) to ``count`` threads.

    For small models a second BLAS thread costs more in hand-offs than it saves, and on a busy
    machine spinning BLAS threads slow every step. A no-op without threadpoolctl (it comes with
    scikit-learn) and for GPU work, which does not use the host BLAS.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(limits=count, user_api="blas")


def library_versions() -> dict[str, str]:
    """Versions of the array libraries importable here (for ``gradflow info``)."""
    found = {}
    for module in ("numpy", "array_api_compat", "cupy", "array_api_strict", "torch", "scipy"):
        try:
            found[module] = importlib.import_module(module).__version__
        except Exception:
            continue
    return found


def blas_info() -> list[dict]:
    """The BLAS libraries NumPy loaded (via threadpoolctl when installed)."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: v for k, v in entry.items() if k in ("internal_api", "version", "num_threads", "architecture")}
            for entry in threadpool_info()]


# --------------------------------------------------------------------------------------------
# Fast paths for the training step. Each has a portable array-API fallback (``portable=True``
# forces it) that the tests run on every device, and states what the fast path saves.
# --------------------------------------------------------------------------------------------

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


def multiply_by_mask(x: Array, mask: Array, *, portable: bool = False) -> Array:
    """``x ⊙ mask`` for a boolean ``mask`` (broadcastable to x), in x's dtype.

    NumPy, CuPy and torch multiply by a boolean array directly (one operation; on NumPy ~12x
    faster than ``where(mask, x, 0)``); the array API defines no bool-float arithmetic, so the
    portable path casts the mask first.
    """
    if not portable and library_kind(x) != "other":
        return x * mask
    return x * namespace(x).astype(mask, x.dtype)


def softmax_cross_entropy(logits: Array, labels: Array, scale: float, *, check_labels: bool = True,
                          portable: bool = False) -> tuple[Array | None, Array | None, Any]:
    """Fused softmax cross-entropy for integer labels: ``(value, delta, labels_ok)``.

    logits (N, C) floating; labels (N,) integers. ``value = scale · Σ_i (log Σ_c e^{z_ic} − z_i,label)``
    and ``delta = scale · (softmax(z) − onehot(label))``, both in the logits' dtype.
    ``labels_ok`` (only with ``check_labels``; else None) says every label lies in [0, C): a 0-d
    boolean array on the portable path (so the caller can fold it into one host sync), a Python
    bool on NumPy, where (value, delta) are (None, None) when it is False.

    NumPy: the labels are checked on the host, the picked logits and the one-hot subtraction use
    integer indexing, and the exponential is taken in place: ~14 array calls instead of ~20
    (inside a training step, where each small call runs with cold caches, that is ~0.1 ms at
    batch 64). The portable path builds the one-hot as a comparison mask.
    """
    n, classes = logits.shape
    xp = namespace(logits)
    if not portable and library_kind(logits) == "numpy":
        labels_ok = None
        if check_labels:
            labels_ok = n == 0 or (int(labels.min()) >= 0 and int(labels.max()) < classes)
            if not labels_ok:
                return None, None, False
        rows = xp.arange(n)
        delta = logits - logits.max(axis=1, keepdims=True)
        picked = delta[rows, labels]
        xp.exp(delta, out=delta)
        total = delta.sum(axis=1, keepdims=True)
        value = (xp.log(total).sum() - picked.sum()) * scale
        delta *= scale / total
        delta[rows, labels] -= scale
        return value, delta, labels_ok
    shifted = logits - xp.max(logits, axis=-1, keepdims=True)
    e = xp.exp(shifted)
    total = xp.sum(e, axis=-1, keepdims=True)
    # one-hot as a mask; a label outside [0, C) matches no class, which labels_ok reports
    hit = labels[:, None] == xp.arange(classes, dtype=labels.dtype, device=labels.device)
    value = xp.sum(xp.log(total)) - xp.sum(multiply_by_mask(shifted, hit))
    if scale != 1.0:
        value = value * scale
    delta = e * (scale / total)
    delta -= xp.astype(hit, delta.dtype) * scale
    labels_ok = xp.sum(xp.astype(hit, xp.int32)) == n if check_labels else None
    return value, delta, labels_ok
