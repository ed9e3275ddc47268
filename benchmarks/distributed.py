"""All-reduce cost per step against the MLP step, and the scaling from 1 to 2 ranks.

    python benchmarks/distributed.py            # runs every configuration, writes benchmarks/results/distributed.{json,md}

The driver starts each configuration as a separate job, interleaved and repeated (median of
the repeats): one process with 2 BLAS threads (the plain single-process baseline), one process
with 1 thread, and ``mpirun -np 2 python -m mpi4py`` with 1 thread per rank, with the flat
gradient buffer all-reduced as one bucket and in 1 MiB / 256 KiB buckets. Each job trains the
MLP on synthetic data with a fixed global batch (split over the ranks) and reports, per step:
compute (forward, loss, backprop), the gradient all-reduce, the optimizer step; and, measured
separately after a barrier, the all-reduce alone (no waiting for a slower rank).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MODELS = {"mlp784": (784, 512, 512, 10), "digits": (64, 128, 128, 10)}


def worker(args: argparse.Namespace) -> None:
    import numpy as np

    sys.path.insert(0, str(ROOT))
    import gradflow as gf
    import gradflow.distributed as gfd
    from gradflow import layers as L
    from gradflow.losses import SoftmaxCrossEntropy
    from gradflow.optim import Adam

    comm = gfd.init()
    sizes = MODELS[args.model]
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(L.Linear(fan_in, fan_out, rng=i))
        if i < len(sizes) - 2:
            layers.append(L.ReLU())
    model = gf.Sequential(*layers)
    bucket_bytes = None if args.bucket_kb is None else args.bucket_kb * 1024
    net = gfd.DataParallel(model, comm, bucket_bytes=bucket_bytes, overlap=False)  # overlap: benchmarks/overlap.py
    net.allreduce_gradients = lambda: None  # reduced explicitly below, to time it on its own
    optimizer = Adam(net, lr=1e-3)
    loss = SoftmaxCrossEntropy()
    batch = args.global_batch // comm.size
    rng = np.random.default_rng(comm.rank)
    x = rng.normal(size=(batch, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], size=batch)
    times: dict[str, list[float]] = {"compute": [], "allreduce": [], "optimizer": [], "step": []}
    for step in range(args.warmup + args.steps):
        t0 = time.perf_counter()
        output, backprop = net(x, train=True)
        _, delta = loss(output, y)
        optimizer.zero_grad()
        backprop(delta)
        t1 = time.perf_counter()
        net.reducer.reduce(samples=batch)
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if step >= args.warmup:
            for name, value in (("compute", t1 - t0), ("allreduce", t2 - t1), ("optimizer", t3 - t2), ("step", t3 - t0)):
                times[name].append(value)
    alone = []
    for _ in range(args.steps):
        comm.barrier()
        t0 = time.perf_counter()
        net.reducer.reduce(samples=batch)
        alone.append(time.perf_counter() - t0)
    medians = {f"{name}_ms": 1e3 * statistics.median(values) for name, values in times.items()}
    medians["allreduce_after_barrier_ms"] = 1e3 * statistics.median(alone)
    # the slowest rank sets the pace: report the maximum over ranks of each median
    names = sorted(medians)
    maxima = _max_over_ranks(comm, [medians[n] for n in names])
    if comm.is_main:
        result = dict(zip(names, maxima))
        result.update(ranks=comm.size, per_rank_batch=batch, global_batch=args.global_batch,
                      parameters=sum(p.size for p in model.parameters()), buckets=len(net.reducer.buckets),
                      communicator=type(comm).__name__)
        print("RESULT " + json.dumps(result), flush=True)


def _max_over_ranks(comm, values: list[float]) -> list[float]:
    if comm.size == 1:
        return values
    import numpy as np

    table = np.zeros((comm.size, len(values)))
    table[comm.rank] = values
    flat = comm.allreduce(table.reshape(-1))
    return list(flat.reshape(comm.size, len(values)).max(axis=0))


def busy_fraction(seconds: float = 0.5) -> float:
    """Share of the machine's CPU time that was busy during ``seconds`` (Linux /proc/stat)."""
    def sample() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait
    total0, idle0 = sample()
    time.sleep(seconds)
    total1, idle1 = sample()
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_for_quiet(limit: float = 0.15, patience_s: float = 120.0) -> float:
    """Wait (up to ``patience_s``) until other processes use less than ``limit`` of the CPUs; returns the last reading."""
    deadline = time.monotonic() + patience_s
    busy = busy_fraction()
    while busy > limit and time.monotonic() < deadline:
        busy = busy_fraction()
    return busy


def run_job(ranks: int, threads: int, model: str, global_batch: int, bucket_kb: int | None, steps: int,
            patience_s: float) -> dict:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    env.pop("GRADFLOW_COMM", None)
    script = [str(Path(__file__).resolve()), "--worker", "--model", model, "--global-batch", str(global_batch),
              "--steps", str(steps)] + ([] if bucket_kb is None else ["--bucket-kb", str(bucket_kb)])
    if ranks == 1:
        command = [sys.executable, *script]
    else:
        command = ["mpirun", "--allow-run-as-root", "--oversubscribe", "-np", str(ranks), sys.executable, "-m", "mpi4py",
                   *script]
    load = wait_for_quiet(patience_s=patience_s) if Path("/proc/stat").exists() else float("nan")
    job = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    if job.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{job.stdout}\n{job.stderr}")
    line = next(line for line in job.stdout.splitlines() if line.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT "):]), busy_before=load)


def driver(args: argparse.Namespace) -> None:
    configs = [  # (label, ranks, threads per rank, bucket KiB)
        ("1 rank x 2 threads", 1, 2, None),
        ("1 rank x 1 thread", 1, 1, None),
        ("2 ranks x 1 thread, one bucket", 2, 1, None),
        ("2 ranks x 1 thread, 1 MiB buckets", 2, 1, 1024),
        ("2 ranks x 1 thread, 256 KiB buckets", 2, 1, 256),
    ]
    if shutil.which("mpirun") is None:
        raise SystemExit("mpirun not found: apt-get install openmpi-bin libopenmpi-dev")
    results = []
    for model, global_batch in (("mlp784", 256), ("mlp784", 64), ("digits", 32)):
        runs: dict[str, list[dict]] = {label: [] for label, *_ in configs}
        for _ in range(args.repeats):  # interleaved, so drifts of the machine hit every configuration
            for label, ranks, threads, bucket_kb in configs:
                runs[label].append(run_job(ranks, threads, model, global_batch, bucket_kb, args.steps, args.quiet_wait))
        for label, ranks, threads, bucket_kb in configs:
            merged = dict(runs[label][0])
            for key in [k for k in merged if k.endswith("_ms")]:
                merged[key] = statistics.median(r[key] for r in runs[label])
            merged["best_step_ms"] = min(r["step_ms"] for r in runs[label])
            merged["busy_before"] = max(r["busy_before"] for r in runs[label])
            merged.update(label=label, model=model, threads_per_rank=threads, bucket_kb=bucket_kb,
                          samples_per_s=global_batch / (merged["step_ms"] / 1e3),
                          best_samples_per_s=global_batch / (merged["best_step_ms"] / 1e3))
            results.append(merged)
            print(f"{model} B={global_batch:4d} {label:38s} step {merged['step_ms']:7.2f} ms  compute "
                  f"{merged['compute_ms']:7.2f}  allreduce {merged['allreduce_ms']:6.2f} "
                  f"(alone {merged['allreduce_after_barrier_ms']:5.2f})  {merged['samples_per_s']:8.0f} samples/s "
                  f"(best {merged['best_step_ms']:.2f} ms)",
                  flush=True)
    write_results(results, args)


def write_results(results: list[dict], args: argparse.Namespace) -> None:
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    mpi_version = subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    meta = {"command": f"python benchmarks/distributed.py --repeats {args.repeats} --steps {args.steps} "
                       f"--quiet-wait {args.quiet_wait:g}",
            "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}, {platform.platform()}",
            "mpi": mpi_version, "python": platform.python_version(), "timing": "median per step over the steps of a "
            "job, median over interleaved repeated jobs; per-rank values are the slowest rank's",
            "max_busy_before_a_job": max(r["busy_before"] for r in results)}
    (out / "distributed.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1) + "\n")
    lines = ["# Data-parallel step: all-reduce cost and 1 -> 2 rank scaling", "",
             f"Command: `{meta['command']}` (from the repository root; needs mpirun and mpi4py).", "",
             f"Machine: {meta['machine']}; {meta['mpi']}; Python {meta['python']}. {meta['timing']}. "
             f"The machine is shared: before each job the driver waits (up to {args.quiet_wait:g} s) until other processes "
             f"use < 15% of the CPUs; the highest reading was {100 * meta['max_busy_before_a_job']:.0f}%. "
             "Best = the fastest repeat's median step.", "",
             "| model | global batch | configuration | step ms | compute ms | all-reduce ms | all-reduce alone ms "
             "| optimizer ms | samples/s | best step ms | best vs 1 rank x 2 threads | best vs 1 rank x 1 thread |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        same = [b for b in results if b["model"] == r["model"] and b["global_batch"] == r["global_batch"]]
        base2 = next(b for b in same if b["label"] == "1 rank x 2 threads")
        base1 = next(b for b in same if b["label"] == "1 rank x 1 thread")
        lines.append(f"| {r['model']} ({r['parameters']:,} params) | {r['global_batch']} | {r['label']} | "
                     f"{r['step_ms']:.2f} | {r['compute_ms']:.2f} | {r['allreduce_ms']:.2f} | "
                     f"{r['allreduce_after_barrier_ms']:.2f} | {r['optimizer_ms']:.2f} | {r['samples_per_s']:.0f} | "
                     f"{r['best_step_ms']:.2f} | {base2['best_step_ms'] / r['best_step_ms']:.2f}x | "
                     f"{base1['best_step_ms'] / r['best_step_ms']:.2f}x |")
    (out / "distributed.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'distributed.json'} and {out / 'distributed.md'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="mlp784", choices=sorted(MODELS))
    parser.add_argument("--global-batch", type=int, default=256)
    parser.add_argument("--bucket-kb", type=int, default=None)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quiet-wait", type=float, default=120.0,
                        help="seconds to wait before each job for other processes to use < 15%% of the CPUs")
    args = parser.parse_args()
    worker(args) if args.worker else driver(args)


if __name__ == "__main__":
    main()
