"""Device objects and the ``device(spec)`` factory: which library and which GPU an array lives on."""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import arrays
from .common import DEFAULT_DTYPE, DTYPES, Array, DeviceError, Namespace
from .cupy_library import CuPyLibrary
from .library import Library
from .numpy_library import NumPyLibrary
from .rng import DeviceRNG
from .strict_library import StrictLibrary
from .torch_library import TorchLibrary


class Device:
    """Where arrays live and which namespace computes on them.

    Create with :func:`device`. ``xp`` is the array namespace; ``send`` and ``to_numpy`` are
    the only transfers. Devices compare equal by name (``"cpu"``, ``"cuda:1"``, ...).
    """

    __slots__ = ("_library", "name", "xp", "native", "kind", "_contexts")

    def __init__(self, library: Library):
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
            return self._library.extra_dtype(name)
        return getattr(self.xp, name)

    def owns(self, x: Array) -> bool:
        """True when ``x`` is an array of this device's library on this device."""
        return self._library.owns(x)

    def send(self, x: Array, dtype: str | Any | None = None) -> Array:
        """Copy ``x`` (NumPy, a list, or any supported array) onto this device.

        An array already here is returned as is (cast when ``dtype`` differs).
        """
        if not self._library.owns(x):
            host = arrays.to_numpy(x) if arrays.is_array(x) else np.asarray(x)
            if host.dtype.kind not in "biufc":
                raise TypeError(
                    f"Device.send: x must be an array or nested lists of numbers, got "
                    f"{type(x).__name__}" + ("" if host.dtype.kind == "O" else f" of dtype {host.dtype}")
                )
        # CuPy allocates the cast's result on the *current* GPU: cast inside our context.
        with self._library.context():
            if not self._library.owns(x):
                x = self._library.from_host(host)
            if dtype is not None:
                target = self.dtype(dtype) if isinstance(dtype, str) else dtype
                if x.dtype != target:
                    x = self.xp.astype(x, target)
        return x

    def zeros(self, shape: Sequence[int], dtype: str | Any = DEFAULT_DTYPE) -> Array:
        """An array of zeros of ``shape`` and ``dtype`` (a name or a dtype) on this device."""
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


_LIBRARIES: dict[str, Callable[[int], Library]] = {
    "cpu": NumPyLibrary,
    "cuda": CuPyLibrary,
    "strict": StrictLibrary,
    "torch": TorchLibrary,
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
    if kind == "auto" and suffix is not None:
        raise ValueError(f"unknown device {spec!r}: 'auto' takes no index")
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
            f"device {spec!r} needs CuPy, which is not installed: pip install 'gradflow-nn[cuda12]' "
            "(CUDA 12) or 'gradflow-nn[cuda13]' (CUDA 13)"
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

