"""Collectives on CuPy arrays through NCCL (``cupy.cuda.nccl``).

MPI is used once, to share rank 0's NCCL unique id; after that, array collectives are NCCL
calls queued on the current CUDA stream, so they are ordered with the surrounding CuPy work and
need no host sync. Host collectives (floats, objects, barrier) and arrays that are not on the
GPU go through the host communicator.

CuPy's NCCL wrapper takes raw pointers: ``allReduce(sendbuf, recvbuf, count, datatype, op,
stream)`` and ``bcast(buff, count, datatype, root, stream)``. The pointer, element count and
datatype are read from the array's ``__cuda_array_interface__`` (CuPy implements it), which
only works for contiguous arrays; anything else is refused with a clear error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..backend import Array, Device
from .communicator import Communicator, Request

# __cuda_array_interface__ typestr (without byte order) -> name of cupy.cuda.nccl's datatype
_NCCL_DATATYPES = {
    "f2": "NCCL_FLOAT16",
    "f4": "NCCL_FLOAT32",
    "f8": "NCCL_FLOAT64",
    "i1": "NCCL_INT8",
    "u1": "NCCL_UINT8",
    "i4": "NCCL_INT32",
    "u4": "NCCL_UINT32",
    "i8": "NCCL_INT64",
    "u8": "NCCL_UINT64",
}


def import_nccl() -> Any:
    """``cupy.cuda.nccl``, or an ImportError saying what is missing."""
    try:
        from cupy.cuda import nccl
    except ImportError as error:
        raise ImportError(f"the NCCL communicator needs CuPy ({error}): pip install 'gradflow[cuda12]'") from error
    if not getattr(nccl, "available", False):
        raise ImportError("CuPy is installed but its NCCL library is not: pip install nvidia-nccl-cu12 (or cu13)")
    return nccl


def nccl_available() -> bool:
    """True when CuPy and its NCCL library can be imported."""
    try:
        import_nccl()
    except ImportError:
        return False
    return True


def _current_stream_pointer() -> int:
    import cupy

    return int(cupy.cuda.get_current_stream().ptr)


class NCCLCommunicator(Communicator):
    """NCCL collectives between one GPU per rank.

    host: the communicator of the same ranks used for the unique id and host collectives
    (an :class:`~gradflow.distributed.mpi.MPICommunicator`). device: this rank's GPU
    (``gf.device("cuda:N")``); the NCCL communicator is created in its context.
    nccl and stream are for tests: a stand-in for ``cupy.cuda.nccl`` and a function giving
    the stream pointer (default: CuPy's current stream).
    """

    name = "nccl"

    def __init__(self, host: Communicator, device: Device | None = None, *, nccl: Any = None,
                 stream: Callable[[], int] | None = None):
        super().__init__(host.rank, host.size)
        if device is not None and device.kind != "cuda":
            raise ValueError(f"NCCLCommunicator: needs a CUDA device, got {device}; use the MPI communicator on the CPU")
        self.host = host
        self.device = device
        self._nccl = nccl if nccl is not None else import_nccl()
        self._stream = stream if stream is not None else _current_stream_pointer
        unique_id = self._nccl.get_unique_id() if self.rank == 0 else None
        unique_id = host.broadcast_object(unique_id, root=0)
        if device is not None:
            with device:
                self._comm = self._nccl.NcclCommunicator(self.size, unique_id, self.rank)
        else:
            self._comm = self._nccl.NcclCommunicator(self.size, unique_id, self.rank)
        self.device_id = int(self._comm.device_id())

    def __repr__(self) -> str:
        return f"NCCLCommunicator(rank={self.rank}, size={self.size}, gpu={self.device_id})"

    def allreduce(self, buffer: Array) -> Array:
        if not hasattr(buffer, "__cuda_array_interface__"):
            return self.host.allreduce(buffer)
        pointer, count, datatype = self._describe(buffer)
        if self.size > 1 and count:
            self._comm.allReduce(pointer, pointer, count, datatype, self._nccl.NCCL_SUM, self._stream())
        return buffer

    def iallreduce(self, buffer: Array) -> Request:
        """The all-reduce queued on a side stream of this rank's GPU, after the work queued so
        far on the current stream; ``wait()`` makes the current stream wait for it (no host
        sync), so backprop's next kernels run while NCCL communicates."""
        if not hasattr(buffer, "__cuda_array_interface__") or self._stream is not _current_stream_pointer:
            return super().iallreduce(buffer)  # host arrays, and the tests' stand-in streams
        pointer, count, datatype = self._describe(buffer)
        if self.size == 1 or not count:
            return Request()
        import cupy

        side = getattr(self, "_side_stream", None)
        if side is None:
            side = self._side_stream = cupy.cuda.Stream(non_blocking=True)
        ready = cupy.cuda.Event(disable_timing=True)
        ready.record()  # on the current stream: the gradients in buffer are written
        side.wait_event(ready)
        self._comm.allReduce(pointer, pointer, count, datatype, self._nccl.NCCL_SUM, side.ptr)
        done = cupy.cuda.Event(disable_timing=True)
        done.record(side)
        return Request(lambda: cupy.cuda.get_current_stream().wait_event(done), lambda: done.done)

    def broadcast(self, buffer: Array, root: int = 0) -> Array:
        self._check_root(root)
        if not hasattr(buffer, "__cuda_array_interface__"):
            return self.host.broadcast(buffer, root)
        pointer, count, datatype = self._describe(buffer)
        if self.size > 1 and count:
            self._comm.bcast(pointer, count, datatype, root, self._stream())
        return buffer

    def _describe(self, buffer: Array) -> tuple[int, int, int]:
        """(device pointer, element count, NCCL datatype) of a contiguous array on our GPU."""
        interface = buffer.__cuda_array_interface__
        shape = tuple(interface["shape"])
        typestr = interface["typestr"]
        itemsize = int(typestr[2:])
        count = 1
        for n in shape:
            count *= n
        strides = interface.get("strides")
        if strides is not None and not _is_c_contiguous(shape, tuple(strides), itemsize):
            raise ValueError(
                f"NCCLCommunicator: needs a contiguous array, got shape {shape} with strides {tuple(strides)}; "
                "copy it first (the gradient reducer always passes contiguous buffers)"
            )
        gpu = getattr(getattr(buffer, "device", None), "id", self.device_id)
        if gpu != self.device_id:
            raise ValueError(f"NCCLCommunicator: the array is on cuda:{gpu}, this rank's communicator on cuda:{self.device_id}")
        name = _NCCL_DATATYPES.get(typestr[1:])
        if name is None or not hasattr(self._nccl, name):
            raise TypeError(f"NCCLCommunicator: NCCL has no datatype for arrays of type {typestr!r}")
        return int(interface["data"][0]), count, int(getattr(self._nccl, name))

    def allreduce_floats(self, values: Sequence[float]) -> list[float]:
        return self.host.allreduce_floats(values)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        return self.host.broadcast_object(obj, root)

    def barrier(self) -> None:
        self.host.barrier()

    def close(self) -> None:
        if self._comm is not None:
            self._comm.destroy()
            self._comm = None


def _is_c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...], itemsize: int) -> bool:
    step = itemsize
    for n, stride in zip(reversed(shape), reversed(strides)):
        if n > 1 and stride != step:
            return False
        step *= n
    return True
