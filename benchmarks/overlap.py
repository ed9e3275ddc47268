"""How much of the gradient all-reduce DataParallel hides behind backprop (2 ranks, MPI).

    python benchmarks/overlap.py                 # starts mpirun -np 2 itself; prints and writes
                                                 # benchmarks/results/overlap.{json,md}

Each rank trains the MLP 784-512-512-10 (float32, global batch 256, 1 BLAS thread per rank) with
``DataParallel(bucket_bytes=1 MiB)``, alternating blocks of steps with ``overlap=False`` (the
buckets all-reduced one after another at the end of backprop) and ``overlap=True`` (each bucket
started with ``MPI_Iallreduce`` as soon as its gradients are final). It reports, as medians
over steps of the slower rank: backprop time (model backprop plus the reduction) in both modes,
the reduction alone (timed inside the blocking mode), the time the overlapped mode still waits
at the end, and the share of the all-reduce hidden behind backprop:
``(backprop blocking − backprop overlapped) / all-reduce time``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def worker(args: argparse.Namespace) -> dict:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    from threadpoolctl import threadpool_limits

    import gradflow as gf
    import gradflow.distributed as gfd
    from gradflow import layers as L
    from gradflow.losses import SoftmaxCrossEntropy
    from gradflow.optim import SGD

    threadpool_limits(1)
    comm = gfd.init()
    sizes = (784, 512, 512, 10)
    nets = {}
    for overlap in (False, True):
        layers = []
        for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            layers.append(L.Linear(fan_in, fan_out, rng=i))
            if i < len(sizes) - 2:
                layers.append(L.ReLU())
        model = gfd.DataParallel(gf.Sequential(*layers), comm, bucket_bytes=args.bucket_kb * 1024, overlap=overlap)
        nets[overlap] = (model, SGD(model, lr=0.01, momentum=0.9))
    blocking = nets[False][0]
    reduce_times: list[float] = []
    plain_reduce = blocking.allreduce_gradients

    def timed_reduce() -> None:
        started = time.perf_counter()
        plain_reduce()
        reduce_times.append(time.perf_counter() - started)

    blocking.allreduce_gradients = timed_reduce
    loss = SoftmaxCrossEntropy()
    batch = args.global_batch // comm.size
    rng = np.random.default_rng(comm.rank)
    x = rng.normal(size=(batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=batch)
    backprop_times: dict[bool, list[float]] = {False: [], True: []}
    waits: list[float] = []
    for block in range(args.blocks):
        for overlap in (False, True):
            model, optimizer = nets[overlap]
            for step in range(args.steps_per_block):
                comm.barrier()
                output, backprop = model(x, train=True, input_grad=False)
                _, delta = loss(output, y)
                optimizer.zero_grad()
                started = time.perf_counter()
                backprop(delta)
                elapsed = time.perf_counter() - started
                optimizer.step()
                if block > 0:  # the first block warms up
                    backprop_times[overlap].append(elapsed)
                    if overlap:
                        waits.append(model.reducer.last_wait_seconds)
    skip = args.steps_per_block
    reduce_alone = reduce_times[skip:]
    medians = {"backprop_blocking_ms": statistics.median(backprop_times[False]) * 1e3,
               "backprop_overlapped_ms": statistics.median(backprop_times[True]) * 1e3,
               "allreduce_ms": statistics.median(reduce_alone) * 1e3,
               "overlapped_wait_ms": statistics.median(waits) * 1e3}
    slowest = {k: _max(comm, v) for k, v in medians.items()}
    slowest["hidden_share"] = (slowest["backprop_blocking_ms"] - slowest["backprop_overlapped_ms"]) / slowest["allreduce_ms"]
    slowest["buckets"] = len(blocking.reducer.buckets)
    return slowest


def _max(comm, value: float) -> float:
    import numpy as np

    values = np.zeros(comm.size)
    values[comm.rank] = value
    comm.allreduce(values)
    return float(values.max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--bucket-kb", type=int, default=1024)
    parser.add_argument("--blocks", type=int, default=6)
    parser.add_argument("--steps-per-block", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.worker:
        found = worker(args)
        import gradflow.distributed as gfd

        if gfd.init().rank == 0:
            print(json.dumps(found))
        return
    if shutil.which("mpirun") is None:
        raise SystemExit("benchmarks/overlap.py needs mpirun (Open MPI or MPICH) and mpi4py")
    version = subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout
    flags = ["--allow-run-as-root", "--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []
    command = ["mpirun", *flags, "-np", "2", sys.executable, "-m", "mpi4py", str(Path(__file__).resolve()), "--worker",
               "--global-batch", str(args.global_batch), "--bucket-kb", str(args.bucket_kb), "--blocks", str(args.blocks),
               "--steps-per-block", str(args.steps_per_block)]
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=600)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-2000:])
    found = json.loads(done.stdout.strip().splitlines()[-1])
    found["command"] = "python benchmarks/overlap.py " + " ".join(sys.argv[1:])
    found["date"] = time.strftime("%Y-%m-%d %H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overlap.json").write_text(json.dumps(found, indent=1) + "\n")
    text = ("# DataParallel: all-reduce overlapped with backprop (2 MPI ranks, 1 thread each)\n\n"
            f"Made by `{found['command']}` on {found['date']}. MLP 784-512-512-10, float32, global batch "
            f"{args.global_batch}, {found['buckets']} buckets of >= {args.bucket_kb} KiB; medians over steps, slower rank.\n\n"
            "| backprop + reduction, blocking | backprop + reduction, overlapped | all-reduce alone | "
            "still waited at the end (overlapped) | share of the all-reduce hidden |\n|---|---|---|---|---|\n"
            f"| {found['backprop_blocking_ms']:.2f} ms | {found['backprop_overlapped_ms']:.2f} ms | "
            f"{found['allreduce_ms']:.2f} ms | {found['overlapped_wait_ms']:.2f} ms | **{found['hidden_share']:.0%}** |\n")
    (args.out / "overlap.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
