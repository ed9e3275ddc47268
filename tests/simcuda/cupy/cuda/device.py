"""``cupy.cuda.device`` (cupy/cuda/device.pyx): ``Device`` and ``get_device_id``."""

from __future__ import annotations

from .. import _sim
from . import runtime


class Device:
    def __init__(self, device=None):
        if device is None:
            device = _sim.current()
        elif isinstance(device, Device):
            device = device.id
        _sim.check_index(int(device))
        self.id = int(device)

    def __int__(self) -> int:
        return self.id

    def __enter__(self) -> "Device":
        _sim.device_stack().append(_sim.current())
        _sim.set_current(self.id)
        return self

    def __exit__(self, *exc) -> None:
        _sim.set_current(_sim.device_stack().pop())

    def use(self) -> "Device":
        _sim.set_current(self.id)
        return self

    def synchronize(self) -> None:
        pass

    @property
    def compute_capability(self) -> str:
        return "90"

    @property
    def mem_info(self) -> tuple[int, int]:
        with self:
            return runtime.memGetInfo()

    def __eq__(self, other) -> bool:
        return isinstance(other, Device) and other.id == self.id

    def __hash__(self) -> int:
        return hash(("cuda", self.id))

    def __repr__(self) -> str:
        return f"<CUDA Device {self.id}>"


def get_device_id() -> int:
    return _sim.current()
