"""Fused elementwise kernels (gradflow.backend.fused) against their portable paths.

No GPU exists here, so the kernels' arithmetic is proven on the host: every CUDA C body is
compiled as C++ by g++ into a shared library called through ctypes on NumPy arrays
(``fused.engine("host")``) and compared with the portable array-API path in float32 and
float64. The same bodies are compiled as CUDA by nvcc (or NVRTC through CuPy) where either
exists. A CuPy on which kernels cannot be built (a simulated CuPy, no compiler) must fall back
to the portable path.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from gradflow import optim
from gradflow.backend import fused

needs_gxx = pytest.mark.skipif(shutil.which("g++") is None, reason="g++ is not installed: the host engine "
                               "compiles the kernel bodies with it")
TOLERANCE = {np.float32: dict(rtol=1e-5, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-13)}  # a few ulps (1 + tanh cancels)
DTYPES = (np.float32, np.float64)


def _data(dtype, shape=(9, 7), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape).astype(dtype) * 2 for _ in range(3)]


def _both(function, *args, **kwargs):
    with fused.engine("host"):
        kernel = function(*args, **kwargs)
    return kernel, function.portable(*args, **kwargs)


def _close(a, b, dtype):
    for x, y in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
        assert x.dtype == y.dtype == dtype, (x.dtype, y.dtype)
        np.testing.assert_allclose(x, y, **TOLERANCE[dtype])


@needs_gxx
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_bias_activation_kernels_match_the_portable_path(dtype, approximate):
    x, dy, _ = _data(dtype)
    b = np.linspace(-1, 1, 7).astype(dtype)
    _close(*_both(fused.bias_relu, x, b), dtype)
    _close(*_both(fused.bias_relu, x, None), dtype)
    _close(*_both(fused.relu_backward, dy, x), dtype)
    _close(*_both(fused.bias_gelu, x, b, approximate), dtype)
    _close(*_both(fused.bias_gelu, x, None, approximate), dtype)
    _close(*_both(fused.gelu_backward, dy, x, approximate), dtype)
    _close(*_both(fused.gelu_backward, dy, x, approximate, bias=b), dtype)
    np.testing.assert_array_equal(_both(fused.gelu_backward, dy, x, approximate, bias=b)[0],
                                  _both(fused.gelu_backward, dy, x + b, approximate)[0])


@needs_gxx
@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_backward_kernel_matches_finite_differences(dtype):
    if dtype is np.float32:
        pytest.skip("finite differences need float64")
    x, _, _ = _data(dtype)
    h = 1e-6
    with fused.engine("host"):
        for approximate in ("none", "tanh"):
            numeric = (fused.bias_gelu(x + h, None, approximate) - fused.bias_gelu(x - h, None, approximate)) / (2 * h)
            np.testing.assert_allclose(fused.gelu_backward(np.ones_like(x), x, approximate), numeric, rtol=1e-7, atol=1e-9)


@needs_gxx
@pytest.mark.parametrize("dtype", DTYPES)
def test_layer_norm_kernels_match_the_portable_path(dtype):
    x, dy, _ = _data(dtype, (4, 3, 6))
    mean = x.mean(axis=-1, keepdims=True)
    inv_std = 1 / np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + 1e-5)
    gamma, beta = np.linspace(0.5, 2, 6).astype(dtype), np.linspace(-1, 1, 6).astype(dtype)
    (y, x_hat), (y0, x_hat0) = _both(fused.layer_norm_affine, x, mean, inv_std, gamma, beta)
    _close((y, x_hat), (y0, x_hat0), dtype)
    g = dy * gamma
    mean_g, mean_gx = g.mean(axis=-1, keepdims=True), (g * x_hat).mean(axis=-1, keepdims=True)
    _close(*_both(fused.layer_norm_backward, g, x_hat, inv_std, mean_g, mean_gx), dtype)


@needs_gxx
@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_cross_entropy_kernels_match_the_portable_path_and_flag_bad_labels(dtype):
    x, _, _ = _data(dtype)
    labels = np.arange(9, dtype=np.int64) % 7
    (value, delta, ok), (value0, delta0, ok0) = _both(fused.softmax_cross_entropy, x, labels, 1 / 9)
    _close((value, delta), (value0, delta0), dtype)
    assert bool(ok) and bool(ok0)
    # float64 reference: mean over items of log-sum-exp minus the label's logit
    z = x.astype(np.float64)
    reference = np.mean(np.log(np.exp(z).sum(axis=1)) - z[np.arange(9), labels])
    np.testing.assert_allclose(float(value), reference, rtol=1e-5 if dtype is np.float32 else 1e-12)
    labels[3] = 7
    with fused.engine("host"):
        value, _, ok = fused.softmax_cross_entropy(x, labels, 1 / 9)
    assert not bool(ok) and np.isnan(value)


def _linear_step(layers_, x, dy, engine):
    """Output, input δ and parameter gradients of ``layers_`` (a list, chained) under ``engine``."""
    with fused.engine(engine):
        h, backprops = x, []
        for layer in layers_:
            h, backprop = layer(h, train=True)
            backprops.append(backprop)
        dx = dy
        for backprop in reversed(backprops):
            dx = backprop(dx)
    return [h, dx] + [p.grad for layer in layers_ for p in layer.parameters()]


@needs_gxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
def test_linear_activation_option_equals_linear_then_activation_on_both_engines(activation, dtype):
    from gradflow import layers

    separate = {"relu": layers.ReLU, "gelu": layers.GELU, "gelu_tanh": lambda: layers.GELU("tanh")}[activation]
    rng = np.random.default_rng(3)
    x, dy = rng.standard_normal((6, 2, 5)).astype(dtype), rng.standard_normal((6, 2, 4)).astype(dtype)
    for bias in (True, False):
        results = {}
        for engine in ("portable", "host"):
            one = layers.Linear(5, 4, bias=bias, activation=activation, rng=0, dtype=dtype)
            two = [layers.Linear(5, 4, bias=bias, rng=0, dtype=dtype), separate()]
            results[engine] = _linear_step([one], x, dy, engine), _linear_step(two, x, dy, engine)
        fused_one, fused_two = results["host"]
        portable_one, portable_two = results["portable"]
        for a, b in zip(portable_one, portable_two):  # the portable option is the two layers, bit for bit
            np.testing.assert_array_equal(a, b)
        for a, b in zip(fused_one, portable_one):  # the fused kernels agree within a few ulps
            _close(a, b, np.dtype(dtype).type)
        if activation == "relu":
            for a, b in zip(fused_one, fused_two):
                np.testing.assert_array_equal(a, b)


@needs_gxx
def test_linear_activation_option_saves_launches_on_the_fused_engine():
    import array_api_compat.numpy as compat_numpy

    from benchmarks.measure import _gpu_shaped_counter
    from gradflow import layers

    x = np.ones((8, 5), np.float32)
    counts = {}
    for name, build in (("option", lambda: [layers.Linear(5, 4, activation="gelu", rng=0)]),
                        ("separate", lambda: [layers.Linear(5, 4, rng=0), layers.GELU()])):
        counter = _gpu_shaped_counter(compat_numpy)
        built = build()
        for layer in built:
            counter.wrap_layer(layer)
        _linear_step(built, counter.wrap(x), counter.wrap(np.ones((8, 4), np.float32)), "host")
        counts[name] = counter.total
    assert counts["option"] == counts["separate"] - 1, counts  # the bias add is inside the kernels


OPTIMIZERS = {
    "sgd": lambda m: optim.SGD(m, lr=0.05),
    "sgd_decay_maximize": lambda m: optim.SGD(m, lr=0.05, weight_decay=0.1, maximize=True),
    "sgd_momentum_dampening": lambda m: optim.SGD(m, lr=0.05, momentum=0.9, dampening=0.2, weight_decay=1e-2),
    "sgd_nesterov": lambda m: optim.SGD(m, lr=0.05, momentum=0.9, nesterov=True),
    "adam": lambda m: optim.Adam(m, lr=1e-2),
    "adam_decay_amsgrad_maximize": lambda m: optim.Adam(m, lr=1e-2, weight_decay=0.1, amsgrad=True, maximize=True),
    "adamw": lambda m: optim.AdamW(m, lr=1e-2, weight_decay=0.1),
    "adamw_amsgrad_groups": lambda m: optim.AdamW(optim.weight_decay_groups(m, 0.1), lr=1e-2, amsgrad=True),
    "rmsprop": lambda m: optim.RMSprop(m, lr=1e-2, weight_decay=0.1),
    "rmsprop_centered": lambda m: optim.RMSprop(m, lr=1e-2, centered=True, maximize=True),
    "rmsprop_momentum": lambda m: optim.RMSprop(m, lr=1e-2, momentum=0.9),
    "rmsprop_centered_momentum": lambda m: optim.RMSprop(m, lr=1e-2, centered=True, momentum=0.9),
    "adagrad": lambda m: optim.Adagrad(m, lr=0.1, lr_decay=0.01, initial_accumulator_value=0.1, weight_decay=0.1),
}


def _optimizer_run(build, dtype, engine, skip_one=False):
    """Four steps of ``build``'s optimizer on a 2-layer model from fixed gradients; returns the
    parameters and every slot. With skip_one the first bias has no gradient at step 2 (the
    optimizer then updates segment by segment)."""
    import gradflow as gf
    from gradflow import layers

    model = gf.Sequential(layers.Linear(5, 4, rng=0, dtype=dtype), layers.Linear(4, 3, rng=1, dtype=dtype))
    optimizer = build(model)
    rng = np.random.default_rng(1)
    params = model.parameters()
    with fused.engine(engine):
        for step in range(4):
            for p in params:
                p.grad = rng.standard_normal(p.shape).astype(dtype)
            if skip_one and step == 2:
                params[1].grad = None
            optimizer.step()
    return [p.value.copy() for p in params] + [a.copy() for p in params for _, a in sorted(p.state.items())]


@needs_gxx
@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("name", sorted(OPTIMIZERS))
def test_fused_optimizer_updates_match_the_portable_rule_bit_for_bit(name, dtype):
    for skip_one in (False, True):
        fused_run = _optimizer_run(OPTIMIZERS[name], dtype, "host", skip_one)
        portable = _optimizer_run(OPTIMIZERS[name], dtype, "portable", skip_one)
        assert len(fused_run) == len(portable)
        for a, b in zip(fused_run, portable):
            np.testing.assert_array_equal(a, b)


@needs_gxx
def test_fused_optimizers_launch_one_kernel_per_flat_buffer():
    from benchmarks.measure import optimizer_step_operations

    counts = optimizer_step_operations(layer_counts=(1, 10), names=["sgd_momentum", "adam", "adamw_clip_norm",
                                                                    "rmsprop_centered_momentum", "adagrad"],
                                       engines=("portable", "fused"))
    for name, row in counts.items():
        assert len(set(row["fused"].values())) == 1, (name, row)  # constant in the number of arrays
        assert max(row["fused"].values()) < min(row["portable"].values()), (name, row)
    assert counts["adam"]["fused"] == {2: 2, 20: 2}  # the concat that packs fresh gradients, the kernel


def test_kernel_sources_compile_as_cuda_with_nvcc_or_nvrtc(tmp_path):
    source = fused.cuda_source()
    expected = 2 * len(fused.KERNELS)  # one instantiation per kernel and dtype
    nvcc = shutil.which("nvcc") or shutil.which("/usr/local/bin/nvcc")
    if nvcc:
        cu = tmp_path / "fused.cu"
        cu.write_text(source)
        done = subprocess.run([nvcc, "-ptx", str(cu), "-o", str(tmp_path / "fused.ptx")],
                              capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        assert len(re.findall(r"^\.visible \.entry", (tmp_path / "fused.ptx").read_text(), re.M)) == expected
        return
    try:
        import cupy
        from cupy.cuda import nvrtc  # noqa: F401
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"neither nvcc nor NVRTC is available here ({type(error).__name__}: {error})")
    try:
        module = cupy.RawModule(code=source, options=("-std=c++14",),
                                name_expressions=[f"{k}_impl<float>" for k in fused.KERNELS])
        module.compile()
    except Exception as error:  # noqa: BLE001 - NVRTC present but no device to compile for
        pytest.skip(f"NVRTC could not compile without a device: {error}")


def test_host_source_is_the_same_bodies_as_the_cupy_kernels():
    host, cuda = fused.host_source(), fused.cuda_source()
    for kernel in fused.KERNELS.values():
        assert kernel.body in host and kernel.body in cuda


def test_a_cupy_that_cannot_build_kernels_falls_back_to_the_portable_path(monkeypatch):
    # A stand-in array type the backend takes for CuPy's: no real CuPy (or a simulated one
    # without a compiler) makes the first kernel build fail, and the portable path answers.
    from gradflow.testing.counting import OperationCounter

    monkeypatch.setattr(fused, "_CUPY_BROKEN", [])
    monkeypatch.setattr(fused, "_CUPY_KERNELS", {})  # as in a fresh process (simulated cuda may have run kernels)
    monkeypatch.setattr(fused, "_CUPY_FAILED", {})
    monkeypatch.setitem(__import__("sys").modules, "cupy", None)  # "import cupy" fails
    counter = OperationCounter(np)
    counter.array_type.gradflow_library = "cupy"
    x, dy, _ = _data(np.float32)
    px, pdy = counter.wrap(x), counter.wrap(dy)
    assert fused.available(px)
    result = fused.relu_backward(pdy, px)
    np.testing.assert_array_equal(result._array, dy * (x > 0))
    assert fused.cupy_status() is not None and not fused.available(px)
    assert "fused:relu_backward" not in counter.by_name


def test_environment_variable_and_engine_force_the_portable_path(monkeypatch):
    x = np.ones((2, 3), np.float32)
    with fused.engine("host"):
        assert fused.available(x)
        monkeypatch.setenv("GRADFLOW_FUSED", "0")
        assert not fused.available(x)
    monkeypatch.delenv("GRADFLOW_FUSED")
    assert not fused.available(x)  # NumPy takes the portable path unless a test asks for host
    with pytest.raises(ValueError, match="engine must be"):
        with fused.engine("gpu"):
            pass


@needs_gxx
def test_fused_path_cuts_the_operations_of_a_training_step():
    from benchmarks import measure

    found = measure.count_fused_operations(8, sizes=(20, 12, 12, 5),
                                           workloads=("mlp", "mlp_linear_activation", "adam_step"))
    assert found["mlp"]["fused"]["operations"] < found["mlp"]["portable"]["operations"]
    # Linear(activation="relu") folds the two bias adds into the ReLU kernels
    assert found["mlp_linear_activation"]["fused"]["operations"] == found["mlp"]["fused"]["operations"] - 2
    assert found["adam_step"]["fused"]["by_name"]["fused:adam"] == 1
    assert any(name.startswith("fused:") for name in found["mlp"]["fused"]["by_name"])
    assert found["mlp"]["fused"]["syncs"] == found["mlp"]["portable"]["syncs"]


# -- the CuPy path itself, on the simulated GPUs (tests/simcuda): its ElementwiseKernel runs the
# same kernel text through g++ with CuPy's argument rules (tests/simcuda/cupy/_elementwise.py)

def _simulated_cupy(monkeypatch):
    from tests.conftest import SIMULATED_CUDA

    if not SIMULATED_CUDA:
        pytest.skip("checks the simulated CuPy's ElementwiseKernel; a real CuPy is installed")
    import cupy

    if cupy._elementwise.COMPILER is None:
        pytest.skip("g++ absent: the simulated ElementwiseKernel cannot compile, fused kernels were not run on cuda:N")
    monkeypatch.delenv("GRADFLOW_FUSED", raising=False)
    for name, fresh in (("_CUPY_BROKEN", []), ("_CUPY_KERNELS", {}), ("_CUPY_FAILED", {})):
        monkeypatch.setattr(fused, name, fresh)
    return cupy


def test_on_simulated_cuda_the_fused_kernels_run_on_the_current_device(monkeypatch):
    cupy = _simulated_cupy(monkeypatch)
    x, dy, _ = _data(np.float32)
    b = np.linspace(-1, 1, 7).astype(np.float32)
    launches = dict(cupy._elementwise.launches)
    with cupy.cuda.Device(1):
        cx, cdy, cb = cupy.asarray(x), cupy.asarray(dy), cupy.asarray(b)
        assert fused.available(cx)
        y = fused.bias_relu(cx, cb)
        dx = fused.relu_backward(cdy, y)
    assert y.device.id == dx.device.id == 1  # allocated on the current device, where the inputs are
    np.testing.assert_array_equal(y.get(), fused.bias_relu.portable(x, b))
    np.testing.assert_array_equal(dx.get(), fused.relu_backward.portable(dy, fused.bias_relu.portable(x, b)))
    for name in ("gf_bias_relu", "gf_relu_backward"):
        assert cupy._elementwise.launches[name] == launches.get(name, 0) + 1, name
    assert fused.cupy_status() is None and fused.available(cx)
    with pytest.raises(ValueError, match="Peer access is unavailable"):  # outside its device: CuPy's error
        fused.bias_relu(cx, cb)
    assert fused.cupy_status() is None  # the caller's mistake does not switch the kernels off


def test_on_simulated_cuda_the_optimizer_kernels_update_in_place(monkeypatch):
    cupy = _simulated_cupy(monkeypatch)
    p, g, _ = (cupy.asarray(a) for a in _data(np.float64, (5, 4)))
    expected = p.get() - 0.1 * g.get()
    before = cupy._elementwise.launches["gf_sgd"]
    assert fused.sgd_(p, g, None, lr=0.1) is True
    assert cupy._elementwise.launches["gf_sgd"] == before + 1
    np.testing.assert_array_equal(p.get(), expected)


def test_on_simulated_cuda_a_dtype_whose_kernel_does_not_compile_falls_back_alone(monkeypatch):
    # gf_xent_rows mixes T and float in ``c ? a : b``: ambiguous for CuPy's float16 class
    # (cupy/_core/include/cupy/float16.cuh converts both ways), so it compiles for float32 only
    cupy = _simulated_cupy(monkeypatch)
    logits = np.random.default_rng(0).standard_normal((4, 3))
    labels = np.array([0, 2, 1, 1])
    for dtype in (np.float32, np.float16, np.float32):
        value, delta, ok = fused.softmax_cross_entropy(cupy.asarray(logits.astype(dtype)), cupy.asarray(labels), 0.25)
        reference = fused.softmax_cross_entropy.portable(logits.astype(dtype), labels, 0.25)
        np.testing.assert_allclose(value.get(), reference[0], rtol=1e-3)
        assert delta.dtype == dtype and bool(ok)
    assert ("gf_xent_rows", np.dtype(np.float16)) in fused._CUPY_FAILED
    assert ("gf_xent_rows", np.dtype(np.float32)) in fused._CUPY_KERNELS and fused.cupy_status() is None


def test_on_simulated_cuda_without_a_compiler_the_portable_path_runs(monkeypatch):
    cupy = _simulated_cupy(monkeypatch)
    monkeypatch.setattr(cupy._elementwise, "COMPILER", None)
    monkeypatch.setattr(cupy._elementwise, "_LIBRARIES", {})
    x, dy, _ = _data(np.float32)
    result = fused.relu_backward(cupy.asarray(dy), cupy.asarray(x))
    np.testing.assert_array_equal(result.get(), dy * (x > 0))
    assert "CompileException" in fused.cupy_status() and not fused.available(cupy.asarray(x))
