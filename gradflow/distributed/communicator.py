"""The communicator interface, host staging, and the single-process communicator.

A communicator runs collectives over the ranks (processes) of one job. Array collectives work
in place on an array of any gradflow device, and every rank must call them in the same order::

    comm.allreduce(buffer)            # buffer <- the sum of every rank's buffer
    request = comm.iallreduce(buffer) # the same, started; request.wait() before using buffer
    comm.broadcast(buffer, root=0)    # buffer <- root's buffer
    comm.allreduce_floats([a, b])     # host floats summed over ranks -> [a_sum, b_sum]
    comm.broadcast_object(obj, 0)     # any picklable object from root
    comm.barrier()

Implementations: :class:`SingleProcessCommunicator` (here, every collective is the identity),
:class:`~gradflow.distributed.mpi.MPICommunicator` and
:class:`~gradflow.distributed.nccl.NCCLCommunicator`. A subclass only has to supply the host
primitives ``_allreduce_host``/``_broadcast_host`` on contiguous NumPy arrays; arrays of other
devices are staged through the host by :meth:`Communicator._on_host` (an explicit copy each way).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np  # host staging buffers only: MPI reads and writes NumPy memory

from .. import backend
from ..backend import Array


class Request:
    """A collective that was started and may still be running (see :meth:`Communicator.iallreduce`).

    ``wait()`` blocks until it is done (then its buffer holds the result); ``test()`` lets it
    make progress and says whether it is done. Waiting twice is harmless.
    """

    def __init__(self, finish: Callable[[], None] | None = None, poll: Callable[[], bool] | None = None):
        self._finish, self._poll = finish, poll

    def wait(self) -> None:
        """Block until the operation has finished (harmless when called again)."""
        finish, self._finish = self._finish, None
        if finish is not None:
            finish()

    def test(self) -> bool:
        """True when the operation has finished (polls it without blocking)."""
        if self._finish is None:
            return True
        return bool(self._poll()) if self._poll is not None else False


class Communicator:
    """Collectives over the ranks of a job. ``rank`` is this process's index, ``size`` their number."""

    name = "communicator"

    def __init__(self, rank: int = 0, size: int = 1):
        if not 0 <= rank < size:
            raise ValueError(f"{type(self).__name__}: rank must be in [0, {size}), got {rank}")
        self.rank = int(rank)
        self.size = int(size)
        self._reducers: dict[Any, Any] = {}  # GradientReducers cached per parameter list

    @property
    def is_main(self) -> bool:
        """True on rank 0, the rank that prints and writes checkpoints."""
        return self.rank == 0

    def __repr__(self) -> str:
        return f"{type(self).__name__}(rank={self.rank}, size={self.size})"

    # -- array collectives (in place) -------------------------------------------------------
    def allreduce(self, buffer: Array) -> Array:
        """Replace ``buffer`` by the element-wise sum over all ranks, in place; returns it."""
        if self.size > 1:
            self._on_host(buffer, self._allreduce_host)
        return buffer

    def iallreduce(self, buffer: Array) -> Request:
        """Start replacing ``buffer`` by the sum over all ranks; returns a :class:`Request` to
        ``wait()`` on before ``buffer`` is read or written. Every rank must start the same
        collectives in the same order. Communicators that cannot overlap (this default) run
        the blocking :meth:`allreduce` and return a finished request."""
        self.allreduce(buffer)
        return Request()

    def broadcast(self, buffer: Array, root: int = 0) -> Array:
        """Replace ``buffer`` by rank ``root``'s buffer, in place; returns it."""
        self._check_root(root)
        if self.size > 1:
            self._on_host(buffer, lambda host: self._broadcast_host(host, root))
        return buffer

    # -- host collectives --------------------------------------------------------------------
    def allreduce_floats(self, values: Sequence[float]) -> list[float]:
        """Sum each value over all ranks (in float64 on the host)."""
        host = np.array([float(v) for v in values], dtype=np.float64)
        if self.size > 1 and host.size:
            self._allreduce_host(host)
        return [float(v) for v in host]

    def broadcast_object(self, obj: Any, root: int = 0) -> Any:
        """Rank ``root``'s ``obj`` (pickled), returned on every rank."""
        self._check_root(root)
        return obj

    def barrier(self) -> None:
        """Wait until every rank has reached this call."""

    def close(self) -> None:
        """Release the communicator's resources (a no-op where there are none)."""

    # -- for subclasses ------------------------------------------------------------------------
    def _allreduce_host(self, host: np.ndarray) -> None:
        """Sum a contiguous, writable NumPy array over all ranks, in place."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _allreduce_host")

    def _broadcast_host(self, host: np.ndarray, root: int) -> None:
        """Overwrite a contiguous, writable NumPy array with root's, in place."""
        raise NotImplementedError(f"{type(self).__name__} does not implement _broadcast_host")

    def _on_host(self, buffer: Array, operation: Callable[[np.ndarray], None]) -> None:
        """Run ``operation`` on ``buffer`` itself when it is a contiguous NumPy array, else on a
        host copy that is written back (``buffer[...] = ...``) afterwards."""
        if not backend.is_array(buffer):
            raise TypeError(f"{type(self).__name__}: expected an array, got {type(buffer).__name__}")
        if isinstance(buffer, np.ndarray) and buffer.flags.c_contiguous and buffer.flags.writeable:
            operation(buffer)
            return
        device = backend.device_of(buffer)
        host = np.array(backend.to_numpy(buffer), copy=True, order="C")
        operation(host)
        with device:  # CuPy: the write-back is a kernel on the buffer's GPU
            buffer[...] = device.send(host, buffer.dtype)

    def _check_root(self, root: int) -> None:
        if not 0 <= root < self.size:
            raise ValueError(f"{type(self).__name__}: root must be in [0, {self.size}), got {root}")


class SingleProcessCommunicator(Communicator):
    """One rank: every collective leaves its data as it is. The default outside ``mpirun``."""

    name = "single"

    def __init__(self) -> None:
        super().__init__(0, 1)
