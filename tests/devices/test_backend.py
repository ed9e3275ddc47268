"""Device strings, transfers, RNG and the fast primitives with their portable fallbacks."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest

import gradflow as gf
from gradflow.backend import placement
from gradflow.backend.cupy_library import CuPyLibrary
from gradflow import backend
from gradflow.backend import DeviceError


def test_cpu_device_uses_numpy_and_float32_by_default():
    dev = gf.device("cpu")
    assert dev.name == "cpu" and dev == "cpu"
    z = dev.zeros((2, 3))
    assert isinstance(z, np.ndarray) and z.dtype == np.float32


@pytest.mark.parametrize("spec", ["gpu", "cuda:x", "cpu:3", "tpu", "", "cuda:-1"])
def test_unknown_device_string_is_a_clear_value_error(spec):
    with pytest.raises(ValueError, match="device"):
        gf.device(spec)


def test_device_rejects_non_string():
    with pytest.raises(TypeError, match="device must be a string"):
        gf.device(3)


def test_auto_is_cpu_without_a_gpu(monkeypatch):
    monkeypatch.setattr(placement, "cuda_device_count", lambda: 0)
    assert gf.device("auto").name == "cpu"


def test_cuda_without_cupy_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "cupy", None)  # import cupy -> ImportError
    with pytest.raises(DeviceError, match=r"gradflow-nn\[cuda12\]"):
        gf.device("cuda")


def _fake_cupy(monkeypatch, count: int):
    fake = types.ModuleType("cupy")
    fake.is_available = lambda: count > 0
    fake.cuda = types.SimpleNamespace(runtime=types.SimpleNamespace(getDeviceCount=lambda: count, getDevice=lambda: 0))
    monkeypatch.setitem(sys.modules, "cupy", fake)


def test_cuda_with_cupy_but_no_gpu_says_so(monkeypatch):
    _fake_cupy(monkeypatch, 0)
    with pytest.raises(DeviceError, match="sees no GPU"):
        gf.device("cuda:0")


def test_cuda_index_out_of_range_names_the_count(monkeypatch):
    _fake_cupy(monkeypatch, 2)
    with pytest.raises(DeviceError, match=r"GPU index 5 is out of range; this machine has 2"):
        gf.device("cuda:5")


def test_devices_lists_cpu_and_each_visible_gpu(monkeypatch):
    monkeypatch.setattr(placement, "cuda_device_count", lambda: 0)
    assert [d.name for d in gf.devices()] == ["cpu"]


def test_send_and_to_numpy_round_trip_keep_values_and_dtype(device):
    host = np.arange(6, dtype=np.float64).reshape(2, 3)
    x = device.send(host, "float32")
    assert device.owns(x)
    assert backend.device_of(x) == device
    back = gf.to_numpy(x)
    assert back.dtype == np.float32
    np.testing.assert_array_equal(back, host.astype(np.float32))
    labels = device.send(np.array([1, 2, 3]))
    assert backend.dtype_name(labels.dtype) == "int64"


def test_send_to_the_same_device_returns_the_array_itself(device):
    x = device.send(np.ones(3), "float32")
    assert device.send(x) is x


def test_device_rng_is_seeded_and_resumable(device):
    a = device.rng(3)
    first = gf.to_numpy(a.random((4,), device.dtype("float32")))
    state = a.get_state()
    second = gf.to_numpy(a.random((4,), device.dtype("float32")))
    b = device.rng(3)
    np.testing.assert_array_equal(gf.to_numpy(b.random((4,), device.dtype("float32"))), first)
    b.set_state(state)
    np.testing.assert_array_equal(gf.to_numpy(b.random((4,), device.dtype("float32"))), second)
    assert not np.array_equal(first, second)
    normal = a.normal((1000,), device.dtype("float32"))
    assert backend.dtype_name(normal.dtype) == "float32"
    assert abs(float(np.mean(gf.to_numpy(normal)))) < 0.15


def test_strict_device_refuses_to_mix_with_cpu_arrays():
    strict = gf.device("strict")
    a = strict.send(np.ones(3), "float32")
    b = gf.device("cpu").send(np.ones(3), "float32")
    with pytest.raises((TypeError, ValueError)):
        a + b


@pytest.mark.parametrize("portable", [False, True])
def test_scatter_add_rows_sums_duplicates_on_every_device(device, portable):
    target = device.zeros((4, 2), "float64")
    indices = device.send(np.array([0, 2, 2, 3, 0, 0]))
    values = device.send(np.arange(12, dtype=np.float64).reshape(6, 2))
    backend.scatter_add_rows(target, indices, values, portable=portable)
    expected = np.zeros((4, 2))
    np.add.at(expected, [0, 2, 2, 3, 0, 0], np.arange(12.0).reshape(6, 2))
    np.testing.assert_array_equal(gf.to_numpy(target), expected)


@pytest.mark.parametrize("portable", [False, True])
def test_erf_matches_scipy_to_float64_accuracy(device, portable):
    from scipy.special import erf

    host = np.concatenate([np.linspace(-7, 7, 2001), [0.0, 0.5, -0.5, 4.0, -4.0, 1e-12]])
    got = gf.to_numpy(backend.erf(device.send(host, "float64"), portable=portable))
    np.testing.assert_allclose(got, erf(host), rtol=1e-14, atol=1e-15)


def test_library_versions_lists_numpy():
    assert "numpy" in backend.library_versions()


class _Recorder:
    """A stand-in for CuPy that records which GPU each call ran under."""

    def __init__(self):
        self.current = 0
        self.calls = []
        recorder = self

        class DeviceContext:
            def __init__(self, index):
                self.index = index
                self.previous = None
                self.id = index

            def __enter__(self):
                self.previous, recorder.current = recorder.current, self.index
                return self

            def __exit__(self, *exc):
                recorder.current = self.previous

            def synchronize(self):
                recorder.calls.append(("synchronize", self.index))

        class Pool:
            def used_bytes(self):
                return 10

            def total_bytes(self):
                return 30

            def free_all_blocks(self):
                recorder.calls.append(("free_all_blocks", recorder.current))

        self.ndarray = type("ndarray", (), {})
        self.cuda = types.SimpleNamespace(
            Device=DeviceContext,
            runtime=types.SimpleNamespace(memGetInfo=lambda: (5, 100), getDeviceCount=lambda: 2),
        )
        self.get_default_memory_pool = Pool
        self.get_default_pinned_memory_pool = Pool

    def asarray(self, host):
        self.calls.append(("asarray", self.current))
        return host


def test_cuda_adapter_allocates_and_frees_on_the_gpu_that_was_asked_for():
    recorder = _Recorder()
    library = CuPyLibrary.__new__(CuPyLibrary)
    library.index, library._cupy = 1, recorder
    library.from_host(np.ones(2))
    with library.context():
        recorder.calls.append(("inside context", recorder.current))
    library.free_cached_memory()
    library.synchronize()
    assert ("asarray", 1) in recorder.calls and ("inside context", 1) in recorder.calls
    assert ("free_all_blocks", 1) in recorder.calls and ("synchronize", 1) in recorder.calls
    assert recorder.current == 0  # the context was left again
    assert library.memory() == {"in_use": 10, "held": 30, "device_free": 5, "device_total": 100}
    assert library.name == "cuda:1"


def test_cpu_memory_statistics_are_empty_and_freeing_is_a_no_op():
    dev = gf.device("cpu")
    assert dev.memory() == {}
    dev.free_cached_memory()
    dev.synchronize()


# The CUDA generator (backend.CounterRNG) is tested on the simulated GPUs in
# tests/devices/test_simulated_cuda.py (no generator per mask, exact resume, on the device).


@pytest.mark.parametrize("portable", [False, True])
def test_erf_of_float32_is_float32_accurate_on_every_device(device, portable):
    """float32 input: float32 output within a few ULP (NumPy uses a float32 rational
    approximation there instead of SciPy's double-precision erf)."""
    from scipy.special import erf

    host = np.concatenate([np.linspace(-9, 9, 200_001), np.logspace(-30, 1, 2000), -np.logspace(-30, 1, 2000), [0.0]])
    host32 = host.astype(np.float32)
    got = backend.erf(device.send(host32, "float32"), portable=portable)
    assert backend.dtype_name(got.dtype) == "float32"
    exact = erf(host32.astype(np.float64))
    np.testing.assert_allclose(gf.to_numpy(got).astype(np.float64), exact, rtol=5e-7, atol=1e-37)


@pytest.mark.parametrize("portable", [False, True])
def test_erf_of_float64_is_within_1e15_relative_of_math_erf(device, portable):
    """The float64 erf (SciPy's, or Cody's rational approximations without SciPy) is good enough
    for float64 gradient checks: checked against the standard library, which needs no SciPy."""
    import math

    host = np.concatenate([np.linspace(-7, 7, 4001), np.logspace(-300, 1, 600), -np.logspace(-300, 1, 600),
                           [0.0, 0.5, -0.5, 4.0, -4.0, 27.0, -30.0]])
    exact = np.array([math.erf(v) for v in host])
    got = gf.to_numpy(backend.erf(device.send(host, "float64"), portable=portable))
    np.testing.assert_allclose(got, exact, rtol=1e-15, atol=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("portable", [False, True])
def test_gelu_exact_and_its_slope_match_the_float64_formula(device, dtype, portable):
    """``gelu_exact``: y = x Φ(x) and slope = Φ(x) + x φ(x), to float64 accuracy in float64 (the
    gradient checks) and within about 1e-6 absolute in float32 (NumPy's float32 path uses the erfc
    form of Abramowitz & Stegun 7.1.26, as PyTorch's CPU erf, within 5e-7; elsewhere ½(1 + erf)
    loses up to 1e-6 to cancellation where Φ is small)."""
    import math

    from scipy.special import erf

    host = np.concatenate([np.linspace(-12, 12, 40_001), np.logspace(-30, 1, 500), -np.logspace(-30, 1, 500),
                           [0.0, -0.0, 1e4, -1e4]])
    x = host.astype(dtype).astype(np.float64)
    cdf = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))
    y_exact, slope_exact = x * cdf, cdf + x * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
    y, slope = backend.primitives.gelu_exact(device.send(host, dtype), portable=portable)
    assert backend.dtype_name(y.dtype) == dtype and backend.dtype_name(slope.dtype) == dtype
    rtol, atol = (1e-14, 1e-15) if dtype == "float64" else (5e-7, 1.5e-6)
    np.testing.assert_allclose(gf.to_numpy(y).astype(np.float64), y_exact, rtol=rtol, atol=atol)
    np.testing.assert_allclose(gf.to_numpy(slope).astype(np.float64), slope_exact, rtol=rtol, atol=atol)
    y_only, none = backend.primitives.gelu_exact(device.send(host[:5], dtype), slope=False, portable=portable)
    assert none is None
    np.testing.assert_array_equal(gf.to_numpy(y_only), gf.to_numpy(y)[:5])


@pytest.mark.parametrize("portable", [False, True])
def test_matmul_into_writes_a_scaled_product_into_a_strided_view(device, portable):
    """``matmul_into``: head-major slots of a token-major buffer receive a @ b (times scale);
    the rest of the buffer is untouched."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 3, 5, 6))
    buffer = device.send(np.zeros((2, 4, 2, 3, 6)), "float64")  # (N, L, parts, h, d)
    xp = backend.namespace(buffer)
    view = xp.permute_dims(buffer, (2, 0, 3, 1, 4))  # (parts, N, h, L, d)
    backend.primitives.matmul_into(view, (1, ...), device.send(a, "float64"), device.send(b, "float64"), 0.5,
                                   portable=portable)
    got = gf.to_numpy(buffer)
    np.testing.assert_allclose(got[:, :, 1].transpose(0, 2, 1, 3), 0.5 * (a @ b), rtol=1e-14)
    assert not np.any(got[:, :, 0])


@pytest.mark.parametrize("portable", [False, True])
def test_softmax_in_place_and_row_dot(device, portable):
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(2, 3, 4)) * 5
    scores[1, 2, :] = -np.inf  # a row that sees nothing
    scores[0, 0, 1] = -np.inf
    e = np.exp(scores - np.max(np.where(np.isinf(scores), -1e300, scores), axis=-1, keepdims=True))
    expected = e / np.where(e.sum(-1, keepdims=True) > 0, e.sum(-1, keepdims=True), 1.0)
    # (the NumPy path overwrites its argument: on the cpu device that may be `scores` itself)
    got = gf.to_numpy(backend.primitives.softmax_(device.send(scores, "float64"), empty_rows=True, portable=portable))
    np.testing.assert_allclose(got, expected, rtol=1e-14, atol=1e-300)
    assert np.all(got[1, 2] == 0) and got[0, 0, 1] == 0
    a, b = rng.normal(size=(3, 2, 7)), rng.normal(size=(3, 2, 7))
    dot = backend.primitives.row_dot(device.send(a, "float64"), device.send(b, "float64"), portable=portable)
    np.testing.assert_allclose(gf.to_numpy(dot), np.sum(a * b, axis=-1), rtol=1e-14)
