"""``cupy.cuda.runtime`` queries (cupy_backends/cuda/api/runtime.pyx names and return types).

``getDeviceProperties`` returns a dict with bytes ``name`` like CuPy's; ``memGetInfo`` gives
(free, total) of the current device, free shrinking with what its pool holds.
"""

from __future__ import annotations

from .. import _sim


class CUDARuntimeError(RuntimeError):
    pass


def getDeviceCount() -> int:
    if _sim.config.device_count == 0:
        raise CUDARuntimeError("cudaErrorNoDevice: no CUDA-capable device is detected")
    return _sim.config.device_count


def getDevice() -> int:
    return _sim.current()


def setDevice(device: int) -> None:
    _sim.set_current(device)


def memGetInfo() -> tuple[int, int]:
    held = _sim.pool(_sim.current()).held
    return _sim.DEVICE_MEMORY - held, _sim.DEVICE_MEMORY


def getDeviceProperties(device: int) -> dict:
    _sim.check_index(device)
    return {"name": f"Simulated GPU {device} (NumPy)".encode(), "totalGlobalMem": _sim.DEVICE_MEMORY,
            "major": 9, "minor": 0, "multiProcessorCount": 132, "warpSize": 32, "pciBusID": device}


def deviceCanAccessPeer(device: int, peer: int) -> int:
    return int(_sim.config.peer_access)


def runtimeGetVersion() -> int:
    return 12080


def driverGetVersion() -> int:
    return 12080


def deviceSynchronize() -> None:
    pass


is_hip = False
