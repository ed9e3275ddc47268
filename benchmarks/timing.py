"""Fair timing in one process: equal thread counts, warm-up, interleaved rounds, medians.

Contenders run in short blocks, one after another in a rotating order, for several rounds; each
round gives one time per step per contender, and ratios are taken within a round (so a noisy
neighbour slows every contender of that round alike) before taking the median over rounds.

Before each block the process sleeps ``pause`` seconds: a BLAS or OpenMP pool whose work just
ended keeps its threads spinning for a while (OpenBLAS ~2^28 cycles, about 0.1 s; libgomp's
spin count), and those spinning threads would otherwise take the cores from the next contender
(measured on 2 cores: PyTorch's MLP step looked 2-3x slower run right after NumPy's). The suite
confirms each interleaved time against the same contender timed alone in its own process
(:mod:`benchmarks.solo`).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OPENBLAS_VARIABLES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
#: Environment variables that size the thread pools of OpenMP, OpenBLAS, MKL and numexpr-style
#: libraries; a solo child process gets every one of them set to the thread count.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS",
                    "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")
#: Idle seconds before each interleaved block: longer than OpenBLAS's and libgomp's spin-wait,
#: so one library's spinning threads are not charged to the next contender.
DEFAULT_PAUSE = 0.2


def limit_threads(threads: int) -> Any:
    """Cap BLAS/OpenMP pools (threadpoolctl) and torch's intra-op pool at ``threads``.

    Returns the threadpoolctl limiter (keep a reference for the limits to hold), or None when
    threadpoolctl is missing (then only torch is capped).
    """
    limiter = None
    try:
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=threads)
    except ImportError:
        pass
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    return limiter


def environment(threads: int) -> dict[str, Any]:
    """What the numbers depend on: versions, BLAS, threads, OpenBLAS variables, load."""
    import numpy as np

    from gradflow import backend

    info: dict[str, Any] = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "libraries": backend.library_versions(),
        "blas": backend.blas_info(),
        "openblas_variables": {name: os.environ.get(name) for name in OPENBLAS_VARIABLES},
        "load_average_start": _load(),
        "numpy": np.__version__,
    }
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load() -> list[float] | None:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


@dataclass
class Timing:
    """Seconds per step, one entry per round, for each contender."""

    per_round: dict[str, list[float]] = field(default_factory=dict)
    steps_per_block: int = 1

    def median(self, name: str) -> float:
        return statistics.median(self.per_round[name])

    def ratio(self, name: str, baseline: str) -> float:
        """Median over rounds of (name's time / baseline's time) within the same round."""
        pairs = zip(self.per_round[name], self.per_round[baseline])
        return statistics.median(a / b for a, b in pairs)

    def ratio_spread(self, name: str, baseline: str) -> tuple[float, float]:
        """Interquartile range of the per-round ratios (how much the ratio moved between rounds)."""
        values = sorted(a / b for a, b in zip(self.per_round[name], self.per_round[baseline]))
        if len(values) < 4:
            return values[0], values[-1]
        q = statistics.quantiles(values, n=4)
        return q[0], q[2]

    def spread(self, name: str) -> tuple[float, float]:
        """Interquartile range of the per-round times."""
        values = sorted(self.per_round[name])
        if len(values) < 4:
            return values[0], values[-1]
        q = statistics.quantiles(values, n=4)
        return q[0], q[2]


def time_interleaved(
    steps: dict[str, Callable[[], Any]],
    *,
    rounds: int = 15,
    block_seconds: float = 0.08,
    warmup: int = 3,
    synchronize: dict[str, Callable[[], None]] | None = None,
    pause: float = DEFAULT_PAUSE,
) -> Timing:
    """Time each zero-argument ``step`` in interleaved blocks; see the module docstring.

    Every contender runs the same number of steps per block, chosen so that the slowest one's
    block lasts about ``block_seconds``. ``synchronize[name]`` (a GPU wait) runs before the
    clock stops. ``pause``: idle seconds before every block (0 for none), so that no contender
    pays for the previous one's spinning threads.
    """
    sync = synchronize or {}
    names = list(steps)
    slowest = 0.0
    for name in names:
        if pause > 0:
            time.sleep(pause)
        for _ in range(max(warmup, 1)):
            steps[name]()
        sync.get(name, _nothing)()
        started = time.perf_counter()
        steps[name]()
        sync.get(name, _nothing)()
        slowest = max(slowest, time.perf_counter() - started)
    per_block = max(1, int(block_seconds / max(slowest, 1e-6)))
    timing = Timing({name: [] for name in names}, per_block)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            step, wait = steps[name], sync.get(name, _nothing)
            if pause > 0:
                time.sleep(pause)
            started = time.perf_counter()
            for _ in range(per_block):
                step()
            wait()
            timing.per_round[name].append((time.perf_counter() - started) / per_block)
    return timing


def flagged(interleaved: float, solo: float | None, tolerance: float = 0.15) -> bool:
    """Whether an interleaved time is more than ``tolerance`` (15%) off the solo time."""
    return solo is not None and solo > 0 and abs(interleaved / solo - 1.0) > tolerance


def _nothing() -> None:
    return None


def best_of(function: Callable[[], Any], *, number: int, repeat: int = 7) -> float:
    """Fastest mean seconds per call over ``repeat`` runs of ``number`` calls (for overheads,
    where the floor is the quantity of interest)."""
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(number):
            function()
        best = min(best, (time.perf_counter() - started) / number)
    return best


def best_of_pair(first: Callable[[], Any], second: Callable[[], Any], *, number: int,
                 repeat: int = 9) -> tuple[float, float]:
    """:func:`best_of` for two functions in alternating blocks (first, second, first, ...), so
    that a slow spell of the machine falls on both rather than on whichever ran then."""
    best = [float("inf"), float("inf")]
    for _ in range(repeat):
        for k, function in enumerate((first, second)):
            started = time.perf_counter()
            for _ in range(number):
                function()
            best[k] = min(best[k], (time.perf_counter() - started) / number)
    return best[0], best[1]
