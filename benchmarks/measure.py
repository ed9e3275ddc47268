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
from benchmarks.timing import best_of_pair


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
        t_framework, t_bare = best_of_pair(framework, bare, number=number)
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


def layer_call_profile(calls: int = 3000, top: int = 6) -> list[dict[str, Any]]:
    """cProfile of ``calls`` forward+backward calls of ``Linear(16, 16)`` on a (4, 16) float32
    input (the call whose framework overhead the targets table reports): the functions with the
    most own time, each as a share of the call. cProfile adds a fixed cost to every Python call,
    so the shares overstate Python-level work against the array operations inside them."""
    from gradflow import layers as L

    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 16), dtype=np.float32)
    dy = rng.standard_normal((4, 16), dtype=np.float32)
    linear = L.Linear(16, 16, rng=0)

    def call() -> None:
        linear.weight.grad = linear.bias.grad = None
        _, backprop = linear(x, train=True)
        backprop(dy)

    return profile_step(call, steps=calls, top=top)


def _short(filename: str) -> str:
    for marker in ("gradflow/", "benchmarks/", "site-packages/"):
        if marker in filename:
            return filename[filename.index(marker):].replace("site-packages/", "")
    return filename


# --------------------------------------------------------------------------------------------
# Page faults: what the allocator costs when large temporaries are freed and made again
# --------------------------------------------------------------------------------------------


def minor_faults_per_step(step: Callable[[], Any], synchronize: Callable[[], None] | None = None,
                          steps: int = 20) -> float:
    """Minor page faults per warm step (``resource.getrusage``; the whole process, so run it
    with no other work going on). A step that frees and reallocates temporaries larger than
    glibc's mmap threshold faults on every page of them each time; one that reuses buffers
    faults ~0 times. NaN where ``resource`` is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return float("nan")
    step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        step()
    if synchronize is not None:
        synchronize()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / steps


# --------------------------------------------------------------------------------------------
# Operations per step on a GPU: the portable path vs the fused kernels
# --------------------------------------------------------------------------------------------


def _gpu_shaped_counter(xp: Any) -> Any:
    """An OperationCounter whose proxies (over NumPy) the backend takes for CuPy arrays, so a
    step runs exactly the code CuPy would run (fast paths, fused kernels)."""
    from gradflow.testing.counting import OperationCounter

    counter = OperationCounter(xp)
    counter.array_type.gradflow_library = "cupy"
    return counter


def _count_step(build: Callable[[Any], Callable[[], Any]], engine: str) -> dict[str, Any]:
    import array_api_compat.numpy as compat_numpy

    from gradflow.backend import fused

    counter = _gpu_shaped_counter(compat_numpy)
    with fused.engine(engine):
        step = build(counter)
        step()
        step()
        counter.reset()
        step()
    return {"operations": counter.total, "syncs": counter.syncs,
            "by_name": dict(sorted(counter.by_name.items()))}


def _counted_model_step(model: Any, loss: Any, optimizer: Any, x: Any, target: Any) -> Callable[[Any], Callable[[], Any]]:
    def build(counter: Any) -> Callable[[], Any]:
        counter.wrap_layer(model)
        cx, ct = counter.wrap(x), counter.wrap(target)

        def step() -> Any:
            output, backprop = model(cx, train=True, input_grad=False)
            value, delta = loss(output, ct)
            optimizer.zero_grad()
            backprop(delta)
            optimizer.step()
            return value

        return step

    return build


FUSED_WORKLOADS = ("mlp", "mlp_linear_activation", "cnn", "lstm", "transformer_block", "sgd_momentum_step",
                   "adam_step")


def count_fused_operations(batch: int = 8, sizes: tuple[int, ...] = mlp_step.SIZES,
                           workloads: tuple[str, ...] = FUSED_WORKLOADS) -> dict[str, Any]:
    """Array operations (each at least one kernel launch on a GPU) and host syncs of one
    steady-state training step as CuPy would run it: the portable path, and the fused kernels
    of gradflow.backend.fused (their bodies run on the host through g++ here; one call counts
    as one operation). Model sizes are the benchmark's (CNN batch 64 model, LSTM and
    transformer (seq 64, hidden 128)); ``batch`` does not change the counts. The optimizer's
    update is part of each step (fused too: one kernel per flat buffer). Workloads besides the
    models: ``mlp_linear_activation``, the MLP with ``Linear(..., activation="relu")`` in place
    of Linear then ReLU; ``sgd_momentum_step`` and ``adam_step``, the optimizer step alone on 20
    parameter arrays (10 Linear layers) with fresh gradients, as from backprop."""
    import gradflow as gf
    from gradflow import layers as L
    from gradflow.losses import MSE, SoftmaxCrossEntropy
    from gradflow.optim import SGD, Adam

    rng = np.random.default_rng(0)

    def mlp(counter: Any) -> Callable[[], Any]:
        return mlp_step.build_gradflow_step(batch, optimizer="sgd", counter=counter, sizes=sizes)

    def mlp_linear_activation(counter: Any) -> Callable[[], Any]:
        widths = list(sizes)
        model = gf.Sequential(*[L.Linear(a, b, activation="relu" if i < len(widths) - 2 else None, rng=i)
                                for i, (a, b) in enumerate(zip(widths[:-1], widths[1:]))])
        x = rng.standard_normal((batch, widths[0]), dtype=np.float32)
        optimizer = SGD(model, lr=mlp_step.SGD_LR, momentum=mlp_step.MOMENTUM)  # as the mlp workload
        return _counted_model_step(model, SoftmaxCrossEntropy(), optimizer, x, rng.integers(0, widths[-1], batch))(counter)

    def optimizer_step(build_optimizer: Callable[[Any], Any]) -> Callable[[Any], Callable[[], Any]]:
        def build(counter: Any) -> Callable[[], Any]:
            model = gf.Sequential(*[L.Linear(8, 8, rng=i) for i in range(10)])
            optimizer = build_optimizer(model)
            counter.wrap_layer(model)
            params = model.parameters()

            def step() -> None:
                for p in params:  # fresh gradient arrays, as backprop hands them over
                    p.grad = counter.wrap(rng.standard_normal(p.shape, dtype=np.float32))
                optimizer.step()

            return step

        return build

    def cnn(counter: Any) -> Callable[[], Any]:
        from benchmarks.cnn_step import build_gradflow_model

        model = build_gradflow_model()
        x = rng.standard_normal((batch, 1, 28, 28), dtype=np.float32)
        return _counted_model_step(model, SoftmaxCrossEntropy(), SGD(model, lr=0.01), x,
                                   rng.integers(0, 10, batch))(counter)

    def lstm(counter: Any) -> Callable[[], Any]:
        model = gf.Sequential(L.LSTM(128, 128, return_sequences=False, rng=0), L.Linear(128, 10, rng=1))
        x = rng.standard_normal((batch, 64, 128), dtype=np.float32)
        return _counted_model_step(model, SoftmaxCrossEntropy(), Adam(model, lr=1e-3), x,
                                   rng.integers(0, 10, batch))(counter)

    def transformer_block(counter: Any) -> Callable[[], Any]:
        model = L.TransformerEncoderBlock(128, 4, rng=0)
        x = rng.standard_normal((batch, 64, 128), dtype=np.float32)
        return _counted_model_step(model, MSE(), Adam(model, lr=1e-3), x,
                                   rng.standard_normal((batch, 64, 128), dtype=np.float32))(counter)

    builders = {"mlp": mlp, "mlp_linear_activation": mlp_linear_activation, "cnn": cnn, "lstm": lstm,
                "transformer_block": transformer_block,
                "sgd_momentum_step": optimizer_step(lambda m: SGD(m, lr=0.01, momentum=0.9, weight_decay=1e-4)),
                "adam_step": optimizer_step(lambda m: Adam(m, lr=1e-3))}
    found: dict[str, Any] = {}
    for name in workloads:
        try:
            found[name] = {engine_name: _count_step(builders[name], engine)
                           for engine_name, engine in (("portable", "portable"), ("fused", "host"))}
        except Exception as error:  # noqa: BLE001 - a peer's layer change must not stop the suite
            found[name] = {"status": f"failed: {type(error).__name__}: {error}"}
    return found


# --------------------------------------------------------------------------------------------
# Mixed precision in fit: speed and accuracy against float32
# --------------------------------------------------------------------------------------------


def mixed_precision_digits(epochs: int = 8, precisions: tuple[str, ...] = ("float32", "float16")) -> list[dict[str, Any]]:
    """``fit(..., precision=p)`` of a Linear-BatchNorm-ReLU-Linear model on scikit-learn's digits
    (Adam 3e-3, batch 128): seconds per epoch and test accuracy for each precision. On NumPy
    float16 saves memory, not time (its float16 matmul does not use BLAS)."""
    import time

    import gradflow as gf
    from gradflow import layers as L
    from gradflow.datasets import digits
    from gradflow.losses import SoftmaxCrossEntropy
    from gradflow.optim import Adam
    from gradflow.train import evaluate, fit

    data = digits()
    rows = []
    for precision in precisions:
        model = gf.Sequential(L.Linear(64, 64, rng=0), L.BatchNorm1d(64), L.ReLU(), L.Linear(64, 10, rng=1))
        started = time.perf_counter()
        try:
            fit(model, SoftmaxCrossEntropy(), Adam(model, lr=3e-3), (data.x_train, data.y_train), epochs=epochs,
                batch_size=128, verbose=0, precision=precision)
        except Exception as error:  # noqa: BLE001 - e.g. bfloat16 on a device without it
            rows.append({"precision": precision, "status": f"{type(error).__name__}: {error}"})
            continue
        seconds = time.perf_counter() - started
        accuracy = evaluate(model, None, (data.x_test, data.y_test))["accuracy"]
        rows.append({"precision": precision, "status": "ok", "seconds_per_epoch": seconds / max(epochs, 1),
                     "accuracy": accuracy, "epochs": epochs})
    return rows
# Operations per optimizer step against the number of parameter arrays (multi-tensor updates)
# --------------------------------------------------------------------------------------------

def _optimizer_builders() -> dict[str, Callable[[Any], Any]]:
    from gradflow import optim

    return {
        "sgd": lambda m: optim.SGD(m, lr=0.01),
        "sgd_momentum": lambda m: optim.SGD(m, lr=0.01, momentum=0.9, weight_decay=1e-4),
        "adam": lambda m: optim.Adam(m, lr=1e-3),
        "adamw_clip_norm": lambda m: optim.AdamW(m, lr=1e-3, clip_norm=1.0),
        "adam_amsgrad_clip_value": lambda m: optim.Adam(m, lr=1e-3, amsgrad=True, clip_value=0.5),
        "rmsprop_centered_momentum": lambda m: optim.RMSprop(m, lr=1e-3, centered=True, momentum=0.9),
        "adagrad": lambda m: optim.Adagrad(m, lr=1e-2, lr_decay=1e-3),
        "nadam": lambda m: optim.NAdam(m, lr=1e-3),
        "radam": lambda m: optim.RAdam(m, lr=1e-3),
        "adamax": lambda m: optim.Adamax(m, lr=1e-3),
        "adadelta": lambda m: optim.Adadelta(m),
        "lion": lambda m: optim.Lion(m, lr=1e-4, weight_decay=0.1),
    }


def optimizer_step_operations(layer_counts: tuple[int, ...] = (1, 10), width: int = 8,
                              names: list[str] | None = None,
                              engines: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Array operations of one steady-state ``optimizer.step()`` (the third), for a stack of
    ``n`` Linear layers (``2n`` parameter arrays) per ``n`` in ``layer_counts``; plus
    ``clip_grad_norm``/``clip_grad_value`` called by hand. Fresh gradient arrays arrive at each
    step, as from backprop, so the count includes the one ``concat`` that packs them. Returns
    ``{configuration: {parameter arrays: operations}}``: equal counts across a row mean the
    step is independent of the number of parameter arrays (one flat update per group).

    engines: ``None`` counts the NumPy path as above. A tuple of ``"portable"``/``"fused"``
    counts the step as CuPy would run it (GPU-shaped proxies, as :func:`count_fused_operations`)
    on the portable array-API path and with the fused optimizer kernels (run through their host
    build, one call one operation): ``{configuration: {engine: {parameter arrays: operations}}}``.

        python -c "from benchmarks.measure import optimizer_step_operations as f; print(f(engines=('portable', 'fused')))"
    """
    if engines is not None:
        return {name: {engine: _optimizer_step_counts(layer_counts, width, name, engine) for engine in engines}
                for name in (names or list(_optimizer_builders()) + ["clip_grad_norm", "clip_grad_value"])}
    return {name: _optimizer_step_counts(layer_counts, width, name, None)
            for name in (names or list(_optimizer_builders()) + ["clip_grad_norm", "clip_grad_value"])}


def _optimizer_step_counts(layer_counts: tuple[int, ...], width: int, name: str, engine: str | None) -> dict[int, int]:
    import array_api_compat.numpy as compat_numpy

    import gradflow as gf
    from gradflow import layers, optim
    from gradflow.backend import fused
    from gradflow.testing.counting import OperationCounter

    builders = _optimizer_builders()
    builders["clip_grad_norm"] = builders["clip_grad_value"] = builders["sgd"]
    rng = np.random.default_rng(0)
    row = {}
    for count in layer_counts:
        counter = OperationCounter(compat_numpy) if engine is None else _gpu_shaped_counter(compat_numpy)
        model = gf.Sequential(*[layers.Linear(width, width, rng=i) for i in range(count)])
        optimizer = builders[name](model)
        counter.wrap_layer(model)
        params = model.parameters()
        with fused.engine({"fused": "host", None: "portable"}.get(engine, engine)):
            for step in range(3):
                for p in params:  # fresh gradient arrays, as backprop hands them over
                    p.grad = counter.wrap(rng.normal(size=p.shape).astype(np.float32))
                if step == 2:
                    counter.reset()
                if name == "clip_grad_norm":
                    optim.clip_grad_norm(params, 1.0)
                elif name == "clip_grad_value":
                    optim.clip_grad_value(params, 0.5)
                else:
                    optimizer.step()
        row[len(params)] = counter.total
    return row
