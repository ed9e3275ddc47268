"""gradflow's benchmark suite: training steps timed against hand-written array code and PyTorch.

    python -m benchmarks                       # full run, ~5-7 minutes on 2 cores
    python -m benchmarks --optimizer adam      # Adam instead of SGD with momentum
    python -m benchmarks --quick               # tiny settings (what the test suite runs)
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m benchmarks   # OpenBLAS's own tuning

Writes benchmarks/results/benchmarks.{json,md,png}; each states the command that made it.
Every step time is taken twice (fair timing): interleaved with the other contenders in this
process, with ``--pause`` idle seconds before every block so that one library's spinning
BLAS/OpenMP threads are not charged to the next, and alone in a child process of its own with
the same thread count (benchmarks/solo.py; ``--no-solo`` skips it). The tables give both, and
flag any contender whose interleaved time is more than 15% off its solo time.
What is measured (contenders interleaved, equal thread counts):
  * MLP 784-512-512-10 training step (forward + backward + update, float32, softmax
    cross-entropy) at batch 64, 256, 1024: gradflow, a hand-written NumPy baseline, PyTorch CPU
    eager, and the step's GEMMs alone (a floor); on a GPU also gradflow, CuPy and PyTorch CUDA.
  * CNN and LSTM/transformer steps from benchmarks/cnn_step.py and benchmarks/sequence_steps.py
    when those modules exist ("not available" otherwise).
  * Array operations per step (gradflow vs the baseline), peak memory per step, memory growth
    over 1,000 steps, float64 results in a float32 step, per-layer-call framework overhead, and
    a profile of where gradflow's step spends its time.
When OPENBLAS_CORETYPE or OPENBLAS_L2_SIZE is set, the MLP timings are repeated in a child
process with both unset, and both are reported.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import measure, mlp_step, report, solo
from benchmarks.timing import (DEFAULT_PAUSE, OPENBLAS_VARIABLES, environment, flagged, limit_threads,
                               time_interleaved)

RESULTS = Path(__file__).resolve().parent / "results"
SLOT_MODULES = {"cnn": "benchmarks.cnn_step", "sequence": "benchmarks.sequence_steps"}
TARGETS = {
    "numpy_ratio": 1.05,        # gradflow step time / hand-written NumPy step time
    "torch_ratio": 1.0,         # gradflow step time / PyTorch eager step time (must be below)
    "overhead_us": 5.0,         # framework µs per layer call on top of the array work
    "operations_ratio": 1.2,    # array operations per step, gradflow / baseline
    "growth_bytes": 64 * 1024,  # traced bytes held after 1,000 steps vs after 100
}


# --------------------------------------------------------------------------------------------
# Which contenders run where (pure functions: the tests check the GPU dispatch without a GPU)
# --------------------------------------------------------------------------------------------


def available_devices(requested: str, cuda_count: int) -> list[str]:
    """``"auto"``: the CPU, plus ``"cuda"`` when CuPy sees a GPU. ``"cpu"``/``"cuda"``: that one."""
    if requested == "auto":
        return ["cpu", "cuda"] if cuda_count > 0 else ["cpu"]
    if requested == "cuda" and cuda_count == 0:
        raise SystemExit("--device cuda: CuPy sees no GPU here (try --device auto)")
    return [requested]


def plan_contenders(device: str, *, torch_available: bool, torch_cuda: bool) -> list[str]:
    """The contenders timed for the MLP step on ``device`` (``"cpu"`` or ``"cuda"``)."""
    if device == "cpu":
        return ["gradflow", "numpy"] + (["torch"] if torch_available else []) + ["gemm_only"]
    if device == "cuda":
        return ["gradflow", "cupy"] + (["torch"] if torch_cuda else [])
    raise ValueError(f"unknown benchmark device {device!r}")


def build_mlp_contenders(names: list[str], batch: int, optimizer: str, device: str,
                         sizes: tuple[int, ...]) -> dict[str, Callable[[], Any]]:
    builders: dict[str, Callable[[], Callable[[], Any]]] = {
        "gradflow": lambda: mlp_step.build_gradflow_step(batch, optimizer=optimizer, device=device, sizes=sizes),
        "numpy": lambda: mlp_step.build_numpy_step(batch, optimizer=optimizer, sizes=sizes),
        "cupy": lambda: mlp_step.build_numpy_step(batch, optimizer=optimizer, xp=_cupy(), sizes=sizes),
        "torch": lambda: mlp_step.build_torch_step(batch, optimizer=optimizer, device=device, sizes=sizes),
        "gemm_only": lambda: measure.gemm_only_step(batch, sizes),
    }
    return {name: builders[name]() for name in names}


def _cupy() -> Any:
    import cupy

    return cupy


def _torch_status() -> tuple[bool, bool]:
    try:
        import torch
    except ImportError:
        return False, False
    return True, bool(torch.cuda.is_available())


# --------------------------------------------------------------------------------------------
# Optional workloads from the other helpers' modules
# --------------------------------------------------------------------------------------------

_BUILDER = re.compile(r"^build_(gradflow|torch|numpy)(?:_(\w+?))?_step$")


def discover_slot(module_name: str) -> tuple[dict[str, dict[str, Callable]], str | None, tuple[int, ...]]:
    """``({workload: {contender: builder}}, why not available, batches)`` for a slot module.

    A module offers ``build_gradflow_step(batch)``/``build_torch_step(batch)`` (one workload)
    or ``build_gradflow_<name>_step(batch)``/``build_torch_<name>_step(batch)`` (several), or
    ``SLOT_BUILDERS = {workload: {contender: build(batch)}}``, and optionally ``BATCHES``.
    """
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name == module_name:
            return {}, f"not available ({module_name.replace('.', '/')}.py is not in this checkout)", ()
        return {}, f"not available (importing {module_name} failed: {error})", ()
    except Exception as error:  # a broken peer module must not stop the suite
        return {}, f"not available (importing {module_name} failed: {type(error).__name__}: {error})", ()
    workloads: dict[str, dict[str, Callable]] = {
        name: dict(builders) for name, builders in getattr(module, "SLOT_BUILDERS", {}).items()}
    default = module_name.rsplit(".", 1)[-1].replace("_steps", "").replace("_step", "")
    for attribute in sorted(dir(module)) if not workloads else ():
        match = _BUILDER.match(attribute)
        if match:
            workloads.setdefault(match.group(2) or default, {})[match.group(1)] = getattr(module, attribute)
    if not workloads:
        return {}, f"not available ({module_name} defines no build_<contender>[_<name>]_step functions)", ()
    batches = tuple(getattr(module, "BATCHES", (32,)))
    return workloads, None, batches


def confirm_solo(entry: dict[str, Any], specs: dict[str, dict[str, Any]], fair: dict[str, Any] | None) -> None:
    """Time each contender of ``entry`` alone (``fair``: threads, rounds, block_seconds; None
    skips), and add ``solo_ms``, ``solo`` (each contender's outcome), ``flagged`` (contenders
    whose interleaved time is more than 15% off the solo one) and ``solo_ratios``."""
    if fair is None:
        return
    outcomes = {name: solo.run_solo(spec, **fair) for name, spec in specs.items()}
    entry["solo"] = outcomes
    entry["solo_ms"] = {name: o["ms"] for name, o in outcomes.items() if o["status"] == "ok"}
    entry["flagged"] = sorted(name for name, ms in entry["solo_ms"].items() if flagged(entry["ms"][name], ms))
    entry["solo_ratios"] = {key: entry["solo_ms"][key.split("/")[0]] / entry["solo_ms"][key.split("/")[1]]
                            for key in entry["ratios"]
                            if key.split("/")[0] in entry["solo_ms"] and key.split("/")[1] in entry["solo_ms"]}


def run_slot(module_name: str, rounds: int, block_seconds: float, quick: bool, pause: float = DEFAULT_PAUSE,
             fair: dict[str, Any] | None = None) -> dict[str, Any]:
    workloads, why, batches = discover_slot(module_name)
    if why:
        return {"status": why}
    if quick:
        batches = batches[:1]
    results: dict[str, Any] = {"status": "ok", "workloads": {}}
    for workload, builders in workloads.items():
        for batch in batches:
            key = f"{workload} (batch {batch})"
            try:
                steps = {name: build(batch) for name, build in builders.items()}
                # Steps of tens of ms need blocks of several steps: alternating single steps lets
                # each library's spinning BLAS/OpenMP threads slow the other (measured: PyTorch's
                # CNN step went from 17 to 41 ms), which flatters whichever runs second.
                # --quick (the test suite) checks that the slot runs and reports, not its figures.
                block = block_seconds if quick else max(block_seconds, 0.25)
                timing = time_interleaved(steps, rounds=rounds, block_seconds=block, pause=pause)
            except Exception as error:
                results["workloads"][key] = {"status": f"failed: {type(error).__name__}: {error}"}
                continue
            entry = {"status": "ok", "ms": {n: timing.median(n) * 1e3 for n in steps}, "ratios": {}}
            for other in ("numpy", "torch"):
                if "gradflow" in steps and other in steps:
                    entry["ratios"][f"gradflow/{other}"] = timing.ratio("gradflow", other)
            del steps
            specs = {name: {"kind": "slot", "module": module_name, "workload": workload, "contender": name,
                            "batch": batch} for name in builders}
            confirm_solo(entry, specs,
                         None if fair is None else dict(fair, block_seconds=max(fair["block_seconds"], 0.25)))
            explain_miss(entry, workload, builders, specs, batch, fair)
            results["workloads"][key] = entry
    return results


def explain_miss(entry: dict[str, Any], workload: str, builders: dict[str, Callable], specs: dict[str, Any],
                 batch: int, fair: dict[str, Any] | None) -> None:
    """For a workload that misses its PyTorch target (interleaved or solo): gradflow and PyTorch
    each timed alone at 1 thread as well (``solo_1_thread_ms``; how much of the gap is PyTorch
    using the second thread for work NumPy does on one), and a cProfile of gradflow's step
    (``profile``: the functions with the most own time)."""
    limit = SLOT_TARGETS.get(workload)
    if fair is None or limit is None or "gradflow/torch" not in entry["ratios"]:
        return
    ratios = [entry["ratios"]["gradflow/torch"], entry.get("solo_ratios", {}).get("gradflow/torch", 0.0)]
    if max(ratios) <= limit:
        return
    one = dict(fair, threads=1, block_seconds=max(fair["block_seconds"], 0.25))
    outcomes = {name: solo.run_solo(specs[name], **one) for name in ("gradflow", "torch")}
    entry["solo_1_thread_ms"] = {name: o["ms"] for name, o in outcomes.items() if o.get("status", "ok") == "ok"}
    step = builders["gradflow"](batch)
    entry["profile"] = measure.profile_step(step, steps=10, top=5)


# --------------------------------------------------------------------------------------------
# The MLP section
# --------------------------------------------------------------------------------------------


def agreement(optimizer: str, sizes: tuple[int, ...], batch: int, steps: int = 3) -> dict[str, float]:
    """Largest parameter difference after ``steps`` steps between gradflow and each other
    contender (relative to the largest weight): the contenders do compute the same thing."""
    torch_available, _ = _torch_status()
    runs = {"gradflow": mlp_step.build_gradflow_step(batch, optimizer=optimizer, sizes=sizes),
            "numpy": mlp_step.build_numpy_step(batch, optimizer=optimizer, sizes=sizes)}
    if torch_available:
        runs["torch"] = mlp_step.build_torch_step(batch, optimizer=optimizer, sizes=sizes)
    for step in runs.values():
        for _ in range(steps):
            step()
    reference = runs["gradflow"].parameters()
    scale = max(float(np.max(np.abs(p))) for p in reference)
    found = {}
    for name, step in runs.items():
        if name != "gradflow":
            found[name] = max(float(np.max(np.abs(a - b))) for a, b in zip(reference, step.parameters())) / scale
    return found


def run_mlp(devices: list[str], batches: list[int], optimizer: str, sizes: tuple[int, ...], rounds: int,
            block_seconds: float, with_memory: bool = True, pause: float = DEFAULT_PAUSE,
            fair: dict[str, Any] | None = None) -> dict[str, Any]:
    torch_available, torch_cuda = _torch_status()
    results: dict[str, Any] = {}
    for device in devices:
        names = plan_contenders(device, torch_available=torch_available, torch_cuda=torch_cuda)
        per_batch = {}
        for batch in batches:
            steps = build_mlp_contenders(names, batch, optimizer, device, sizes)
            sync = {name: getattr(step, "synchronize", None) or (lambda: None) for name, step in steps.items()}
            timing = time_interleaved(steps, rounds=rounds, block_seconds=block_seconds, synchronize=sync, pause=pause)
            baseline = "numpy" if device == "cpu" else "cupy"
            entry: dict[str, Any] = {
                "ms": {n: timing.median(n) * 1e3 for n in steps},
                "iqr_ms": {n: [v * 1e3 for v in timing.spread(n)] for n in steps},
                "steps_per_block": timing.steps_per_block,
                "ratios": {f"gradflow/{other}": timing.ratio("gradflow", other)
                           for other in (baseline, "torch", "gemm_only") if other in steps},
                "ratio_iqr": {f"gradflow/{other}": list(timing.ratio_spread("gradflow", other))
                              for other in (baseline, "torch") if other in steps},
            }
            entry["minor_faults_per_step"] = {name: measure.minor_faults_per_step(steps[name], sync[name])
                                              for name in steps}
            del steps, sync
            confirm_solo(entry, {name: {"kind": "mlp", "contender": name, "batch": batch, "optimizer": optimizer,
                                        "device": device, "sizes": list(sizes)} for name in names}, fair)
            if device == "cpu" and with_memory:
                entry["peak_memory_bytes"] = {
                    name: measure.peak_step_memory(
                        lambda name=name: build_mlp_contenders([name], batch, optimizer, device, sizes)[name])
                    for name in ("gradflow", "numpy")
                }
            per_batch[str(batch)] = entry
        results[device] = {"contenders": names, "batches": per_batch}
    return results


# --------------------------------------------------------------------------------------------
# Targets
# --------------------------------------------------------------------------------------------


def _fixed_costs(results: dict[str, Any], entry: dict[str, Any]) -> str:
    """The per-step costs gradflow has and the hand-written step has not, from this run's
    overhead measurements, as a share of the step (explains a missed ratio at small batches)."""
    by_kind = {row["what"].split(" ")[0]: row for row in results["overheads"]}
    layers = len(results["settings"]["sizes"]) - 1
    loss = by_kind.get("SoftmaxCrossEntropy", {}).get("overhead_us", 0.0)
    linear = by_kind.get("Linear(16,", {}).get("overhead_us", 0.0)
    relu = by_kind.get("ReLU", {}).get("overhead_us", 0.0)
    sgd = by_kind.get("SGD", {}).get("overhead_per_layer_us", 0.0)
    total = loss + layers * linear + (layers - 1) * relu + 2 * layers * sgd
    step_us = entry["ms"]["numpy"] * 1e3
    spread = entry.get("ratio_iqr", {}).get("gradflow/numpy")
    text = (f"gradflow's fixed per-step costs measured in this run: loss +{loss:.0f} µs, {layers} Linear + "
            f"{layers - 1} ReLU calls +{layers * linear + (layers - 1) * relu:.0f} µs, optimizer "
            f"+{2 * layers * sgd:.0f} µs: {total:.0f} µs = {total / step_us:.1%} of the hand-written step "
            "(measured in isolation; inside a step, after the GEMMs have evicted the caches, small array "
            "operations cost several times more, and the validated loss makes ~20 of them vs ~12 by hand); "
            "the hand-written step also applies ReLU and its δ in place, where gradflow's layers must not "
            "overwrite their inputs.")
    return text + _spread_text(spread, TARGETS["numpy_ratio"])


def _spread_text(spread: Any, limit: float) -> str:
    """The per-round ratios' interquartile range, and whether it straddles the target."""
    if not spread:
        return ""
    if spread[1] <= limit:
        reading = "the interleaved rounds meet the target; the miss is the solo figure's"
    elif spread[0] > limit:
        reading = "the whole range misses the target"
    else:
        reading = "machine noise: the range straddles the target"
    return f" Per-round ratios ranged {spread[0]:.2f}-{spread[1]:.2f} (interquartile): {reading}."


def _torch_miss(entry: dict[str, Any]) -> str:
    """Why the MLP step is not faster than PyTorch's: the time each spends outside the step's
    eight GEMMs (the GEMMs-only contender, NumPy's BLAS), and the spread over rounds."""
    ms = entry["ms"]
    text = ""
    if "gemm_only" in ms and "torch" in ms:
        text = (f"outside the step's eight GEMMs ({ms['gemm_only']:.2f} ms with NumPy's BLAS) gradflow spends "
                f"{ms['gradflow'] - ms['gemm_only']:.2f} ms and PyTorch eager {ms['torch'] - ms['gemm_only']:.2f} ms "
                "(PyTorch's own BLAS may differ from NumPy's, so this split is approximate).")
    return text + _spread_text(entry.get("ratio_iqr", {}).get("gradflow/torch"), TARGETS["torch_ratio"])


#: Step-time targets of the slot workloads, gradflow / PyTorch eager (issue 12), by workload name.
SLOT_TARGETS = {"cnn": 1.2, "lstm": 1.5, "gru": 1.5, "transformer_block": 1.1, "transformer": 1.1}


def _call_miss(results: dict[str, Any]) -> str | None:
    """Where a Linear call's time goes (cProfile own time per function, share of the call)."""
    rows = results.get("call_profile")
    if not rows:
        return None
    listed = ", ".join(f"{row['function']} {row['own_share']:.0%}" for row in rows[:5])
    return ("a Linear(16, 16) forward+backward call by function (cProfile own time; the array operations run "
            f"inside the functions that call them, and cProfile inflates every Python call): {listed}. Each "
            "call runs the δ check (once only, no in-place weight change, the δ's shape, dtype and device) and "
            "the device-context check that the reliability and GPU issues asked for")


def _slot_miss(entry: dict[str, Any], threads: Any) -> str | None:
    """The measured reasons a sequence/CNN workload misses its target (see :func:`explain_miss`)."""
    parts = []
    one = entry.get("solo_1_thread_ms", {})
    if "gradflow" in one and "torch" in one:
        at_one = one["gradflow"] / one["torch"]
        solo_ratio = entry.get("solo_ratios", {}).get("gradflow/torch", float("nan"))
        reading = ("so part of the gap is PyTorch putting its second thread on work that NumPy's ufuncs "
                   "do on one" if at_one < solo_ratio else "so the gap is not a matter of threads")
        parts.append(f"each alone at 1 thread: gradflow {one['gradflow']:.2f} ms, PyTorch {one['torch']:.2f} ms "
                     f"({at_one:.2f}x, against {solo_ratio:.2f}x alone at {threads} threads), {reading}")
    if entry.get("profile"):
        rows = ", ".join(f"{row['function']} {row['own_share']:.0%}" for row in entry["profile"][:4])
        parts.append(f"gradflow's own time by function (cProfile, 10 steps): {rows}")
    return "; ".join(parts) or None


def _fair_ratio(entry: dict[str, Any], key: str, limit: float, strict: bool = False) -> tuple[str, bool]:
    """"0.95x interleaved, 0.97x solo" and whether both meet ``limit`` (the solo figure counts
    only where it was measured). ``strict``: below the limit, not at it."""
    values = [entry["ratios"][key]] + ([entry["solo_ratios"][key]] if key in entry.get("solo_ratios", {}) else [])
    text = f"{values[0]:.3f}x interleaved" + (f", {values[1]:.3f}x solo" if len(values) > 1 else "")
    flags = entry.get("flagged")
    if flags:
        text += f" (flagged: {', '.join(flags)} interleaved >15% off solo)"
    met = all(v < limit if strict else v <= limit for v in values)
    return text, met


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    cpu = results["mlp"].get("cpu", {}).get("batches", {})
    for batch, entry in cpu.items():
        ratios = entry["ratios"]
        value, met = _fair_ratio(entry, "gradflow/numpy", TARGETS["numpy_ratio"])
        rows.append({"target": f"MLP step batch {batch}: gradflow ≤ {TARGETS['numpy_ratio']:.2f}x hand-written NumPy",
                     "value": value, "met": met, "why": None if met else _fixed_costs(results, entry)})
        if "gradflow/torch" in ratios:
            value, met = _fair_ratio(entry, "gradflow/torch", TARGETS["torch_ratio"], strict=True)
            rows.append({"target": f"MLP step batch {batch}: gradflow faster than PyTorch eager",
                         "value": value, "met": met, "why": None if met else _torch_miss(entry)})
    for slot, outcome in results.get("slots", {}).items():
        for workload, entry in outcome.get("workloads", {}).items():
            limit = SLOT_TARGETS.get(workload.split(" (")[0])
            if limit is None or entry.get("status") != "ok" or "gradflow/torch" not in entry["ratios"]:
                continue
            value, met = _fair_ratio(entry, "gradflow/torch", limit)
            rows.append({"target": f"{workload}: gradflow ≤ {limit:.2f}x PyTorch eager", "value": value, "met": met,
                         "why": None if met else _slot_miss(entry, results["environment"].get("threads"))})
    layer_rows = [row for row in results["overheads"] if row["per"] == "layer"]
    if layer_rows:
        worst = max(layer_rows, key=lambda row: row["overhead_per_layer_us"])
        rows.append({"target": f"framework overhead per layer call ≤ {TARGETS['overhead_us']:.0f} µs",
                     "value": f"{worst['overhead_per_layer_us']:.2f} µs (worst: {worst['what'].split(' forward')[0]})",
                     "met": worst["overhead_per_layer_us"] <= TARGETS["overhead_us"],
                     "why": None if worst["overhead_per_layer_us"] <= TARGETS["overhead_us"] else _call_miss(results)})
    growth = results.get("memory_growth")
    if growth:
        rows.append({"target": f"no memory growth over {growth['steps']} steps",
                     "value": f"{growth['growth']:+,d} bytes", "met": abs(growth["growth"]) <= TARGETS["growth_bytes"]})
    mixed = {row["precision"]: row for row in results.get("mixed_precision", []) if row.get("status") == "ok"}
    if "float32" in mixed and "float16" in mixed and mixed["float32"]["epochs"] >= 8:
        gap = mixed["float32"]["accuracy"] - mixed["float16"]["accuracy"]
        rows.append({"target": "fit(precision='float16') on digits (BatchNorm model): accuracy within 2 points of float32",
                     "value": f"{mixed['float16']['accuracy']:.3f} vs {mixed['float32']['accuracy']:.3f}",
                     "met": gap <= 0.02})
    operations = results["operations"]
    float64 = operations["gradflow"]["float64_results"]
    rows.append({"target": "no float64 results in a float32 step",
                 "value": f"{len(float64)} float64 results", "met": not float64})
    rows.append({"target": f"array operations per step ≤ {TARGETS['operations_ratio']:.1f}x the baseline's",
                 "value": f"{operations['gradflow']['operations']} vs {operations['numpy']['operations']} "
                          f"({operations['ratio']:.2f}x)", "met": operations["ratio"] <= TARGETS["operations_ratio"]})
    return rows


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 256, 1024])
    parser.add_argument("--optimizer", choices=mlp_step.OPTIMIZERS, default="sgd")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (median taken)")
    parser.add_argument("--block-seconds", type=float, default=0.1, help="time per contender per round")
    parser.add_argument("--pause", type=float, default=DEFAULT_PAUSE,
                        help=f"idle seconds before every interleaved block (default {DEFAULT_PAUSE}), longer "
                             "than the BLAS/OpenMP threads' spin-wait")
    parser.add_argument("--no-solo", action="store_true",
                        help="skip timing each contender alone in its own process (the fair-timing check)")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--memory-steps", type=int, default=1000, help="steps of the memory-growth check")
    parser.add_argument("--sizes", default=",".join(map(str, mlp_step.SIZES)),
                        help="MLP layer sizes (default 784,512,512,10)")
    parser.add_argument("--out", type=Path, default=Path("runs/benchmarks"),
                        help="where the .json/.md/.png go (the published results: --out benchmarks/results)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny settings for a smoke test (batch 8, sizes 32,16,16,4, 2 rounds)")
    parser.add_argument("--no-openblas-rerun", action="store_true",
                        help="do not repeat the MLP timings with the OPENBLAS_* variables unset")
    parser.add_argument("--no-png", action="store_true")
    parser.add_argument("--update-readme", type=Path, default=None, metavar="README",
                        help="replace the table between the benchmark markers in README")
    parser.add_argument("--mlp-only-json", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.batches, args.sizes, args.rounds = [8], "32,16,16,4", 2
        args.block_seconds, args.memory_steps, args.pause = 0.005, 30, 0.001
    args.sizes = tuple(int(s) for s in str(args.sizes).split(","))
    return args


def command_line(argv: list[str] | None) -> str:
    """The command as typed (the OpenBLAS variables in force are recorded with the environment)."""
    parts = sys.argv[1:] if argv is None else argv
    return "python -m benchmarks" + ("" if not parts else " " + " ".join(shlex.quote(p) for p in parts))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limiter = limit_threads(args.threads)
    try:
        return _main(args, argv)
    finally:
        if limiter is not None:
            limiter.restore_original_limits()


def _main(args: argparse.Namespace, argv: list[str] | None) -> int:
    from gradflow import backend

    if args.mlp_only_json is not None:  # the child run with the OpenBLAS variables unset
        mlp = run_mlp(["cpu"], args.batches, args.optimizer, args.sizes, args.rounds, args.block_seconds,
                      with_memory=False, pause=args.pause)
        args.mlp_only_json.write_text(json.dumps({"mlp": mlp, "environment": environment(args.threads)}))
        return 0

    started = time.perf_counter()
    command = command_line(argv)
    devices = available_devices(args.device, backend.cuda_device_count())
    results: dict[str, Any] = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "environment": environment(args.threads),
        "settings": {"batches": args.batches, "optimizer": args.optimizer, "sizes": list(args.sizes),
                     "rounds": args.rounds, "block_seconds": args.block_seconds, "pause": args.pause,
                     "solo": not args.no_solo, "threads": args.threads, "devices": devices,
                     "dtype": "float32", "loss": "SoftmaxCrossEntropy (mean)"},
    }
    print(f"gradflow benchmarks: {command}", flush=True)
    results["agreement"] = agreement(args.optimizer, args.sizes, args.batches[0])
    print(f"  contenders agree after 3 steps (max relative parameter difference): {results['agreement']}", flush=True)
    fair = None if args.no_solo else {"threads": args.threads, "rounds": args.rounds,
                                      "block_seconds": args.block_seconds}
    results["mlp"] = run_mlp(devices, args.batches, args.optimizer, args.sizes, args.rounds, args.block_seconds,
                             pause=args.pause, fair=fair)
    for device, section in results["mlp"].items():
        for batch, entry in section["batches"].items():
            print(f"  MLP {device} batch {batch}: " + ", ".join(f"{n} {ms:.3f} ms" for n, ms in entry["ms"].items())
                  + " | " + ", ".join(f"{k} {v:.3f}" for k, v in entry["ratios"].items())
                  + " | solo: " + ", ".join(f"{n} {ms:.3f} ms" for n, ms in entry.get("solo_ms", {}).items())
                  + (f" | FLAGGED (interleaved >15% off solo): {entry['flagged']}" if entry.get("flagged") else ""),
                  flush=True)
    # --quick (the test suite) times the slots' contenders alone only when asked: each would
    # start a process importing torch at the real model sizes.
    results["slots"] = {name: run_slot(module, args.rounds, args.block_seconds, args.quick, pause=args.pause,
                                       fair=None if args.quick else fair)
                        for name, module in SLOT_MODULES.items()}
    results["operations"] = measure.count_operations(args.batches[0], args.optimizer, args.sizes)
    results["fused_operations"] = measure.count_fused_operations(
        8, args.sizes, workloads=("mlp", "adam_step") if args.quick else measure.FUSED_WORKLOADS)
    results["mixed_precision"] = measure.mixed_precision_digits(epochs=1 if args.quick else 8)
    growth_step = mlp_step.build_gradflow_step(args.batches[0], optimizer=args.optimizer, sizes=args.sizes)
    results["memory_growth"] = measure.memory_growth(growth_step, steps=args.memory_steps,
                                                     settle=max(1, args.memory_steps // 10))
    results["overheads"] = measure.layer_overheads(number=300 if args.quick else 3000)
    results["call_profile"] = measure.layer_call_profile(calls=300 if args.quick else 3000)
    profile_batch = 256 if 256 in args.batches else args.batches[0]
    profiled = mlp_step.build_gradflow_step(profile_batch, optimizer=args.optimizer, sizes=args.sizes)
    results["profile"] = {"batch": profile_batch,
                          "rows": measure.profile_step(profiled, steps=5 if args.quick else 50)}
    results["openblas_unset"] = None
    if any(os.environ.get(name) for name in OPENBLAS_VARIABLES) and not args.no_openblas_rerun:
        results["openblas_unset"] = _rerun_without_openblas_variables(args)
    results["targets"] = evaluate_targets(results)
    results["environment"]["load_average_end"] = environment(args.threads)["load_average_start"]
    results["seconds"] = time.perf_counter() - started
    paths = report.write(results, args.out, png=not args.no_png)
    if args.update_readme is not None:
        report.update_readme(args.update_readme, results)
    for row in results["targets"]:
        print(f"  [{'met' if row['met'] else 'NOT MET'}] {row['target']}: {row['value']}")
    print("wrote " + ", ".join(str(p) for p in paths))
    return 0


def _rerun_without_openblas_variables(args: argparse.Namespace) -> dict[str, Any] | str:
    env = {k: v for k, v in os.environ.items() if k not in OPENBLAS_VARIABLES}
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "child.json"
        child = [sys.executable, "-m", "benchmarks", "--mlp-only-json", str(target), "--threads", str(args.threads),
                 "--pause", str(args.pause),
                 "--optimizer", args.optimizer, "--rounds", str(args.rounds), "--block-seconds", str(args.block_seconds),
                 "--sizes", ",".join(map(str, args.sizes)), "--batches", *map(str, args.batches)]
        root = Path(__file__).resolve().parent.parent
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), env.get("PYTHONPATH", "")]))
        done = subprocess.run(child, env=env, cwd=root, capture_output=True, text=True)
        if done.returncode != 0:
            return f"the child run failed: {done.stderr.strip()[-500:]}"
        return json.loads(target.read_text())


if __name__ == "__main__":
    raise SystemExit(main())
