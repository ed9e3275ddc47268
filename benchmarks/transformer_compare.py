"""The transformer block step: this tree's block vs another commit's vs PyTorch eager, in one
process, plus array operations per step.

    python -m benchmarks.transformer_compare --baseline aa655a2 --threads 1 --blocks 7

Each contender runs ``--steps`` steps per block, the contenders alternate block by block
(A, B, C, A, B, C...), and the figure is the median over blocks of the CPU time per step
(``time.process_time``: on a shared machine wall-clock time measures the neighbours). CPU time
counts every thread of the process, so spinning BLAS/OpenMP threads are charged to whoever
made them spin; one thread gives the cleanest comparison. The baseline's MultiHeadAttention
and TransformerEncoderBlock are loaded from ``git show <commit>:gradflow/layers/...`` (with this
tree's Linear and backend); "erf GELU" is this tree's block with the GELU computed as before the
in-place float32 path of ``backend.primitives.gelu_exact``: ½(1 + erf(x/√2)) with the float32
rational erf, and φ from a second exp.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import time
import types
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HEADS = 4


def _old_block_class(commit: str) -> type:
    """TransformerEncoderBlock as it was at ``commit`` (its attention from that commit too)."""
    modules = {}
    for name in ("attention", "transformer"):
        source = subprocess.check_output(["git", "show", f"{commit}:gradflow/layers/{name}.py"], cwd=ROOT, text=True)
        module = types.ModuleType(f"gradflow.layers._baseline_{name}")
        module.__package__ = "gradflow.layers"
        exec(compile(source, f"{commit}:{name}.py", "exec"), module.__dict__)
        modules[name] = module
    modules["transformer"].MultiHeadAttention = modules["attention"].MultiHeadAttention
    return modules["transformer"].TransformerEncoderBlock


def gradflow_step(block_class: type, batch: int, seq: int, hidden: int, counter=None) -> Callable[[], None]:
    import gradflow as gf
    from gradflow.losses import MSE
    from gradflow.optim import Adam

    rng = np.random.default_rng(0)
    dev = gf.device("cpu")
    model = block_class(hidden, HEADS, rng=0)
    x = dev.send(rng.normal(size=(batch, seq, hidden)), "float32")
    target = dev.send(rng.normal(size=(batch, seq, hidden)), "float32")
    if counter is not None:
        counter.wrap_layer(model)
        x, target = counter.wrap(x), counter.wrap(target)
    optimizer, loss = Adam(model, lr=1e-3), MSE()

    def step() -> None:
        output, backprop = model(x, train=True)
        _, delta = loss(output, target)
        optimizer.zero_grad()
        backprop(delta)
        optimizer.step()

    return step


def torch_step(batch: int, seq: int, hidden: int) -> Callable[[], None]:
    import torch

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    block = torch.nn.TransformerEncoderLayer(hidden, HEADS, dim_feedforward=4 * hidden, dropout=0.0, activation="gelu",
                                             batch_first=True, norm_first=True)
    x = torch.from_numpy(rng.normal(size=(batch, seq, hidden)).astype(np.float32))
    target = torch.from_numpy(rng.normal(size=(batch, seq, hidden)).astype(np.float32))
    optimizer = torch.optim.Adam(block.parameters(), lr=1e-3)

    def step() -> None:
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(block(x), target).backward()
        optimizer.step()

    return step


def _with_erf_gelu(step: Callable[[], None]) -> Callable[[], None]:
    """``step`` with NumPy's float32 GELU on the array-API path (erf, then exp for the slope):
    the before/after of the in-place float32 GELU in the same process."""
    from gradflow.backend import primitives

    def erf_gelu(x, slope):
        return primitives.gelu_exact(x, slope=slope, portable=True)

    def patched() -> None:
        fast = primitives._gelu_float32_numpy
        primitives._gelu_float32_numpy = erf_gelu
        try:
            step()
        finally:
            primitives._gelu_float32_numpy = fast

    return patched


def operations_per_step(block_class: type, batch: int, seq: int, hidden: int) -> tuple[int, dict[str, int]]:
    import array_api_compat.numpy as compat_numpy

    from gradflow.testing.counting import OperationCounter

    counter = OperationCounter(compat_numpy)
    step = gradflow_step(block_class, batch, seq, hidden, counter)
    step()
    counter.reset()
    step()
    return counter.total, dict(counter.by_name)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="aa655a2", help="commit whose block is compared (default aa655a2)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--blocks", type=int, default=7)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args(argv)

    import torch
    from threadpoolctl import threadpool_limits

    from gradflow import layers as L

    torch.set_num_threads(args.threads)
    sizes = (args.batch, args.seq, args.hidden)
    classes = {"gradflow (this tree)": L.TransformerEncoderBlock, f"gradflow ({args.baseline})": _old_block_class(args.baseline)}
    for name, cls in classes.items():
        total, by_name = operations_per_step(cls, *sizes)
        top = ", ".join(f"{k} {v}" for k, v in sorted(by_name.items(), key=lambda kv: -kv[1])[:6])
        print(f"{name}: {total} array operations per step ({top})")
    results: dict[str, list[float]] = {}
    with threadpool_limits(args.threads):
        contenders = {name: gradflow_step(cls, *sizes) for name, cls in classes.items()}
        contenders["gradflow (this tree, erf GELU)"] = _with_erf_gelu(gradflow_step(L.TransformerEncoderBlock, *sizes))
        contenders["torch eager"] = torch_step(*sizes)
        for step in contenders.values():
            step()
            step()
        for _ in range(args.blocks):
            for name, step in contenders.items():
                started = time.process_time()
                for _ in range(args.steps):
                    step()
                results.setdefault(name, []).append((time.process_time() - started) / args.steps)
    medians = {name: statistics.median(values) for name, values in results.items()}
    print(f"CPU time per step, median of {args.blocks} interleaved blocks of {args.steps} steps, "
          f"{args.threads} thread(s), float32, batch {args.batch}, seq {args.seq}, hidden {args.hidden}:")
    for name, value in medians.items():
        print(f"  {name:>32}: {value * 1e3:7.2f} ms   ({value / medians['torch eager']:.2f}x torch)")
    return medians


if __name__ == "__main__":
    main()
