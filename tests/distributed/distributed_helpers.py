"""Test doubles for gradflow.distributed: ranks as threads of this process, and a fake NCCL.

``run_ranks(size, fn)`` runs ``fn(comm)`` on ``size`` threads, each with a
:class:`ThreadCommunicator` of one shared group, and returns the results by rank. Collectives
sum in rank order, so results are the same on every rank, like the real communicators'. The
communicator only implements the host primitives, so arrays of the test devices go through
the base class's host staging, the path MPI takes for them.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Any, Callable

import numpy as np

from gradflow.distributed.communicator import Communicator


class ThreadGroup:
    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=10)
        self.slots: list[Any] = [None] * size


class ThreadCommunicator(Communicator):
    name = "threads"

    def __init__(self, group: ThreadGroup, rank: int):
        super().__init__(rank, group.size)
        self.group = group
        self.calls: list[str] = []

    def _exchange(self, value: Any) -> list[Any]:
        group = self.group
        group.barrier.wait()
        group.slots[self.rank] = value
        group.barrier.wait()
        values = list(group.slots)
        group.barrier.wait()
        return values

    def _allreduce_host(self, host: np.ndarray) -> None:
        self.calls.append(f"allreduce:{host.dtype}:{host.size}")
        values = self._exchange(host.copy())
        total = values[0].copy()
        for other in values[1:]:
            total += other
        host[...] = total

    def _broadcast_host(self, host: np.ndarray, root: int) -> None:
        self.calls.append(f"broadcast:{host.dtype}:{host.size}")
        host[...] = self._exchange(host.copy())[root]

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        self._check_root(root)
        return self._exchange(obj)[root]

    def barrier(self) -> None:
        self.group.barrier.wait()


class AsyncThreadCommunicator(ThreadCommunicator):
    """A ThreadCommunicator whose ``iallreduce`` really runs in the background: each rank hands
    its collectives to one worker thread of its own (so they keep their order), and the
    request's ``wait()`` joins it. ``log`` records when collectives start and finish."""

    def __init__(self, group: ThreadGroup, rank: int):
        super().__init__(group, rank)
        from concurrent.futures import ThreadPoolExecutor

        self.worker = ThreadPoolExecutor(max_workers=1)
        self.log: list[str] = []

    def iallreduce(self, buffer: Any) -> Any:
        from gradflow.distributed.communicator import Request

        self.log.append(f"start:{buffer.size}")
        future = self.worker.submit(self.allreduce, buffer)

        def finish() -> None:
            future.result()
            self.log.append(f"done:{buffer.size}")

        return Request(finish, future.done)


def run_ranks(size: int, fn: Callable[[Communicator], Any], communicator: type | None = None) -> list[Any]:
    """``[fn(comm_0), ..., fn(comm_{size-1})]`` run concurrently; re-raises a rank's exception."""
    group = ThreadGroup(size)
    results: list[Any] = [None] * size
    errors: list[BaseException | None] = [None] * size

    def target(rank: int) -> None:
        try:
            results[rank] = fn((communicator or ThreadCommunicator)(group, rank))
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            errors[rank] = error  # ranks left waiting for this one time out (barrier timeout)

    threads = [threading.Thread(target=target, args=(rank,)) for rank in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    first = next((e for e in errors if e is not None and not isinstance(e, threading.BrokenBarrierError)), None)
    if first is None:
        first = next((e for e in errors if e is not None), None)
    if first is not None:
        raise first
    return results


# --------------------------------------------------------------------------------------------
# A fake cupy.cuda.nccl: the same names and signatures, collectives done on host memory
# through the raw pointers it is given (so a wrong pointer, count or datatype gives wrong sums).
# --------------------------------------------------------------------------------------------

_CTYPES = {7: ctypes.c_float, 8: ctypes.c_double, 2: ctypes.c_int32, 4: ctypes.c_int64}


class FakeDeviceArray:
    """Host memory that presents itself as a GPU array (``__cuda_array_interface__``, ``device.id``)."""

    def __init__(self, host: np.ndarray, gpu: int = 0):
        self.host = host
        self.device = type("FakeDevice", (), {"id": gpu})()

    @property
    def __cuda_array_interface__(self) -> dict:
        interface = self.host.__array_interface__
        contiguous = self.host.flags.c_contiguous
        return {"shape": self.host.shape, "typestr": self.host.dtype.str, "data": interface["data"],
                "strides": None if contiguous else self.host.strides, "version": 3}


class FakeNccl:
    NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN = 0, 1, 2, 3
    NCCL_INT8, NCCL_UINT8, NCCL_INT32, NCCL_UINT32 = 0, 1, 2, 3
    NCCL_INT64, NCCL_UINT64, NCCL_FLOAT16, NCCL_FLOAT32, NCCL_FLOAT64 = 4, 5, 6, 7, 8
    available = True

    def __init__(self, size: int):
        self.barrier = threading.Barrier(size, timeout=30)
        self.slots: list[Any] = [None] * size
        self.unique_ids_made = 0
        self.calls: list[tuple] = []
        self.inits: list[tuple] = []
        fake = self

        class NcclCommunicator:
            def __init__(self, ndev: int, comm_id: bytes, rank: int):
                fake.inits.append((ndev, comm_id, rank))
                self.rank = rank

            def device_id(self) -> int:
                return 0

            def allReduce(self, sendbuf, recvbuf, count, datatype, op, stream):  # noqa: N802
                fake.calls.append(("allReduce", self.rank, count, datatype, op, stream))
                mine = fake._view(sendbuf, count, datatype).copy()
                everyone = fake._exchange(self.rank, mine)
                fake._view(recvbuf, count, datatype)[...] = np.sum(everyone, axis=0, dtype=mine.dtype)

            def bcast(self, buff, count, datatype, root, stream):
                fake.calls.append(("bcast", self.rank, count, datatype, root, stream))
                view = fake._view(buff, count, datatype)
                view[...] = fake._exchange(self.rank, view.copy())[root]

            def destroy(self) -> None:
                fake.calls.append(("destroy", self.rank))

        self.NcclCommunicator = NcclCommunicator

    def get_unique_id(self) -> bytes:
        self.unique_ids_made += 1
        return bytes(range(128))

    def _view(self, pointer: int, count: int, datatype: int) -> np.ndarray:
        return np.ctypeslib.as_array(ctypes.cast(pointer, ctypes.POINTER(_CTYPES[datatype])), shape=(count,))

    def _exchange(self, rank: int, value: np.ndarray) -> list[np.ndarray]:
        self.barrier.wait()
        self.slots[rank] = value
        self.barrier.wait()
        values = list(self.slots)
        self.barrier.wait()
        return values
