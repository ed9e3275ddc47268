"""CuPy on one GPU: the ``cuda:N`` devices."""

from __future__ import annotations

from typing import Any

import numpy as np

from .common import Array, DeviceError, Namespace
from .library import Library
from .rng import CounterRNG, DeviceRNG


class CuPyLibrary(Library):
    """CuPy on GPU ``index`` (``"cuda:N"``)."""
    kind = "cuda"

    def __init__(self, index: int = 0):
        super().__init__(index)
        import cupy

        self._cupy = cupy

    @property
    def name(self) -> str:
        """``"cuda:N"``."""
        return f"cuda:{self.index}"

    def namespace(self) -> Namespace:
        """array-api-compat's CuPy namespace."""
        import array_api_compat.cupy as xp

        return xp

    def native_device(self) -> Any:
        """The ``cupy.cuda.Device`` of this GPU."""
        return self._cupy.cuda.Device(self.index)

    def context(self) -> Any:
        # array-api-compat's CuPy wrapper ignores device=, so allocation must happen inside
        # the device's context to land on the GPU that was asked for.
        """This GPU's ``cupy.cuda.Device``, as a context manager making it current."""
        return self._cupy.cuda.Device(self.index)

    def extra_dtype(self, name: str) -> Any:
        # CuPy 14 computes in bfloat16 through ml_dtypes' NumPy dtype, registered only with
        # NumPy >= 2.1.2 (CuPy docs/source/upgrade.rst "Minimal support for bfloat16";
        # cupy/_core/_scalar.pyx); gaps remain, mostly in cupyx.
        if name != "bfloat16":
            return super().extra_dtype(name)
        version = self._cupy.__version__
        why = None
        if int(version.split(".")[0]) < 14:
            why = f"CuPy {version} has no bfloat16 (CuPy >= 14 has it through ml_dtypes)"
        elif tuple(int(p) for p in np.__version__.split(".")[:3] if p.isdigit()) < (2, 1, 2):
            why = f"CuPy's bfloat16 needs NumPy >= 2.1.2, found {np.__version__}"
        else:
            try:
                import ml_dtypes
            except ImportError:
                why = "CuPy's bfloat16 is ml_dtypes' dtype, and ml_dtypes is not installed: pip install ml_dtypes"
        if why is not None:
            raise DeviceError(f"device {self.name}: {why}")
        return np.dtype(ml_dtypes.bfloat16)

    def from_host(self, host: np.ndarray) -> Array:
        """``host`` copied to this GPU (``cupy.asarray`` inside its context)."""
        with self._cupy.cuda.Device(self.index):
            return self._cupy.asarray(host)

    def to_host(self, x: Array) -> np.ndarray:
        """``x`` copied to a NumPy array (``cupy.asnumpy``; waits for the GPU)."""
        return self._cupy.asnumpy(x)

    def owns(self, x: Array) -> bool:
        """True when ``x`` is a ``cupy.ndarray`` on this GPU."""
        return isinstance(x, self._cupy.ndarray) and x.device.id == self.index

    def synchronize(self) -> None:
        """Wait until this GPU has finished its queued work."""
        self._cupy.cuda.Device(self.index).synchronize()

    def memory(self) -> dict[str, int]:
        # CuPy keeps freed blocks in a pool for reuse: "held" grows to the peak working set and
        # stays there, which looks like a leak in nvidia-smi but is not one.
        """Bytes ``in_use`` and ``held`` by CuPy's pool, and the GPU's ``device_free`` and ``device_total``."""
        with self._cupy.cuda.Device(self.index):
            pool = self._cupy.get_default_memory_pool()
            free, total = self._cupy.cuda.runtime.memGetInfo()
            return {"in_use": int(pool.used_bytes()), "held": int(pool.total_bytes()),
                    "device_free": int(free), "device_total": int(total)}

    def free_cached_memory(self) -> None:
        """Free the unused blocks of CuPy's device and pinned memory pools."""
        with self._cupy.cuda.Device(self.index):
            self._cupy.get_default_memory_pool().free_all_blocks()
            self._cupy.get_default_pinned_memory_pool().free_all_blocks()

    def rng(self, seed: int) -> DeviceRNG:
        """A :class:`CounterRNG` drawing on this GPU, seeded with ``seed``."""
        return CounterRNG(self, seed)

