"""Data-parallel training over MPI (CPU, CUDA-aware MPI) or NCCL (GPUs), one process per device.

    import gradflow.distributed as gfd

    comm = gfd.init()                                   # single, mpi or nccl: chosen for you
    model = gfd.DataParallel(build_model(), comm)       # rank 0's parameters everywhere
    batches = gfd.DistributedBatchIterator(x, y, batch_size=32, comm=comm)
    fit(model, loss, optimizer, batches, epochs=20)     # or your own loop
    gfd.save_on_main(save, model, "model.safetensors", comm=comm)

Launch: ``mpirun -np 2 python -m mpi4py train.py``. Without mpirun the same script runs as
one process. mpi4py and CuPy are imported only when a communicator needs them.
"""

from .communicator import Communicator, SingleProcessCommunicator
from .data import DistributedBatchIterator
from .gradients import GradientReducer, allreduce_gradients, broadcast_parameters
from .launch import choose_kind, default_device, init, is_main_process, launched_world, save_on_main
from .parallel import DataParallel, reduce_metrics


def __getattr__(name: str):  # the MPI and NCCL classes, without importing mpi4py or CuPy
    if name in ("MPICommunicator", "cuda_aware_mpi"):
        from . import mpi

        return getattr(mpi, name)
    if name in ("NCCLCommunicator", "nccl_available"):
        from . import nccl

        return getattr(nccl, name)
    raise AttributeError(f"module 'gradflow.distributed' has no attribute {name!r}")


__all__ = [
    "Communicator", "SingleProcessCommunicator", "MPICommunicator", "NCCLCommunicator",
    "DistributedBatchIterator", "GradientReducer", "allreduce_gradients", "broadcast_parameters",
    "DataParallel", "reduce_metrics", "init", "choose_kind", "default_device", "is_main_process",
    "launched_world", "save_on_main", "cuda_aware_mpi", "nccl_available",
]
