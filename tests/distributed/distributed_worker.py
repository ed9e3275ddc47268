"""The program tests/distributed/test_distributed.py starts under ``mpirun -np 2 python -m mpi4py``.

    python -m mpi4py tests/distributed/distributed_worker.py train OUT_DIR   # trains, dumps every rank's state
    python -m mpi4py tests/distributed/distributed_worker.py raise OUT_DIR   # rank 1 raises mid-training
    python -m mpi4py tests/distributed/distributed_worker.py train OUT_DIR cuda   # on each rank's GPU (gfd.default_device())

The training functions are also imported by the tests to compute the single-process reference.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

import gradflow as gf
import gradflow.distributed as gfd
from gradflow import layers as L
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import SGD, Adam
from gradflow.train import fit


def dataset(n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = rng.normal(size=(n, 6))
    y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64) + (x[:, 3] > 1).astype(np.int64)
    return x, y


def model(seed: int, device: "str | gf.Device" = "cpu") -> gf.Sequential:
    return gf.Sequential(L.Linear(6, 16, rng=seed), L.ReLU(), L.Linear(16, 3, rng=seed + 1)).to(device, "float64")


def train_loop(comm: gfd.Communicator, batch_per_rank: int, epochs: int = 3, n: int = 205,
               device: "str | gf.Device" = "cpu", shared: bool = False) -> tuple[gf.Sequential, float]:
    """Hand-written loop with DataParallel (float64, Adam). The model starts from rank-dependent
    weights, so only the start-up broadcast makes the ranks agree. Returns the model and the
    training loss of the last epoch averaged over all samples of all ranks. shared: DataParallel
    all-reduces the optimizer's flat gradient arrays in place."""
    x, y = dataset(n)
    net = gfd.DataParallel(model(100 + comm.rank, device), comm, bucket_bytes=512)
    optimizer = Adam(net, lr=1e-2)
    if shared:
        net.use_optimizer_buffers(optimizer)
    loss = SoftmaxCrossEntropy()
    batches = gfd.DistributedBatchIterator(x, y, batch_per_rank, comm=comm, seed=3, dtype="float64", device=device)
    last = 0.0
    for _ in range(epochs):
        total, seen = 0.0, 0
        for xb, yb in batches:
            output, backprop = net(xb, train=True)
            value, delta = loss(output, yb)
            optimizer.zero_grad()
            backprop(delta)
            optimizer.step()
            total += float(gf.to_numpy(value)) * xb.shape[0]
            seen += xb.shape[0]
        last = gfd.reduce_metrics({"loss": total / seen}, comm, weight=seen)["loss"]
    return net.module, last


def train_fit(comm: gfd.Communicator, batch_per_rank: int, epochs: int = 2, n: int = 200,
              device: "str | gf.Device" = "cpu") -> gf.Sequential:
    """gradflow.train.fit with the ``before_step`` hook calling allreduce_gradients (SGD + momentum)."""
    x, y = dataset(n)
    net = model(200 + comm.rank, device)
    gfd.broadcast_parameters(net, comm)
    optimizer = SGD(net, lr=0.05, momentum=0.9)
    batches = gfd.DistributedBatchIterator(x, y, batch_per_rank, comm=comm, seed=4, dtype="float64", device=device)
    fit(net, SoftmaxCrossEntropy(), optimizer, batches, epochs=epochs, verbose=False,
        before_step=lambda: gfd.allreduce_gradients(net, comm))
    return net


def flat_parameters(net: gf.Layer) -> np.ndarray:
    return np.concatenate([gf.to_numpy(p.value).ravel() for p in net.parameters()])


def main(mode: str, out: Path, device_name: str = "cpu") -> None:
    device = gfd.default_device() if device_name == "cuda" else gf.device(device_name)
    comm = gfd.init(device=device)
    if mode == "train":
        net, last_loss = train_loop(comm, batch_per_rank=10, device=device)
        np.save(out / f"loop_rank{comm.rank}.npy", flat_parameters(net))
        np.save(out / f"shared_rank{comm.rank}.npy",
                flat_parameters(train_loop(comm, batch_per_rank=10, device=device, shared=True)[0]))
        np.save(out / f"fit_rank{comm.rank}.npy", flat_parameters(train_fit(comm, batch_per_rank=10, device=device)))

        def save(path: Path) -> str:
            (out / f"saved_by_rank{comm.rank}").write_text("")
            np.save(path, flat_parameters(net))
            return "saved"

        result = gfd.save_on_main(save, out / "checkpoint.npy", comm=comm)
        half = comm.allreduce(np.full(3, 1.5, dtype=np.float16))
        shared = comm.broadcast(np.full(2, comm.rank + 0.25, dtype=np.float16), root=1)
        (out / f"report_rank{comm.rank}.json").write_text(json.dumps({
            "communicator": repr(comm), "last_loss": last_loss, "save_result": result,
            "is_main_process": gfd.is_main_process(), "float16_sum": half.tolist(),
            "float16_broadcast": shared.tolist(),
        }))
    elif mode == "raise":
        net, _ = train_loop(comm, batch_per_rank=10, epochs=1)
        if comm.rank == 1:
            raise RuntimeError("rank 1 fails on purpose")
        train_loop(comm, batch_per_rank=10, epochs=1)  # rank 0 waits in an all-reduce that never completes
        (out / "rank0_finished").write_text("")
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), *sys.argv[3:])
