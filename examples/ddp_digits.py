"""Data-parallel training of the digits MLP: one process per rank, gradients averaged over MPI.

    mpirun -np 2 python -m mpi4py examples/ddp_digits.py             # 2 ranks (add
    #   --allow-run-as-root --oversubscribe to mpirun as root or with more ranks than cores)
    python examples/ddp_digits.py                                     # the same, as 1 process

--batch-size is the global batch: each of N ranks takes batch-size / N samples per step from its
own shard, and the ranks together train on exactly the batches examples/digits_mlp.py uses, so
the test accuracy is the same as one process's (>= 97%), up to float32 rounding.
"""

from __future__ import annotations

import argparse
import time

import gradflow as gf
from gradflow.cli import HelpFormatter, add_blas_threads_argument, blas_threads
import gradflow.distributed as gfd
from gradflow.datasets import digits
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import Adam
from gradflow.train import evaluate, fit

try:
    from digits_mlp import build_model
except ImportError:  # run from elsewhere than examples/
    import importlib.util
    from pathlib import Path

    _spec = importlib.util.spec_from_file_location("digits_mlp", Path(__file__).with_name("digits_mlp.py"))
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    build_model = _module.build_model


def main(argv: list[str] | None = None) -> float | None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto: cuda takes GPU (local rank mod GPUs)")
    parser.add_argument("--comm", default=None, help="single, mpi, nccl or auto (default: $GRADFLOW_COMM or auto)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32, help="global batch size (split over the ranks)")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--bucket-kb", type=int, default=None, help="all-reduce bucket size (default: one buffer)")
    parser.add_argument("--save", default=None, help="write the trained weights here (safetensors, rank 0 only)")
    add_blas_threads_argument(parser)
    args = parser.parse_args(argv)

    device = gfd.default_device() if args.device in ("auto", "cuda") else gf.device(args.device)
    comm = gfd.init(args.comm, device=device)
    if args.batch_size % comm.size:
        parser.error(f"--batch-size {args.batch_size} does not split over {comm.size} ranks")
    data = digits()
    model = gfd.DataParallel(build_model(args.seed).to(device), comm,
                             bucket_bytes=None if args.bucket_kb is None else args.bucket_kb * 1024)
    batches = gfd.DistributedBatchIterator(data.x_train, data.y_train, args.batch_size // comm.size, comm=comm,
                                           seed=args.seed, device=device)
    print(f"rank {comm.rank}: {batches.shard_size} training samples in its shard, {len(batches)} steps per epoch, "
          f"{comm!r} on {device}", flush=True)
    optimizer = Adam(model, lr=args.lr, weight_decay=1e-4)
    model.use_optimizer_buffers(optimizer)  # all-reduce Adam's flat gradient array itself: no extra copy
    started = time.perf_counter()
    with blas_threads(args.blas_threads):
        history = fit(model, SoftmaxCrossEntropy(), optimizer, batches, epochs=args.epochs, seed=args.seed,
                      verbose=comm.is_main)
    train_loss = gfd.reduce_metrics({"loss": history.last("loss")}, comm, weight=batches.shard_size)["loss"]
    if args.save:
        from safetensors.numpy import save_file

        weights = {name: gf.to_numpy(value) for name, value in model.state_dict().items()}
        gfd.save_on_main(save_file, weights, args.save, comm=comm)
    if not comm.is_main:
        return None
    accuracy = evaluate(model, None, (data.x_test, data.y_test))["accuracy"]
    print(f"{comm.size} rank(s), global batch {args.batch_size}: training loss {train_loss:.4f}, "
          f"test accuracy: {accuracy:.2%} ({time.perf_counter() - started:.1f}s)", flush=True)
    return accuracy


if __name__ == "__main__":
    main()
