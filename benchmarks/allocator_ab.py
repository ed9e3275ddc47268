"""The CNN step (benchmarks/cnn_step.py, batch 64, float32, 2 threads) with glibc's default
allocator settings vs ``gradflow.backend.keep_freed_memory()``, for gradflow and PyTorch eager,
interleaved in one process; prints median time and minor page faults per step.

    python -m benchmarks.allocator_ab [rounds]

Each round runs every contender in turn: the allocator setting is switched, one untimed step
and 0.1 s of idle time let the other library's threads settle, then four timed steps.
Wall clock is noisy on a shared machine: compare contenders within a run, and read the faults
(deterministic) alongside the times.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

from gradflow import backend

from .cnn_step import build_gradflow_step, build_torch_step
from .timing import limit_threads


def main(rounds: int = 6) -> dict[str, tuple[float, float]]:
    limiter = limit_threads(2)  # noqa: F841  (the limits hold while it lives)
    steps = {"gradflow": build_gradflow_step(64), "torch": build_torch_step(64)}
    contenders = [(library, keep) for library in steps for keep in (False, True)]
    times: dict[tuple, list[float]] = {c: [] for c in contenders}
    faults: dict[tuple, list[int]] = {c: [] for c in contenders}
    for step in steps.values():
        for _ in range(3):
            step()
    try:
        for _ in range(rounds):
            for library, keep in contenders:
                backend.keep_freed_memory(keep)
                step = steps[library]
                step()
                time.sleep(0.1)
                step()
                for _ in range(4):
                    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
                    started = time.perf_counter()
                    step()
                    times[(library, keep)].append(time.perf_counter() - started)
                    faults[(library, keep)].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    finally:
        backend.keep_freed_memory(False)
    summary = {}
    for (library, keep), values in times.items():
        label = f"{library} {'keep_freed_memory' if keep else 'default malloc'}"
        summary[label] = (statistics.median(values), statistics.median(faults[(library, keep)]))
        print(f"{label:30s} {summary[label][0] * 1e3:8.1f} ms/step  {summary[label][1]:6.0f} minor faults/step")
    return summary


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 6)
