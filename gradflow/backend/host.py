"""The host side: BLAS threads and the versions of the libraries present."""

from __future__ import annotations

import importlib
from typing import Any

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



_GLIBC_DEFAULTS = {-1: 128 * 1024, -2: 0, -3: 128 * 1024}  # M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD
_KEEP = {-1: 1 << 30, -2: 64 << 20, -3: 1 << 30}


def keep_freed_memory(enabled: bool = True) -> bool:
    """Let the host allocator keep freed memory for reuse instead of handing it back to the OS.

    A training step on the CPU frees and reallocates the same multi-megabyte temporaries (im2col
    columns, activations, their δs) every step. glibc's malloc serves blocks of more than 128 KiB
    (a threshold that adapts, up to 32 MiB) with fresh ``mmap`` pages and returns them on free,
    so every step pays a minor page fault and a zero-fill per 4 KiB page touched: measured
    2,800-5,800 faults per step of ``benchmarks/cnn_step.py`` (batch 64), 0 with this on.
    PyTorch's CPU steps fault the same way, so turning this on helps both in one process.

    This is process-wide (it changes glibc's ``M_MMAP_THRESHOLD``, ``M_TRIM_THRESHOLD`` and
    ``M_TOP_PAD`` through ``mallopt``): opt in from a training script or benchmark, not from a
    library. The cost is memory: freed blocks stay in the heap (the peak of the step, plus 64 MiB
    of padding). ``keep_freed_memory(False)`` puts glibc's default values back (without its
    adaptive threshold). Returns True when the setting was applied, False where the C library
    is not glibc (macOS, Windows, musl): there it does nothing.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    values = _KEEP if enabled else _GLIBC_DEFAULTS
    return all(mallopt(ctypes.c_int(option), ctypes.c_int(value)) == 1 for option, value in values.items())


def host_integer_array(values: Any, name: str, ndim: int | None = None) -> Any:
    """``values`` (a list/tuple of ints, or an integer array on any device) as a NumPy int64
    array on the host, for arguments that steer Python-level work (sequence lengths).

    ``name`` starts every error message (e.g. ``"LSTM(2, 3): lengths"``). Raises TypeError for
    anything but ints (bool included) or an integer dtype, ValueError when ``ndim`` is given and
    the array has another number of axes. An array on a GPU is copied to the host (a sync).
    """
    import numpy as np

    from .arrays import dtype_name, is_array, is_integral, to_numpy

    owner, _, label = name.rpartition(": ")
    prefix = f"{owner}: " if owner else ""
    label = label or name
    if isinstance(values, (list, tuple)):
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
            raise TypeError(f"{prefix}expected {label} as ints, got {[type(v).__name__ for v in values]}")
        host = np.asarray(values, dtype=np.int64) if values else np.zeros(0, dtype=np.int64)
    elif is_array(values) and hasattr(values, "dtype"):
        if not is_integral(values.dtype):
            raise TypeError(f"{prefix}expected integer {label}, got dtype {dtype_name(values.dtype)}")
        host = np.asarray(to_numpy(values)).astype(np.int64, copy=False)
    else:
        raise TypeError(f"{prefix}expected {label} as a sequence or array of ints, got {type(values).__name__}")
    if ndim is not None and host.ndim != ndim:
        raise ValueError(f"{prefix}expected {label} with {ndim} axis(es), got shape {host.shape}")
    return host


# -- Small host-side arrays for layers and losses ---------------------------------------------
# Layers and losses never import NumPy (one array-API code path); the few constants they build
# on the host before sending them once (adaptive pooling's matrices, a counter's initial value)
# and the checks ``fit`` runs on each host batch before sending it come from these helpers.

HostArray = Any  # a NumPy array on the host (before it is sent, or after ``to_numpy``)


def host_zeros(shape: "tuple[int, ...]", dtype: str = "float64") -> HostArray:
    """A host array of zeros of ``shape`` and ``dtype`` (a name such as ``"int64"``), to send."""
    import numpy as np

    return np.zeros(shape, dtype=dtype)


def host_array(value: Any, dtype: "str | None" = None) -> HostArray:
    """``value`` (a number, nested sequence, or array of any backend) as a host array, in ``dtype`` if given."""
    from .arrays import to_numpy

    host = to_numpy(value)
    return host if dtype is None else host.astype(dtype)


def host_all_finite(a: HostArray) -> bool:
    """True when the host array ``a`` holds no NaN or Inf (always True for integer arrays)."""
    import numpy as np

    return bool(np.isfinite(a).all()) if a.dtype.kind in "fc" else True


def host_first_true(mask: HostArray) -> "tuple[int, ...]":
    """The index (row-major order) of the first True entry of the host boolean array ``mask``."""
    import numpy as np

    return tuple(int(i) for i in np.unravel_index(int(np.flatnonzero(mask)[0]), mask.shape))


def averaging_matrix(windows: "list[tuple[int, int]]", size: int) -> HostArray:
    """The (len(windows), size) float64 host matrix whose row i holds ``1/(hi − lo)`` on window i's
    entries ``[lo, hi)``: a product with it averages each window (adaptive average pooling)."""
    import numpy as np

    a = np.zeros((len(windows), size))
    for i, (lo, hi) in enumerate(windows):
        a[i, lo:hi] = 1.0 / (hi - lo)
    return a


def window_offset_indices(windows: "list[tuple[int, int]]", offset: int) -> HostArray:
    """The int64 host vector whose entry i is window i's ``offset``-th index ``lo + offset``,
    clamped to its last index ``hi − 1`` (the gathers of adaptive max pooling)."""
    import numpy as np

    return np.array([min(lo + offset, hi - 1) for lo, hi in windows], dtype=np.int64)


def one_hot_rows(indices: HostArray, size: int) -> HostArray:
    """The (len(indices), size) float64 host matrix with a 1 at column ``indices[i]`` of row i."""
    import numpy as np

    m = np.zeros((len(indices), size))
    m[np.arange(len(indices)), indices] = 1.0
    return m
