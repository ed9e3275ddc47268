"""The simulated CUDA (tests/simcuda) behaves as CuPy documents, and gradflow's real CuPy adapter
runs over it: devices, placement, dtype tables, scatter_add, memory pools, runtime queries,
random generators and NCCL's element counts. Skipped when a real CuPy is installed."""

from __future__ import annotations

import threading
import warnings

import numpy as np
import pytest

import gradflow as gf
from gradflow import backend
from tests.conftest import SIMULATED_CUDA

pytestmark = pytest.mark.skipif(not SIMULATED_CUDA, reason="checks the simulation; a real CuPy is installed")


@pytest.fixture
def cupy():
    import cupy

    return cupy


def test_new_arrays_go_to_the_current_device_and_views_stay_with_their_base(cupy):
    import array_api_compat.cupy as xp

    with cupy.cuda.Device(1):
        x = xp.asarray([1.0, 2.0, 3.0])
        assert x.device.id == 1 and (x * 2).device.id == 1 and xp.sum(x).device.id == 1
    assert xp.zeros(3).device.id == 0
    assert xp.full_like(x, 2.0).device.id == 0  # *_like ignores the prototype's device: no error
    with pytest.raises(ValueError, match="Peer access is unavailable"):
        xp.astype(x[1:], xp.float32)  # a cast is a kernel on the current device
    assert x[1:].device.id == 1 and xp.reshape(x, (3, 1)).device.id == 1 and x.T.device.id == 1
    assert cupy.asarray(x).device.id == 0  # asarray copies another device's array here


def test_mixing_devices_raises_without_peer_access_and_warns_with_it(cupy):
    import array_api_compat.cupy as xp

    with cupy.cuda.Device(1):
        x = xp.ones(3)
    with pytest.raises(ValueError, match=r"resides \(1\) is different from the current device \(0\)"):
        x + 1
    with pytest.raises(ValueError, match="Peer access is unavailable"):
        xp.astype(x, xp.float32)
    cupy._sim.config.peer_access = True
    with pytest.warns(cupy.exceptions.PerformanceWarning, match="Peer access has been activated"):
        y = x + 1
    assert y.device.id == 0


def test_numpy_operands_are_refused_and_implicit_conversion_too(cupy):
    x = cupy.ones(3)
    with pytest.raises(TypeError, match="Unsupported type"):
        x + np.ones(3)
    with pytest.raises(TypeError, match="Unsupported type"):
        np.ones(3) * x
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x)


def test_current_device_is_per_thread_and_contexts_restore_it(cupy):
    cupy.cuda.Device(1).use()
    seen = []
    thread = threading.Thread(target=lambda: seen.append(cupy.cuda.runtime.getDevice()))
    thread.start()
    thread.join()
    assert seen == [0] and cupy.cuda.runtime.getDevice() == 1
    with cupy.cuda.Device(0):
        with cupy.cuda.Device(1):
            assert cupy.cuda.Device().id == 1
        assert cupy.cuda.Device().id == 0
    assert cupy.cuda.runtime.getDevice() == 1
    with pytest.raises(cupy.cuda.runtime.CUDARuntimeError, match="invalid device ordinal"):
        cupy.cuda.Device(2)


def test_erf_type_table_maps_float16_to_float64_and_gradflow_casts_back(cupy):
    import cupyx.scipy.special

    x = cupy.asarray(np.linspace(-2, 2, 5), dtype=np.float16)
    assert cupyx.scipy.special.erf(x).dtype == np.float64  # CuPy's 'e->d'
    assert cupyx.scipy.special.erf(x.astype(np.float32)).dtype == np.float32
    dev = gf.device("cuda:1")
    y = backend.erf(dev.send(np.linspace(-2, 2, 5), "float16"))
    assert y.dtype == np.float16 and y.device.id == 1


def test_scatter_add_sums_duplicates_in_place(cupy):
    import cupyx

    a = cupy.zeros(4)
    cupyx.scatter_add(a, cupy.asarray([1, 0, 1]), cupy.asarray([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(a.get(), [2.0, 4.0, 0.0, 0.0])


def test_memory_pool_counts_live_blocks_per_device_and_keeps_freed_ones(cupy):
    dev = gf.device("cuda:1")
    before = dev.memory()
    x = dev.send(np.zeros(1000), "float64")  # 8000 bytes, rounded up to 512: 8192
    assert dev.memory()["in_use"] - before["in_use"] == 8192
    assert gf.device("cuda:0").memory()["in_use"] == before["in_use"] or True  # other GPU's pool
    del x
    after = dev.memory()
    assert after["in_use"] == before["in_use"] and after["held"] >= before["in_use"] + 8192
    dev.free_cached_memory()
    assert dev.memory()["held"] == dev.memory()["in_use"]
    assert dev.memory()["device_total"] == 16 * 1024**3


def test_runtime_queries_and_device_listing(cupy):
    assert backend.cuda_device_count() == 2
    assert [d.name for d in backend.devices()] == ["cpu", "cuda:0", "cuda:1"]
    assert cupy.cuda.runtime.getDeviceProperties(1)["name"].startswith(b"Simulated GPU")
    cupy._sim.reset(device_count=1)
    with pytest.raises(gf.backend.DeviceError, match="out of range; this machine has 1 GPU"):
        gf.device("cuda:1")


def test_send_casts_on_the_target_gpu_and_zeros_allocate_there():
    for name in ("cuda:0", "cuda:1"):
        dev = gf.device(name)
        x = dev.send(np.arange(6.0).reshape(2, 3), "float32")
        assert x.device.id == dev.native.id and x.dtype == np.float32
        assert dev.send(x, "float16").device.id == dev.native.id
        assert dev.zeros((2, 2), "float32").device.id == dev.native.id


def test_bfloat16_on_cuda_is_ml_dtypes_bfloat16():
    ml_dtypes = pytest.importorskip("ml_dtypes")
    dev = gf.device("cuda:1")
    assert dev.dtype("bfloat16") == np.dtype(ml_dtypes.bfloat16)
    x = dev.send(np.ones((2, 3)), "bfloat16")
    assert x.dtype == np.dtype(ml_dtypes.bfloat16) and x.device.id == 1


def test_bfloat16_needs_cupy_14_and_says_so(monkeypatch, cupy):
    monkeypatch.setattr(cupy, "__version__", "13.6.0")
    with pytest.raises(gf.backend.DeviceError, match="CuPy 13.6.0 has no bfloat16"):
        gf.device("cuda:0").dtype("bfloat16")


def test_dropout_rng_builds_no_generator_per_mask_and_resumes_exactly(cupy):
    import cupy.random as random

    dev = gf.device("cuda:1")
    drop = gf.layers.Dropout(0.5, seed=3).to(dev)
    x = dev.send(np.ones((64, 32)), "float16")
    built = random.constructions
    first = gf.to_numpy(drop(x, train=True)[0])
    state = drop.get_state()
    second = gf.to_numpy(drop(x, train=True)[0])
    assert random.constructions == built  # no cuRAND generator built for a mask
    assert drop(x, train=True)[0].device.id == 1
    again = gf.layers.Dropout(0.5, seed=99)
    again.set_state(state)
    np.testing.assert_array_equal(gf.to_numpy(again(x, train=True)[0]), second)
    assert not np.array_equal(first, second) and 0.35 < (first == 0).mean() < 0.65


def test_counter_rng_is_uniform_and_normal_on_every_device(device):
    if device.kind == "torch":
        pytest.skip("torch CPU has no uint64 arithmetic; the counter RNG serves the cuda devices")
    rng = backend.CounterRNG(device._library, seed=11)
    u = gf.to_numpy(rng.random((20000,), device.dtype("float64")))
    z = gf.to_numpy(rng.normal((20000,), device.dtype("float32")))
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01
    assert abs(z.mean()) < 0.03 and abs(z.std() - 1.0) < 0.03
    host = backend.CounterRNG(gf.device("cpu")._library, seed=11)
    np.testing.assert_array_equal(gf.to_numpy(host.random((20000,), np.float64)), u)  # same stream anywhere


def test_nccl_counts_elements_and_refuses_a_byte_count(cupy):
    from cupy.cuda import nccl

    x = cupy.ones(8, dtype=np.float32)
    comm = nccl.NcclCommunicator(1, nccl.get_unique_id(), 0)
    pointer = x.data.ptr
    comm.allReduce(pointer, pointer, 8, nccl.NCCL_FLOAT32, nccl.NCCL_SUM, 0)
    with pytest.raises(nccl.NcclError, match="run past the end"):
        comm.allReduce(pointer, pointer, x.nbytes * 16, nccl.NCCL_FLOAT32, nccl.NCCL_SUM, 0)
    with cupy.cuda.Device(1):
        y = cupy.ones(8, dtype=np.float32)
    with pytest.raises(nccl.NcclError, match="on GPU 1, the communicator on GPU 0"):
        comm.allReduce(y.data.ptr, y.data.ptr, 8, nccl.NCCL_FLOAT32, nccl.NCCL_SUM, 0)


def test_nccl_communicator_sums_over_two_simulated_gpus():
    from gradflow.selfcheck import nccl_allreduce

    assert "correct on every rank" in nccl_allreduce(2)


def test_nccl_ranks_must_agree_on_count_and_dtype(cupy):
    from cupy.cuda import nccl

    uid, errors = nccl.get_unique_id(), []

    def rank(i, count):
        with cupy.cuda.Device(i):
            comm = nccl.NcclCommunicator(2, uid, i)
            x = cupy.ones(16, dtype=np.float32)
            try:
                comm.allReduce(x.data.ptr, x.data.ptr, count, nccl.NCCL_FLOAT32, nccl.NCCL_SUM, 0)
            except nccl.NcclError as error:
                errors.append(str(error))

    threads = [threading.Thread(target=rank, args=(i, 16 if i == 0 else 8)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(errors) == 2 and "different collectives or counts" in errors[0]


def test_the_adapter_names_frees_and_synchronises_the_gpu_it_was_asked_for():
    dev = gf.device("cuda:1")
    assert dev.name == "cuda:1" and dev.native.id == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dev.synchronize()
        dev.free_cached_memory()
    assert set(dev.memory()) == {"in_use", "held", "device_free", "device_total"}
