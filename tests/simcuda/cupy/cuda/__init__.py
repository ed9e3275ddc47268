"""``cupy.cuda``: devices, streams, the runtime and NCCL (simulated).

``Device`` follows cupy/cuda/device.pyx: ``Device()`` is the current device; ``with Device(n):``
pushes the current id on a per-thread stack and calls ``setDevice(n)``, ``__exit__`` restores it;
``use()`` makes it current for good. The current device is per host thread, as with
``cudaSetDevice``; a new thread starts on device 0.
"""

from __future__ import annotations

from .. import _sim
from . import runtime  # noqa: F401


from .device import Device, get_device_id  # noqa: E402,F401


class Stream:
    """The null stream (pointer 0); work runs at once, so synchronising is a no-op."""

    null = None

    def __init__(self, null: bool = False, non_blocking: bool = False, ptds: bool = False):
        self.ptr = 0

    def synchronize(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass


Stream.null = Stream(null=True)


def get_current_stream(device_id=None) -> Stream:
    return Stream.null


def is_available() -> bool:
    return _sim.config.device_count > 0


from . import compiler, nccl  # noqa: E402,F401
