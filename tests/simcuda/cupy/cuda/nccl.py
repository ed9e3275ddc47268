"""``cupy.cuda.nccl`` (cupy_backends/cuda/libs/nccl.pyx) between ranks that are threads of
this process.

``NcclCommunicator(ndev, commId, rank)`` binds to the current device and waits until all
``ndev`` ranks have joined (``ncclCommInitRank`` blocks likewise). ``allReduce(sendbuf,
recvbuf, count, datatype, op, stream)`` and ``bcast(buff, count, datatype, root, stream)`` take
raw device pointers and a count of *elements* of ``datatype`` (NCCL's API): the stand-in checks
that ``count`` elements from each pointer lie inside one live allocation on the communicator's
GPU (a byte count given as an element count reads past the buffer: on a GPU an illegal memory
access or silent corruption, here an ``NcclError``), and that every rank passed the same count,
datatype, op and root (NCCL would hang or mix garbage).
"""

from __future__ import annotations

import ctypes
import os
import threading

import numpy as np

from .. import _sim

available = True

# nccl.h ncclDataType_t and ncclRedOp_t
NCCL_INT8 = NCCL_CHAR = 0
NCCL_UINT8 = 1
NCCL_INT32 = NCCL_INT = 2
NCCL_UINT32 = 3
NCCL_INT64 = 4
NCCL_UINT64 = 5
NCCL_FLOAT16 = NCCL_HALF = 6
NCCL_FLOAT32 = NCCL_FLOAT = 7
NCCL_FLOAT64 = NCCL_DOUBLE = 8
NCCL_BFLOAT16 = 9
NCCL_SUM, NCCL_PROD, NCCL_MAX, NCCL_MIN, NCCL_AVG = 0, 1, 2, 3, 4

_NUMPY = {0: np.int8, 1: np.uint8, 2: np.int32, 3: np.uint32, 4: np.int64, 5: np.uint64,
          6: np.float16, 7: np.float32, 8: np.float64}
_OPS = {0: np.add, 1: np.multiply, 2: np.maximum, 3: np.minimum}
TIMEOUT_S = 60.0


class NcclError(RuntimeError):
    pass


def get_unique_id() -> tuple:
    return tuple(int(b) for b in os.urandom(16)) + (0,) * 112


def get_version() -> int:
    return 22500


class _Group:
    def __init__(self, size: int):
        self.size = size
        self.barrier = threading.Barrier(size, timeout=TIMEOUT_S)
        self.posted: dict[int, tuple] = {}


_GROUPS: dict[tuple, _Group] = {}
_LOCK = threading.Lock()


def _memory(pointer: int, count: int, datatype: int, device: int, what: str) -> np.ndarray:
    if datatype not in _NUMPY:
        raise NcclError(f"{what}: NCCL_ERROR_INVALID_ARGUMENT: datatype {datatype} (bfloat16 has no NumPy type here)")
    itemsize = np.dtype(_NUMPY[datatype]).itemsize
    found = _sim.find_allocation(pointer)
    if found is None:
        raise NcclError(f"{what}: pointer {pointer:#x} is not device memory allocated by CuPy")
    base, owner, size = found
    if owner != device:
        raise NcclError(f"{what}: the buffer is on GPU {owner}, the communicator on GPU {device}")
    if pointer + count * itemsize > base + size:
        raise NcclError(f"{what}: {count} elements of {np.dtype(_NUMPY[datatype]).name} from {pointer:#x} "
                        f"run past the end of its {size}-byte allocation (illegal memory access)")
    buffer = (ctypes.c_char * (count * itemsize)).from_address(pointer)
    return np.frombuffer(buffer, dtype=_NUMPY[datatype], count=count)


class NcclCommunicator:
    def __init__(self, ndev: int, commId: tuple, rank: int):
        if not 0 <= rank < ndev:
            raise NcclError(f"NCCL_ERROR_INVALID_ARGUMENT: rank {rank} of {ndev}")
        self._size, self._rank, self._device = ndev, rank, _sim.current()
        with _LOCK:
            self._group = _GROUPS.setdefault(tuple(commId), _Group(ndev))
        if self._group.size != ndev:
            raise NcclError(f"NCCL_ERROR_INVALID_ARGUMENT: ranks disagree on the size ({ndev} vs {self._group.size})")
        self._collective(("init", self._device), lambda posted: None)

    def device_id(self) -> int:
        return self._device

    def rank_id(self) -> int:
        return self._rank

    def size(self) -> int:
        return self._size

    def _collective(self, signature: tuple, action) -> None:
        group = self._group
        group.posted[self._rank] = signature
        try:
            group.barrier.wait()
            if self._rank == 0:
                shapes = {rank: posted[:-1] if posted[0] != "init" else posted[:1] for rank, posted in group.posted.items()}
                if len(set(shapes.values())) != 1:
                    group.error = NcclError(f"ranks called different collectives or counts/datatypes: {shapes}")
                else:
                    group.error = None
                    action(dict(group.posted))
            group.barrier.wait()
        except threading.BrokenBarrierError as error:
            raise NcclError("a rank did not join the collective (NCCL would hang)") from error
        if group.error is not None:
            raise group.error
        group.barrier.wait()

    def allReduce(self, sendbuf: int, recvbuf: int, count: int, datatype: int, op: int, stream: int) -> None:
        send = _memory(sendbuf, count, datatype, self._device, "allReduce sendbuf")
        recv = _memory(recvbuf, count, datatype, self._device, "allReduce recvbuf")
        self._buffers = (send, recv)

        def reduce(posted):
            total = None
            for rank in sorted(posted):
                data = posted[rank][-1][0].copy()
                total = data if total is None else _OPS.get(op, np.add)(total, data)
            if op == NCCL_AVG:
                total = total / self._size
            for rank in posted:
                posted[rank][-1][1][...] = total

        self._collective(("allReduce", count, datatype, op, (send, recv)), reduce)

    def bcast(self, buff: int, count: int, datatype: int, root: int, stream: int) -> None:
        data = _memory(buff, count, datatype, self._device, "bcast buff")

        def broadcast(posted):
            source = posted[root][-1].copy()
            for rank in posted:
                posted[rank][-1][...] = source

        self._collective(("bcast", count, datatype, root, data), broadcast)

    def broadcast(self, sendbuff: int, recvbuff: int, count: int, datatype: int, root: int, stream: int) -> None:
        if self._rank == root and sendbuff != recvbuff:
            _memory(recvbuff, count, datatype, self._device, "broadcast recvbuff")[...] = \
                _memory(sendbuff, count, datatype, self._device, "broadcast sendbuff")
        self.bcast(recvbuff, count, datatype, root, stream)

    def destroy(self) -> None:
        pass

    def abort(self) -> None:
        pass
