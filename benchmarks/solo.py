"""Time one benchmark contender alone, in a process of its own, with a fixed thread count.

    python -m benchmarks.solo --spec '{"kind": "mlp", "contender": "torch", "batch": 256}' --threads 2

The suite (benchmarks/run.py) confirms every interleaved time with this: the child process
imports only what its contender needs, sets ``OMP_NUM_THREADS``, ``OPENBLAS_NUM_THREADS``,
``MKL_NUM_THREADS`` (and the other pool-size variables) to the thread count before any library
loads, caps the pools again with threadpoolctl and ``torch.set_num_threads``, warms up, and
times ``rounds`` blocks of steps. No other library's threads exist in that process, so nothing
can spin on the cores the contender needs.

A spec names the contender:
  * ``{"kind": "mlp", "contender": "gradflow"|"numpy"|"torch"|"gemm_only"|"cupy", "batch": B,
    "optimizer": "sgd", "device": "cpu", "sizes": [784, 512, 512, 10]}``
  * ``{"kind": "slot", "module": "benchmarks.cnn_step", "workload": "cnn",
    "contender": "gradflow", "batch": 64}`` (a workload of :func:`benchmarks.run.discover_slot`).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.timing import THREAD_VARIABLES

ROOT = Path(__file__).resolve().parent.parent


def build(spec: dict[str, Any]) -> tuple[Callable[[], Any], Callable[[], None]]:
    """The contender's zero-argument step and its synchronize (a no-op on the CPU)."""
    kind = spec.get("kind")
    if kind == "mlp":
        from benchmarks import mlp_step, run

        sizes = tuple(spec.get("sizes", mlp_step.SIZES))
        steps = run.build_mlp_contenders([spec["contender"]], int(spec["batch"]), spec.get("optimizer", "sgd"),
                                         spec.get("device", "cpu"), sizes)
        step = steps[spec["contender"]]
    elif kind == "slot":
        from benchmarks import run

        workloads, why, _ = run.discover_slot(spec["module"])
        if why:
            raise RuntimeError(why)
        step = workloads[spec["workload"]][spec["contender"]](int(spec["batch"]))
    else:
        raise ValueError(f"unknown contender kind {kind!r}; expected 'mlp' or 'slot'")
    return step, getattr(step, "synchronize", None) or (lambda: None)


def time_alone(spec: dict[str, Any], *, rounds: int, block_seconds: float, warmup: int = 3,
               faults: list[float] | None = None) -> list[float]:
    """Seconds per step, one value per block of ``block_seconds``, after ``warmup`` steps.
    ``faults``: a list that receives the minor page faults per timed step (this process)."""
    step, sync = build(spec)
    for _ in range(max(warmup, 1)):
        step()
    sync()
    started = time.perf_counter()
    step()
    sync()
    per_block = max(1, int(block_seconds / max(time.perf_counter() - started, 1e-6)))
    times = []
    before = _minor_faults()
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(per_block):
            step()
        sync()
        times.append((time.perf_counter() - started) / per_block)
    if faults is not None:
        faults.append((_minor_faults() - before) / (rounds * per_block))
    return times


def _minor_faults() -> float:
    try:
        import resource
    except ImportError:
        return float("nan")
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)


def child_environment(threads: int) -> dict[str, str]:
    """The parent's environment with every thread-pool size set to ``threads`` and this checkout
    first on PYTHONPATH (OPENBLAS_CORETYPE and the like pass through unchanged)."""
    env = dict(os.environ)
    for name in THREAD_VARIABLES:
        env[name] = str(threads)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


def run_solo(spec: dict[str, Any], *, threads: int, rounds: int, block_seconds: float,
             timeout: float = 300.0) -> dict[str, Any]:
    """Time ``spec`` alone in a child process. ``{"ms": median, "iqr_ms": [q1, q3]}``, or
    ``{"status": "failed: ..."}`` (the suite reports it and goes on)."""
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder) / "solo.json"
        command = [sys.executable, "-m", "benchmarks.solo", "--spec", json.dumps(spec), "--threads", str(threads),
                   "--rounds", str(rounds), "--block-seconds", str(block_seconds), "--out", str(out)]
        try:
            done = subprocess.run(command, env=child_environment(threads), cwd=ROOT, capture_output=True,
                                  text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return {"status": f"failed: timed out after {timeout:.0f} s"}
        if done.returncode != 0 or not out.exists():
            return {"status": f"failed: {done.stderr.strip()[-400:]}"}
        found = json.loads(out.read_text())
    return dict(summarize(found["seconds"]), minor_faults_per_step=found.get("minor_faults_per_step"))


def summarize(times: list[float]) -> dict[str, Any]:
    ordered = sorted(times)
    quartiles = statistics.quantiles(ordered, n=4) if len(ordered) >= 4 else [ordered[0], 0, ordered[-1]]
    return {"status": "ok", "ms": statistics.median(ordered) * 1e3,
            "iqr_ms": [quartiles[0] * 1e3, quartiles[2] * 1e3], "blocks": len(ordered)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.solo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", required=True, help="the contender, as JSON (see above)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--block-seconds", type=float, default=0.1)
    parser.add_argument("--out", type=Path, default=None, help="write {'seconds': [...]} here (else print)")
    args = parser.parse_args(argv)
    for name in THREAD_VARIABLES:  # for libraries not yet loaded (run as a module, they are not)
        os.environ[name] = str(args.threads)
    from benchmarks.timing import limit_threads

    spec = json.loads(args.spec)
    limiter = limit_threads(args.threads) if spec.get("contender") == "torch" else _limit_blas(args.threads)
    faults: list[float] = []
    try:
        times = time_alone(spec, rounds=args.rounds, block_seconds=args.block_seconds, faults=faults)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()
    text = json.dumps({"spec": spec, "threads": args.threads, "seconds": times, "minor_faults_per_step": faults[0]})
    if args.out is None:
        print(text)
    else:
        args.out.write_text(text)
    return 0


def _limit_blas(threads: int) -> Any:
    """threadpoolctl's cap without importing torch (a NumPy contender's process stays torch-free)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return None
    return threadpool_limits(limits=threads)


if __name__ == "__main__":
    raise SystemExit(main())
