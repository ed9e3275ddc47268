"""Collectives through mpi4py: NumPy arrays directly, CuPy arrays directly on CUDA-aware MPI.

Arrays of the other devices (CuPy without a CUDA-aware MPI, the test devices) are staged
through a host copy. Launch with ``mpirun -np N python -m mpi4py script.py``: under
``-m mpi4py`` an uncaught exception on one rank aborts the whole job instead of leaving the
other ranks waiting in a collective forever.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
from typing import Any

import numpy as np

from .. import backend
from ..backend import Array
from .communicator import Communicator, Request

CUDA_AWARE_ENV = "GRADFLOW_CUDA_AWARE_MPI"


def import_mpi() -> Any:
    """``mpi4py.MPI``, imported on first use (importing it initialises MPI)."""
    try:
        from mpi4py import MPI
    except ImportError as error:
        raise ImportError(
            f"gradflow.distributed needs mpi4py and an MPI library for more than one process ({error}); "
            "install OpenMPI (apt-get install openmpi-bin libopenmpi-dev) and pip install 'gradflow[distributed]'"
        ) from error
    return MPI


def cuda_aware_mpi() -> bool:
    """Whether the MPI library accepts CUDA device pointers.

    ``GRADFLOW_CUDA_AWARE_MPI=1`` or ``=0`` overrides the detection. Otherwise asks the
    library: ``MPIX_Query_cuda_support()`` (an Open MPI extension that MPICH 4 provides too),
    looked up in the already loaded MPI library. No such function means no: host staging.
    """
    forced = os.environ.get(CUDA_AWARE_ENV, "").strip().lower()
    if forced in ("1", "true", "yes", "on"):
        return True
    if forced in ("0", "false", "no", "off"):
        return False
    import_mpi()  # loads libmpi and initialises MPI, which the query needs
    for name in (None, ctypes.util.find_library("mpi")):
        try:
            query = getattr(ctypes.CDLL(name), "MPIX_Query_cuda_support")
        except (OSError, AttributeError, TypeError):
            continue
        query.restype = ctypes.c_int
        query.argtypes = []
        return query() == 1
    return False


class MPICommunicator(Communicator):
    """Collectives over an mpi4py communicator (``MPI.COMM_WORLD`` by default).

    cuda_aware: pass CuPy arrays to MPI without a host copy; ``None`` detects it with
    :func:`cuda_aware_mpi`. The device's queued work is synchronised before such a call,
    because MPI knows nothing of CUDA streams.
    """

    name = "mpi"

    def __init__(self, comm: Any = None, cuda_aware: bool | None = None):
        self._MPI = import_mpi()
        self.comm = comm if comm is not None else self._MPI.COMM_WORLD
        super().__init__(self.comm.Get_rank(), self.comm.Get_size())
        self.cuda_aware = cuda_aware_mpi() if cuda_aware is None else bool(cuda_aware)

    def __repr__(self) -> str:
        return f"MPICommunicator(rank={self.rank}, size={self.size}, cuda_aware={self.cuda_aware})"

    def allreduce(self, buffer: Array) -> Array:
        if self.size > 1:
            if self._passes_device_pointer(buffer):
                self.comm.Allreduce(self._MPI.IN_PLACE, buffer, op=self._MPI.SUM)
            else:
                self._on_host(buffer, self._allreduce_host)
        return buffer

    def iallreduce(self, buffer: Array) -> Request:
        """Non-blocking ``MPI_Iallreduce`` in place. A contiguous float32/float64 NumPy buffer (or
        a CuPy one with CUDA-aware MPI) is reduced where it lies; anything else through a host
        copy that ``wait()`` writes back."""
        if self.size == 1:
            return Request()
        MPI = self._MPI
        if self._passes_device_pointer(buffer) or (
                isinstance(buffer, np.ndarray) and buffer.flags.c_contiguous and buffer.flags.writeable
                and buffer.dtype != np.float16):
            request = self.comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
            return Request(request.Wait, request.Test)
        device = backend.device_of(buffer)
        host = np.array(backend.to_numpy(buffer), copy=True, order="C")
        wide = host.astype(np.float32) if host.dtype == np.float16 else host
        request = self.comm.Iallreduce(MPI.IN_PLACE, wide, op=MPI.SUM)

        def finish() -> None:
            request.Wait()
            buffer[...] = device.send(wide.astype(host.dtype, copy=False), buffer.dtype)

        return Request(finish, request.Test)

    def broadcast(self, buffer: Array, root: int = 0) -> Array:
        self._check_root(root)
        if self.size > 1:
            if self._passes_device_pointer(buffer):
                self.comm.Bcast(buffer, root=root)
            else:
                self._on_host(buffer, lambda host: self._broadcast_host(host, root))
        return buffer

    def _passes_device_pointer(self, buffer: Array) -> bool:
        """True (after a device sync) when ``buffer`` is a contiguous CuPy array and MPI is CUDA-aware."""
        if not (self.cuda_aware and hasattr(buffer, "__cuda_array_interface__")):
            return False
        if not buffer.flags.c_contiguous or backend.dtype_name(buffer.dtype) == "float16":
            return False
        backend.device_of(buffer).synchronize()
        return True

    def _allreduce_host(self, host: np.ndarray) -> None:
        if host.dtype == np.float16:  # MPI has no half type: sum in float32, round once
            wide = host.astype(np.float32)
            self.comm.Allreduce(self._MPI.IN_PLACE, wide, op=self._MPI.SUM)
            host[...] = wide
            return
        self.comm.Allreduce(self._MPI.IN_PLACE, host, op=self._MPI.SUM)

    def _broadcast_host(self, host: np.ndarray, root: int) -> None:
        if host.dtype == np.float16:
            self.comm.Bcast(host.view(np.uint16), root=root)
            return
        self.comm.Bcast(host, root=root)

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        self._check_root(root)
        return self.comm.bcast(obj, root=root) if self.size > 1 else obj

    def barrier(self) -> None:
        self.comm.Barrier()

    def node_ranks(self) -> tuple[int, int]:
        """(this rank's index among the ranks on its node, how many ranks share the node)."""
        node = self.comm.Split_type(self._MPI.COMM_TYPE_SHARED, key=self.rank)
        try:
            return node.Get_rank(), node.Get_size()
        finally:
            node.Free()
