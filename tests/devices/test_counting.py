"""The counting proxy (gradflow.testing.counting) counts what it should, on every device."""

from __future__ import annotations

import numpy as np
import pytest

from gradflow import backend
from gradflow.testing.counting import OperationCounter, unwrap


def test_counter_counts_namespace_calls_operators_and_syncs_but_not_views(device):
    counter = OperationCounter(device.xp)
    xp = counter.namespace
    x = counter.wrap(device.send(np.arange(6.0).reshape(2, 3), "float32"))
    w = counter.wrap(device.send(np.ones((3, 2)), "float32"))
    with device:                       # raw array math on a GPU runs in its context
        y = x @ w                      # 1 matmul
        y += 1.0                       # 1 in-place add
        z = xp.exp(-y)                 # neg + exp
        view = xp.reshape(z, (4,))     # free
        transposed = x.T               # free
        total = xp.sum(view)           # 1 sum
    assert float(total) > 0        # a sync, not an operation
    assert counter.by_name == {"matmul": 1, "iadd": 1, "neg": 1, "exp": 1, "sum": 1}
    assert counter.total == 5 and counter.syncs == 1
    assert tuple(transposed.shape) == (3, 2)
    assert counter.results_of_dtype("float32") == ["matmul", "iadd", "neg", "exp", "sum"]


def test_counter_sees_float64_results_of_a_numpy_scalar_upcast():
    counter = OperationCounter(backend.device("cpu").xp)
    x = counter.wrap(np.ones(3, dtype=np.float32))
    y = x * np.float64(0.5)  # NumPy promotes to float64: the trap the dtype test is for
    assert unwrap(y).dtype == np.float64
    assert counter.results_of_dtype("float64") == ["mul"]


def test_counter_results_work_with_gradflow_namespace_lookup(device):
    counter = OperationCounter(device.xp)
    x = counter.wrap(device.send(np.ones((2, 2)), "float32"))
    assert backend.namespace(x) is counter.namespace
    assert backend.is_array(x) and backend.same_device(x, x)
    assert backend.library_kind(x) == {"cpu": "numpy", "torch": "torch", "cuda": "cupy"}.get(device.kind, "other")


def test_two_counters_do_not_share_a_namespace():
    first = OperationCounter(backend.device("cpu").xp)
    second = OperationCounter(backend.device("cpu").xp)
    a, b = first.wrap(np.ones(2, np.float32)), second.wrap(np.ones(2, np.float32))
    assert backend.namespace(a) is first.namespace and backend.namespace(b) is second.namespace


def test_wrap_layer_and_unwrap_layer_round_trip(device):
    from gradflow import layers as L

    layer = L.Linear(3, 2, rng=0).to(device)
    before = backend.to_numpy(layer.weight.value).copy()
    counter = OperationCounter(device.xp)
    counter.wrap_layer(layer)
    assert type(layer.weight.value) is counter.array_type
    counter.unwrap_layer(layer)
    assert device.owns(layer.weight.value)
    np.testing.assert_array_equal(backend.to_numpy(layer.weight.value), before)


def test_gather_indexing_is_counted_and_basic_slicing_is_not():
    counter = OperationCounter(np)
    x = counter.wrap(np.arange(12.0).reshape(3, 4))
    rows = counter.wrap(np.array([0, 2]))
    x[1:, :2]
    assert counter.total == 0
    x[rows]
    x[0, 0] = 5.0
    assert counter.by_name == {"getitem": 1, "setitem": 1}


@pytest.mark.parametrize("name", ["reshape", "permute_dims", "isdtype"])
def test_free_functions_are_not_counted(name):
    counter = OperationCounter(backend.device("cpu").xp)
    xp = counter.namespace
    x = counter.wrap(np.ones((2, 3), np.float32))
    {"reshape": lambda: xp.reshape(x, (3, 2)), "permute_dims": lambda: xp.permute_dims(x, (1, 0)),
     "isdtype": lambda: xp.isdtype(x.dtype, "real floating")}[name]()
    assert counter.total == 0
