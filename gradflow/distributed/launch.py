"""Which communicator to use, which GPU a rank takes, and what only rank 0 does.

``init()`` picks the communicator from, in order: the ``kind`` argument, the
``GRADFLOW_COMM`` environment variable (``single``, ``mpi``, ``nccl`` or ``auto``), and, for
``auto``, the job size and the device: one process -> single; several processes on CUDA with
NCCL available and a GPU for each rank of a node -> nccl; otherwise mpi. The job size is read without importing MPI, from the
launcher's environment (Open MPI's ``OMPI_COMM_WORLD_*``, MPICH/PMI's ``PMI_*``) or from
mpi4py when ``python -m mpi4py`` has already initialised it.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

from .. import backend
from ..backend import Device
from .communicator import Communicator, SingleProcessCommunicator

COMM_ENV = "GRADFLOW_COMM"
KINDS = ("auto", "single", "mpi", "nccl")
_WORLD_ENV = (  # (rank, size, local rank) variables set by launchers
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
)


def launched_world() -> tuple[int, int, int]:
    """(rank, size, local rank) of this process as the launcher set them; (0, 1, 0) when alone."""
    mpi = sys.modules.get("mpi4py.MPI")
    if mpi is not None and mpi.Is_initialized() and not mpi.Is_finalized():
        world = mpi.COMM_WORLD
        local = next((os.environ[v[2]] for v in _WORLD_ENV if v[2] in os.environ), None)
        return world.Get_rank(), world.Get_size(), int(local) if local is not None else 0
    for rank_var, size_var, local_var in _WORLD_ENV:
        if size_var in os.environ:
            return int(os.environ.get(rank_var, 0)), int(os.environ[size_var]), int(os.environ.get(local_var, 0))
    return 0, 1, 0


def choose_kind(requested: str, size: int, device_kind: str | None, nccl_ok: Callable[[], bool]) -> str:
    """The communicator kind for a request (``auto``...), a job size and a device kind."""
    kind = requested.strip().lower()
    if kind not in KINDS:
        raise ValueError(f"unknown communicator {requested!r}; expected one of {KINDS} (argument or ${COMM_ENV})")
    if kind != "auto":
        return kind
    if size <= 1:
        return "single"
    return "nccl" if device_kind == "cuda" and nccl_ok() else "mpi"


def default_device() -> Device:
    """This rank's device: ``cuda:(local rank mod GPU count)`` when CuPy sees GPUs, else ``cpu``."""
    count = backend.cuda_device_count()
    if count == 0:
        return backend.device("cpu")
    return backend.device(f"cuda:{launched_world()[2] % count}")


def init(kind: str | None = None, device: "str | Device | None" = None) -> Communicator:
    """A communicator for this job.

    kind: ``"auto"`` (default), ``"single"``, ``"mpi"`` or ``"nccl"``; ``$GRADFLOW_COMM`` is
    used when ``kind`` is None. device: the device the model trains on (decides between NCCL
    and MPI, and is the GPU NCCL binds to; default :func:`default_device` for ``"nccl"``).
    """
    from .nccl import nccl_available

    requested = kind if kind is not None else os.environ.get(COMM_ENV, "auto")
    target = backend.device(device) if device is not None else None
    _, size, _ = launched_world()
    chosen = choose_kind(requested, size, target.kind if target is not None else None, nccl_available)
    if chosen == "single":
        return SingleProcessCommunicator()
    from .mpi import MPICommunicator

    host = MPICommunicator()
    if chosen == "nccl" and requested.strip().lower() == "auto":
        # NCCL refuses two ranks on one GPU: share GPUs through MPI instead
        if host.node_ranks()[1] > backend.cuda_device_count():
            chosen = "mpi"
    if chosen == "mpi":
        return host
    from .nccl import NCCLCommunicator

    return NCCLCommunicator(host, target if target is not None else default_device())


def is_main_process(comm: Communicator | None = None) -> bool:
    """True on rank 0 (of ``comm``, else of the launched job): the rank that prints and saves."""
    if comm is not None:
        return comm.rank == 0
    return launched_world()[0] == 0


def save_on_main(save: Callable[..., Any], *args: Any, comm: Communicator | None = None, **kwargs: Any) -> Any:
    """Call ``save(*args, **kwargs)`` on rank 0 only, then let every rank continue.

    Any callable works (``gradflow.save``, ``np.savez``...). With ``comm``, rank 0 broadcasts
    whether the save succeeded, so the other ranks neither read a half-written checkpoint nor
    carry on after a failed one: they raise too. Without it, rank 0 of the launched job saves
    and nobody waits. Returns ``save``'s result on rank 0 and None elsewhere.
    """
    if comm is None:
        return save(*args, **kwargs) if is_main_process() else None
    result, failure = None, None
    if comm.rank == 0:
        try:
            result = save(*args, **kwargs)
        except BaseException as error:
            failure = error
    message = comm.broadcast_object(None if failure is None else f"{type(failure).__name__}: {failure}", root=0)
    if failure is not None:
        raise failure
    if message is not None:
        raise RuntimeError(f"save_on_main: rank 0 failed to save: {message}")
    return result
