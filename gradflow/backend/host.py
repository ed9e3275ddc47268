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

