"""The state of the simulated GPUs: how many, peer access, the current device per thread, the
memory pools, the allocations (for NCCL's pointer checks) and the host-sync counter.

Every modelled behaviour names its source in CuPy (cupy/cupy on GitHub, read at commit
6b6d956, CuPy 14.x) or the CUDA documentation; docs/gpu.md lists them all.
"""

from __future__ import annotations

import threading
import traceback
from dataclasses import dataclass, field

# cupy/cuda/memory.pyx: ``ALLOCATION_UNIT_SIZE = 512``: the pool rounds every request up to it.
ALLOCATION_UNIT = 512
DEVICE_MEMORY = 16 * 1024**3  # each simulated GPU has 16 GiB


@dataclass
class Config:
    device_count: int = 2
    # cupy/_core/_kernel.pyx ``_check_peer_access``: without peer access a kernel given another
    # device's array raises ValueError; with it, CuPy warns (PerformanceWarning) and runs.
    peer_access: bool = False


config = Config()
_local = threading.local()  # CUDA's current device is per host thread (cudaSetDevice)


def current() -> int:
    return getattr(_local, "device", 0)


def set_current(index: int) -> None:
    check_index(index)
    _local.device = index


def check_index(index: int) -> None:
    from .cuda.runtime import CUDARuntimeError

    if not 0 <= int(index) < config.device_count:
        raise CUDARuntimeError("cudaErrorInvalidDevice: invalid device ordinal")


def device_stack() -> list[int]:
    stack = getattr(_local, "stack", None)
    if stack is None:
        stack = _local.stack = []
    return stack


# -- memory pools ----------------------------------------------------------------------------
@dataclass
class Pool:
    """One device's pool (cupy/cuda/memory.pyx ``SingleDeviceMemoryPool``): ``used`` counts live
    blocks, ``held`` what the pool acquired; freed blocks stay held until ``free_all_blocks``."""

    used: int = 0
    held: int = 0


pools: dict[int, Pool] = {}
# allocation base address -> (device, rounded bytes): NCCL's stand-in checks that a pointer and
# count stay inside one allocation of the communicator's device.
allocations: dict[int, tuple[int, int]] = {}


def pool(index: int) -> Pool:
    return pools.setdefault(index, Pool())


def rounded(nbytes: int) -> int:
    return 0 if nbytes == 0 else -(-nbytes // ALLOCATION_UNIT) * ALLOCATION_UNIT


def allocate(index: int, address: int, nbytes: int) -> int:
    size = rounded(nbytes)
    p = pool(index)
    p.used += size
    p.held = max(p.held, p.used)
    if size:
        allocations[address] = (index, size)
    return size


def release(index: int, address: int, size: int) -> None:
    pool(index).used -= size
    allocations.pop(address, None)


def find_allocation(address: int) -> tuple[int, int, int] | None:
    """(base, device, bytes) of the live allocation containing ``address``, or None."""
    for base, (index, size) in allocations.items():
        if base <= address < base + size:
            return base, index, size
    return None


# -- host syncs ------------------------------------------------------------------------------
@dataclass
class SyncLog:
    """Device-to-host reads: ``bool()``, ``int()``, ``float()``, ``.item()``, ``.tolist()``,
    ``.get()``/``cupy.asnumpy``. Each one waits for the GPU's queue to drain."""

    count: int = 0
    where: list[str] = field(default_factory=list)

    def record(self, what: str) -> None:
        self.count += 1
        if len(self.where) < 20:
            frames = traceback.extract_stack(limit=8)[:-2]
            self.where.append(f"{what} at " + " <- ".join(f"{f.name}:{f.lineno}" for f in reversed(frames[-4:])))


syncs = SyncLog()


def reset(device_count: int = 2, peer_access: bool = False) -> None:
    config.device_count = device_count
    config.peer_access = peer_access
    _local.device = 0
