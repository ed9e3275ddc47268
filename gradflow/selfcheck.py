"""The GPU check a user runs in one command: ``python -m gradflow.selfcheck`` (or ``gradflow doctor``).

It fails, with a one-line reason and exit status 1, when no GPU is usable: never "all skipped,
exit 0". Otherwise, on every visible GPU, it runs

1. the parity suite: every built-in layer checked against its NumPy float64 reference and
   finite differences, and in float32 against the CPU (``gradflow.testing.check_layer``);
2. a training run (an MLP with dropout, Adam, ``fit`` then ``evaluate``) that must lower the
   loss and leave every parameter and optimizer slot on that GPU;
3. NCCL all-reduce between all GPUs, one thread per GPU, when there are two or more;
4. a short benchmark (MLP training steps per second);

and writes a Markdown report (versions, devices, results). Exit status 0 only when every check
passed. ``--only Linear,GELU`` limits the parity suite to some layers; ``--budget`` (seconds,
default 270) stops starting new checks when spent, which the report says.
"""

from __future__ import annotations

import argparse
import platform
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__, backend
from .backend import DeviceError


@dataclass
class Result:
    """One check's outcome: its name, device, pass or fail, seconds and a detail line."""
    check: str
    device: str
    ok: bool
    seconds: float
    detail: str = ""


@dataclass
class Run:
    """The checks run so far, against a time budget in seconds."""
    budget_s: float
    started: float = field(default_factory=time.perf_counter)
    results: list[Result] = field(default_factory=list)

    def left(self) -> float:
        """Seconds left of the budget (negative when spent)."""
        return self.budget_s - (time.perf_counter() - self.started)

    def check(self, name: str, device: str, function: Callable[[], str]) -> None:
        """Run ``function`` as check ``name`` on ``device`` (unless the budget is spent) and record it."""
        if self.left() <= 0:
            self.results.append(Result(name, device, False, 0.0, "not run: the time budget was spent"))
            return
        start = time.perf_counter()
        try:
            detail, ok = function(), True
        except Exception as error:  # a failed check is a result, not a crash
            detail, ok = f"{type(error).__name__}: {error}".splitlines()[0][:300], False
            traceback.print_exc(file=sys.stderr)
        self.results.append(Result(name, device, ok, time.perf_counter() - start, detail))


def usable_gpus() -> tuple[int, str]:
    """(how many GPUs gradflow can use, the reason when none)."""
    try:
        backend.device("cuda")
    except (DeviceError, ValueError) as error:
        return 0, str(error).splitlines()[0]
    return backend.cuda_device_count(), ""


def parity(device: str, only: set[str] | None) -> str:
    """Check every built-in layer on ``device`` (or those in ``only``); returns a one-line summary."""
    from .cli import _sample, gradcheck_cases
    from .testing import check_layer

    checked, skipped = 0, []
    for label, factory, sample, why, options in gradcheck_cases():
        if only is not None and label.split("(")[0] not in only:
            continue
        if factory is None:
            skipped.append(f"{label} ({why})")
            continue
        check_layer(factory, _sample(sample), devices=["cpu", device], **options)
        checked += 1
    if checked == 0:
        raise RuntimeError("no layer was checked")
    return f"{checked} layers match the NumPy reference, finite differences and the CPU" + (
        f"; skipped: {', '.join(skipped)}" if skipped else "")


def training(device: str) -> str:
    """Train a small MLP on ``device`` with ``fit``; returns a summary, raises when it fails."""
    import gradflow as gf
    from gradflow import layers as L
    from gradflow.losses import SoftmaxCrossEntropy
    from gradflow.optim import Adam
    from gradflow.train import evaluate, fit

    rng = np.random.default_rng(0)
    x = rng.normal(size=(512, 20)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int64) + (x[:, 3] > 1).astype(np.int64)
    model = gf.Sequential(L.Linear(20, 64, rng=0), L.ReLU(), L.Dropout(0.1, seed=0), L.Linear(64, 3, rng=1))
    model.to(device)
    optimizer = Adam(model, lr=1e-2)
    loss = SoftmaxCrossEntropy()
    before = evaluate(model, loss, (x, y), batch_size=128)
    fit(model, loss, optimizer, (x, y), 5, batch_size=64, verbose=0)
    after = evaluate(model, loss, (x, y), batch_size=128)
    misplaced = [name for name, p in model.named_parameters() if backend.device_of(p.value).name != device]
    misplaced += [f"slot {key}" for key, slot in optimizer.state_dict()["slots"].items()
                  if backend.device_of(slot).name != device]
    if misplaced:
        raise RuntimeError(f"arrays left {device}: {', '.join(misplaced[:5])}")
    first, last = _loss_of(before), _loss_of(after)
    if not last < first:
        raise RuntimeError(f"the loss did not fall: {first:.4f} -> {last:.4f}")
    return f"loss {first:.4f} -> {last:.4f} in 5 epochs; parameters and slots stayed on {device}"


def _loss_of(metrics: Any) -> float:
    if isinstance(metrics, dict):
        return float(metrics.get("loss", next(iter(metrics.values()))))
    return float(metrics)


def nccl_allreduce(count: int) -> str:
    """All-reduce over ``count`` GPUs, one thread each; returns a summary."""
    from .distributed.nccl import NCCLCommunicator

    devices = [backend.device(f"cuda:{i}") for i in range(count)]
    shared: dict[str, Any] = {}
    barrier = threading.Barrier(count, timeout=120)
    errors: list[str] = []
    outcomes: dict[int, np.ndarray] = {}

    class ThreadHost:  # the host communicator NCCL needs for its unique id, between threads
        def __init__(self, rank: int):
            self.rank, self.size = rank, count

        def broadcast_object(self, obj: Any, root: int = 0) -> Any:
            if self.rank == root:
                shared["object"] = obj
            barrier.wait()
            return shared["object"]

    def rank(i: int) -> None:
        try:
            dev = devices[i]
            with dev:
                comm = NCCLCommunicator(ThreadHost(i), dev)
                buffer = dev.send(np.full(1000, float(i + 1)), "float32")
                comm.allreduce(buffer)
                dev.synchronize()
                outcomes[i] = backend.to_numpy(buffer)
                comm.close()
        except Exception as error:
            errors.append(f"rank {i}: {type(error).__name__}: {error}")
            barrier.abort()

    threads = [threading.Thread(target=rank, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=180)
    if errors:
        raise RuntimeError("; ".join(errors))
    expected = count * (count + 1) / 2
    for i in range(count):
        if i not in outcomes or not np.all(outcomes[i] == expected):
            raise RuntimeError(f"rank {i} got {outcomes.get(i, 'nothing')!r:.80}, expected {expected}")
    return f"sum over {count} GPUs correct on every rank (1000 float32)"


def benchmark(device: str, seconds: float = 3.0) -> str:
    """MLP training steps per second on ``device`` for about ``seconds``; returns a summary."""
    import gradflow as gf
    from gradflow import layers as L
    from gradflow.losses import SoftmaxCrossEntropy
    from gradflow.optim import SGD

    dev = backend.device(device)
    model = gf.Sequential(L.Linear(784, 256, rng=0), L.ReLU(), L.Linear(256, 10, rng=1)).to(dev)
    optimizer, loss = SGD(model, lr=0.01), SoftmaxCrossEntropy()
    rng = np.random.default_rng(0)
    x, y = dev.send(rng.normal(size=(256, 784)), "float32"), dev.send(rng.integers(0, 10, size=256))

    def step() -> None:
        out, backprop = model(x, train=True, input_grad=False)
        _, delta = loss(out, y)
        optimizer.zero_grad()
        backprop(delta)
        optimizer.step()

    for _ in range(3):
        step()
    dev.synchronize()
    steps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        steps += 1
    dev.synchronize()
    elapsed = time.perf_counter() - start
    return f"MLP 784-256-10, batch 256, SGD: {steps / elapsed:.0f} steps/s ({1e3 * elapsed / steps:.2f} ms/step)"


def describe_gpus(count: int) -> list[str]:
    """One Markdown line per GPU: its name, memory and compute capability."""
    import cupy

    lines = []
    for i in range(count):
        properties = cupy.cuda.runtime.getDeviceProperties(i)
        name = properties["name"].decode() if isinstance(properties["name"], bytes) else properties["name"]
        memory = properties.get("totalGlobalMem", 0) / 2**30
        lines.append(f"- cuda:{i}: {name}, {memory:.1f} GiB, compute capability "
                     f"{properties.get('major', '?')}.{properties.get('minor', '?')}")
    return lines


def report(run: Run, gpus: list[str], reason: str = "") -> str:
    """The Markdown report of ``run``: versions, devices (``gpus``, or ``reason``), results."""
    versions = backend.library_versions()
    lines = ["# gradflow GPU self-check", "",
             f"gradflow {__version__}, Python {platform.python_version()} on {platform.system()} {platform.machine()}",
             "", "## Versions", ""]
    lines += [f"- {name} {version}" for name, version in versions.items()]
    try:
        import cupy

        if getattr(cupy, "__simulated__", False):
            lines += ["", "**CuPy is the NumPy-backed simulation (tests/simcuda): no GPU ran this.**"]
    except ImportError:
        pass
    lines += ["", "## Devices", ""] + (gpus or [f"- none: {reason}"])
    lines += ["", "## Results", "", "| check | device | result | seconds | detail |", "|---|---|---|---|---|"]
    for r in run.results:
        lines.append(f"| {r.check} | {r.device} | {'pass' if r.ok else 'FAIL'} | {r.seconds:.1f} | "
                     f"{r.detail.replace('|', '/')} |")
    passed = sum(r.ok for r in run.results)
    lines += ["", f"{passed} of {len(run.results)} checks passed in {time.perf_counter() - run.started:.0f} s."]
    return "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The self-check's options (shared by ``gradflow doctor``)."""
    parser.add_argument("--report", type=Path, default=Path("gradflow-gpu-report.md"), help="where the Markdown goes")
    parser.add_argument("--only", default=None, help="comma-separated layer names for the parity suite")
    parser.add_argument("--budget", type=float, default=270.0, help="seconds after which no new check starts")
    parser.add_argument("--benchmark-seconds", type=float, default=3.0)


def main(argv: Sequence[str] | None = None) -> int:
    """The ``python -m gradflow.selfcheck`` entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m gradflow.selfcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run(parser.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run every check; 0 only when all passed (see the module docstring)."""
    run = Run(args.budget)
    count, reason = usable_gpus()
    if count == 0:
        args.report.write_text(report(run, [], reason))
        print(f"gradflow selfcheck: FAILED: no usable GPU: {reason}", file=sys.stderr)
        return 1
    only = None if args.only is None else {name.strip() for name in args.only.split(",") if name.strip()}
    for i in range(count):
        name = f"cuda:{i}"
        run.check("parity suite", name, lambda: parity(name, only))
        run.check("training", name, lambda: training(name))
    if count >= 2:
        run.check("NCCL all-reduce", f"cuda:0-{count - 1}", lambda: nccl_allreduce(count))
    for i in range(count):
        name = f"cuda:{i}"
        run.check("benchmark", name, lambda: benchmark(name, args.benchmark_seconds))
    args.report.write_text(report(run, describe_gpus(count)))
    failed = [r for r in run.results if not r.ok]
    if failed:
        first = failed[0]
        print(f"gradflow selfcheck: FAILED: {len(failed)} of {len(run.results)} checks; first: {first.check} on "
              f"{first.device}: {first.detail} (report: {args.report})", file=sys.stderr)
        return 1
    print(f"gradflow selfcheck: passed {len(run.results)} checks on {count} GPU(s) (report: {args.report})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
