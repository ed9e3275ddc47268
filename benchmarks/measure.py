"""The measurements besides step time: operations per step, memory, per-call overhead, profile."""

from __future__ import annotations

import cProfile
import gc
import pstats
import tracemalloc
from collections.abc import Callable
from typing import Any

import numpy as np

from benchmarks import mlp_step
from benchmarks.timing import best_of


# --------------------------------------------------------------------------------------------
# Operations per step (the GPU kernel-launch proxy) and float64 results
# --------------------------------------------------------------------------------------------


def count_operations(batch: int, optimizer: str, sizes: tuple[int, ...] = mlp_step.SIZES) -> dict[str, Any]:
    """Array operations, host syncs and result dtypes of one steady-state step (the third)."""
    import array_api_compat.numpy as compat_numpy

    from gradflow.testing.counting import OperationCounter

    found = {}
    for name, build, xp in (("gradflow", mlp_step.build_gradflow_step, compat_numpy),
                            ("numpy", mlp_step.build_numpy_step, np)):
        counter = OperationCounter(xp)
        step = build(batch, optimizer=optimizer, counter=counter, sizes=sizes)
        step()
        step()
        counter.reset()
        step()
        found[name] = {
            "operations": counter.total,
            "syncs": counter.syncs,
            "float64_results": counter.results_of_dtype("float64"),
            "by_name": dict(sorted(counter.by_name.items())),
        }
    found["ratio"] = found["gradflow"]["operations"] / found["numpy"]["operations"]
    return found


# --------------------------------------------------------------------------------------------
# Memory
# --------------------------------------------------------------------------------------------


def peak_step_memory(build: Callable[[], Callable[[], Any]]) -> int:
    """Peak bytes traced during one warm training step, counting everything the contender
    allocated since it was built (weights, optimizer state, gradients, activations, temporaries):
    tracemalloc sees NumPy's array allocations, so contenders that hold gradients between steps
    and those that free them are compared alike."""
    build()()  # imports and one-time caches happen outside the trace
    gc.collect()
    tracemalloc.start()
    try:
        step = build()
        step()
        step()
        gc.collect()
        tracemalloc.reset_peak()
        step()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def memory_growth(step: Callable[[], Any], steps: int = 1000, settle: int = 100) -> dict[str, int]:
    """Traced bytes held after ``settle`` steps and after ``steps`` steps, and the difference."""
    tracemalloc.start()
    try:
        for _ in range(settle):
            step()
        gc.collect()
        after_settle = tracemalloc.get_traced_memory()[0]
        for _ in range(steps - settle):
            step()
        gc.collect()
        after_all = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    return {"steps": steps, "held_after_settle": after_settle, "held_at_end": after_all,
            "growth": after_all - after_settle}


# --------------------------------------------------------------------------------------------
# Framework overhead per layer call: gradflow vs the bare array operations on tiny inputs
# --------------------------------------------------------------------------------------------


def layer_overheads(number: int = 3000) -> list[dict[str, Any]]:
    """µs per forward+backward call of gradflow layers on tiny float32 inputs, the same array
    operations written bare, and the difference (the framework's overhead)."""
    import gradflow as gf
    from gradflow import layers as L
    from gradflow.losses import SoftmaxCrossEntropy
    from gradflow.optim import SGD

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16), dtype=np.float32)
    dy = rng.standard_normal((4, 16), dtype=np.float32)
    labels = np.arange(4, dtype=np.int64) % 16
    linear = L.Linear(16, 16, rng=0)
    W, b = linear.weight.value, linear.bias.value
    relu = L.ReLU()
    pair = gf.Sequential(L.Linear(16, 16, rng=0), L.ReLU())
    loss = SoftmaxCrossEntropy()
    sgd = SGD(linear, lr=0.01, momentum=0.9)

    def gradflow_linear():
        linear.weight.grad = linear.bias.grad = None
        y, backprop = linear(x, train=True)
        backprop(dy)

    def bare_linear():
        y = x @ W.T
        y += b
        grad_w, grad_b, dx = dy.T @ x, np.sum(dy, axis=0), dy @ W
        return grad_w, grad_b, dx

    def gradflow_relu():
        y, backprop = relu(x, train=True)
        backprop(dy)

    def bare_relu():
        y = np.maximum(x, 0.0)
        return dy * (y > 0)

    def gradflow_sequential():
        for p in pair.parameters():
            p.grad = None
        y, backprop = pair(x, train=True)
        backprop(dy)

    def gradflow_layers_unwrapped():
        for p in pair.parameters():
            p.grad = None
        h, backprop_linear = pair[0](x, train=True)
        y, backprop_relu = pair[1](h, train=True)
        backprop_linear(backprop_relu(dy))

    def gradflow_loss():
        loss(x, labels)

    def bare_loss():
        shifted = x - x.max(axis=1, keepdims=True)
        e = np.exp(shifted)
        total = e.sum(axis=1, keepdims=True)
        value = (np.log(total).sum() - shifted[np.arange(4), labels].sum()) / 4
        delta = e / total
        delta[np.arange(4), labels] -= 1.0
        delta *= 0.25
        return value, delta

    grad_w = rng.standard_normal((16, 16), dtype=np.float32)
    grad_b = rng.standard_normal(16, dtype=np.float32)
    momentum = {"w": grad_w.copy(), "b": grad_b.copy()}

    def gradflow_sgd():
        linear.weight.grad, linear.bias.grad = grad_w, grad_b
        sgd.step()

    def bare_sgd():
        for key, p, g in (("w", W, grad_w), ("b", b, grad_b)):
            buffer = momentum[key]
            buffer *= 0.9
            buffer += g
            p -= 0.01 * buffer

    rows = []
    for what, framework, bare, calls in (
        ("Linear(16, 16) forward+backward, x (4, 16)", gradflow_linear, bare_linear, 1),
        ("ReLU forward+backward, x (4, 16)", gradflow_relu, bare_relu, 1),
        ("SoftmaxCrossEntropy value+δ, (4, 16) logits", gradflow_loss, bare_loss, 1),
        ("SGD momentum step, 2 parameters", gradflow_sgd, bare_sgd, 2),
        ("Sequential(Linear, ReLU) vs the two layers called directly", gradflow_sequential,
         gradflow_layers_unwrapped, 2),
    ):
        framework()
        bare()
        t_framework = best_of(framework, number=number)
        t_bare = best_of(bare, number=number)
        rows.append({
            "what": what,
            "gradflow_us": t_framework * 1e6,
            "bare_us": t_bare * 1e6,
            "overhead_us": (t_framework - t_bare) * 1e6,
            "overhead_per_layer_us": (t_framework - t_bare) * 1e6 / calls,
            "per": ("loss call" if "CrossEntropy" in what else "layer") if calls == 1
                   else ("parameter" if "SGD" in what else "contained layer"),
        })
    return rows


# --------------------------------------------------------------------------------------------
# Where the time goes
# --------------------------------------------------------------------------------------------


def gemm_only_step(batch: int, sizes: tuple[int, ...] = mlp_step.SIZES) -> Callable[[], Any]:
    """Just the step's matrix products (3 forward, 3 weight-gradient, 2 input-δ): a floor."""
    weights = [w for w, _ in mlp_step.initial_weights(sizes)]
    x, _ = mlp_step.batch_data(batch, sizes)
    rng = np.random.default_rng(0)
    deltas = [rng.standard_normal((batch, w.shape[1]), dtype=np.float32) for w in weights]
    activations = [x] + [rng.standard_normal((batch, w.shape[1]), dtype=np.float32) for w in weights[:-1]]

    def step():
        for a, w in zip(activations, weights):
            a @ w
        for i, (a, d, w) in enumerate(zip(activations, deltas, weights)):
            a.T @ d
            if i > 0:
                d @ w.T

    return step


def profile_step(step: Callable[[], Any], steps: int = 50, top: int = 12) -> list[dict[str, Any]]:
    """cProfile of ``steps`` steps: the functions with the most own time (array operations run
    inside the Python function that calls them, so Linear's rows are mostly its GEMMs)."""
    step()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        step()
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = sum(entry[2] for entry in stats.stats.values())
    rows = []
    for (filename, line, function), (_, calls, own, cumulative, _) in stats.stats.items():
        rows.append({
            "function": f"{_short(filename)}:{line}({function})",
            "calls_per_step": calls / steps,
            "own_ms_per_step": own / steps * 1e3,
            "own_share": own / total if total else 0.0,
        })
    rows.sort(key=lambda row: -row["own_ms_per_step"])
    return rows[:top]


def _short(filename: str) -> str:
    for marker in ("gradflow/", "benchmarks/", "site-packages/"):
        if marker in filename:
            return filename[filename.index(marker):].replace("site-packages/", "")
    return filename
