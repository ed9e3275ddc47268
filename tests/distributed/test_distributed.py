"""gradflow.distributed: communicators, sharding, gradient all-reduce, DataParallel, and real
2-rank mpirun jobs.

In-process tests run ranks as threads (tests/distributed/distributed_helpers.py) on every device; the NCCL
communicator runs against a fake ``cupy.cuda.nccl`` that sums host memory through the pointers
it is given. The ``mpi`` tests start ``mpirun -np 2 python -m mpi4py tests/distributed/distributed_worker.py``
and are skipped, with the reason, when mpirun or mpi4py is missing.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

import gradflow as gf
import gradflow.distributed as gfd
from gradflow import layers as L
from gradflow.data import BatchIterator
from gradflow.distributed.nccl import NCCLCommunicator
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import SGD, Adam
from gradflow.train import fit

from .distributed_helpers import FakeDeviceArray, FakeNccl, ThreadCommunicator, ThreadGroup, run_ranks
from . import distributed_worker as worker

ROOT = Path(__file__).resolve().parents[2]
MPI_TIMEOUT_S = 120


# --------------------------------------------------------------------------------------------
# Choosing a communicator
# --------------------------------------------------------------------------------------------


@pytest.fixture
def no_launcher(monkeypatch):
    for name in ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
                 "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", gfd.launch.COMM_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delitem(sys.modules, "mpi4py.MPI", raising=False)
    return monkeypatch


def test_init_outside_a_launcher_is_single_process_without_importing_mpi(no_launcher):
    comm = gfd.init()
    assert isinstance(comm, gfd.SingleProcessCommunicator)
    assert (comm.rank, comm.size, comm.is_main) == (0, 1, True)
    assert "mpi4py.MPI" not in sys.modules
    assert gfd.is_main_process() and gfd.is_main_process(comm)


def test_launched_world_reads_open_mpi_and_pmi_variables(no_launcher):
    assert gfd.launched_world() == (0, 1, 0)
    no_launcher.setenv("PMI_RANK", "2")
    no_launcher.setenv("PMI_SIZE", "4")
    no_launcher.setenv("MPI_LOCALRANKID", "1")
    assert gfd.launched_world() == (2, 4, 1)
    assert not gfd.is_main_process()
    no_launcher.setenv("OMPI_COMM_WORLD_RANK", "1")
    no_launcher.setenv("OMPI_COMM_WORLD_SIZE", "3")
    no_launcher.setenv("OMPI_COMM_WORLD_LOCAL_RANK", "0")
    assert gfd.launched_world() == (1, 3, 0)


@pytest.mark.parametrize("requested, size, device_kind, nccl, expected", [
    ("auto", 1, "cuda", True, "single"),
    ("auto", 2, "cpu", True, "mpi"),
    ("auto", 2, None, True, "mpi"),
    ("auto", 2, "cuda", True, "nccl"),
    ("auto", 2, "cuda", False, "mpi"),
    ("MPI", 2, "cuda", True, "mpi"),
    ("nccl", 2, "cuda", True, "nccl"),
    ("single", 4, "cpu", False, "single"),
])
def test_choose_kind_uses_size_device_and_override(requested, size, device_kind, nccl, expected):
    assert gfd.choose_kind(requested, size, device_kind, lambda: nccl) == expected


def test_environment_variable_overrides_auto_and_bad_names_are_refused(no_launcher):
    no_launcher.setenv("OMPI_COMM_WORLD_SIZE", "2")
    no_launcher.setenv("OMPI_COMM_WORLD_RANK", "1")
    no_launcher.setenv(gfd.launch.COMM_ENV, "single")
    assert isinstance(gfd.init(), gfd.SingleProcessCommunicator)
    with pytest.raises(ValueError, match="unknown communicator 'gloo'"):
        gfd.init("gloo")


def test_cuda_aware_detection_obeys_the_environment(monkeypatch):
    from gradflow.distributed.mpi import cuda_aware_mpi

    monkeypatch.setenv("GRADFLOW_CUDA_AWARE_MPI", "1")
    assert cuda_aware_mpi() is True
    monkeypatch.setenv("GRADFLOW_CUDA_AWARE_MPI", "0")
    assert cuda_aware_mpi() is False


# --------------------------------------------------------------------------------------------
# Sharding
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("n, size, batch", [(205, 2, 10), (100, 2, 10), (97, 3, 8), (31, 4, 3)])
def test_rank_batches_together_are_the_single_process_global_batches(n, size, batch):
    x = np.arange(n, dtype=np.float32)[:, None]
    y = np.arange(n)
    single = [yb for _, yb in BatchIterator(x, y, batch * size, seed=5)]
    ranks = [gfd.DistributedBatchIterator(x, y, batch, rank=r, size=size, seed=5) for r in range(size)]
    per_rank = [[yb for _, yb in it] for it in ranks]
    assert len({len(batches) for batches in per_rank}) == 1, "every rank must take the same number of steps"
    assert all(len(it) == len(per_rank[0]) for it in ranks)
    tail = n % (batch * size)
    expected = single if tail == 0 or tail >= size else single[:-1]
    assert len(per_rank[0]) == len(expected)
    for step, global_batch in enumerate(expected):
        together = np.concatenate([batches[step] for batches in per_rank])
        assert sorted(together.tolist()) == sorted(global_batch.tolist())
    shards = [np.concatenate(batches) for batches in per_rank]
    assert sum(len(s) for s in shards) == len(np.unique(np.concatenate(shards)))  # disjoint
    assert [it.shard_size for it in ranks] == [len(s) for s in shards]


def test_shards_are_deterministic_and_reshuffled_each_epoch():
    x = np.arange(40, dtype=np.float32)[:, None]
    first = gfd.DistributedBatchIterator(x, None, 5, rank=1, size=2, seed=9)
    again = gfd.DistributedBatchIterator(x, None, 5, rank=1, size=2, seed=9)
    epoch1 = [b.tolist() for b in first]
    assert epoch1 == [b.tolist() for b in again]
    assert epoch1 != [b.tolist() for b in first]


def test_a_tail_smaller_than_the_number_of_ranks_is_dropped():
    x = np.zeros((21, 2), dtype=np.float32)
    its = [gfd.DistributedBatchIterator(x, None, 5, rank=r, size=2) for r in range(2)]
    assert [len(it) for it in its] == [2, 2]
    assert [it.shard_size for it in its] == [10, 10]
    assert len(gfd.DistributedBatchIterator(np.zeros((25, 2)), None, 5, rank=0, size=2, drop_last=True)) == 2


def test_distributed_batch_iterator_rejects_bad_ranks_and_too_little_data():
    x = np.zeros((10, 2), dtype=np.float32)
    with pytest.raises(ValueError, match="need 0 <= rank < size"):
        gfd.DistributedBatchIterator(x, None, 2, rank=2, size=2)
    with pytest.raises(ValueError, match="give comm or rank and size"):
        gfd.DistributedBatchIterator(x, None, 2, comm=gfd.SingleProcessCommunicator(), rank=0)
    with pytest.raises(ValueError, match="give no step"):
        gfd.DistributedBatchIterator(x, None, 8, rank=0, size=2, drop_last=True)


# --------------------------------------------------------------------------------------------
# Collectives and gradient reduction, ranks as threads, on every device
# --------------------------------------------------------------------------------------------


def test_thread_ranks_allreduce_and_broadcast_in_place_on_every_device(device):
    def rank_fn(comm):
        a = device.send(np.arange(6.0).reshape(2, 3) * (comm.rank + 1), "float32")
        b = device.send(np.full(4, float(comm.rank)), "float64")
        comm.allreduce(a)
        comm.broadcast(b, root=1)
        strided = device.send(np.arange(8.0), "float32")[::2]  # a non-contiguous view
        comm.allreduce(strided)
        return gf.to_numpy(a), gf.to_numpy(b), gf.to_numpy(strided)

    for a, b, strided in run_ranks(2, rank_fn):
        np.testing.assert_array_equal(a, np.arange(6.0).reshape(2, 3) * 3)
        np.testing.assert_array_equal(b, np.ones(4))
        np.testing.assert_array_equal(strided, np.arange(0.0, 8.0, 2) * 2)


def _two_layer(device, seed, dtype="float32"):
    return gf.Sequential(L.Linear(3, 5, rng=seed), L.Tanh(), L.Linear(5, 2, rng=seed + 1)).to(device, dtype)


def _set_grads(net, device, scale):
    for i, p in enumerate(net.parameters()):
        p.grad = device.send(np.full(p.shape, scale * (i + 1)), p.value.dtype)


@pytest.mark.parametrize("average, samples, expected_scale", [
    ("ranks", (None, None), 1.5),           # (1 + 2) / 2
    ("samples", (1, 3), (1 * 1 + 3 * 2) / 4),
    ("sum", (None, None), 3.0),
])
def test_gradient_reducer_averages_over_ranks_or_samples_on_every_device(device, average, samples, expected_scale):
    def rank_fn(comm):
        net = _two_layer(device, 0)
        _set_grads(net, device, comm.rank + 1.0)
        reducer = gfd.GradientReducer(net, comm, bucket_bytes=32)
        reducer.reduce(samples=samples[comm.rank], average=average != "sum")
        return [gf.to_numpy(p.grad) for p in net.parameters()], reducer, comm.calls

    results = run_ranks(2, rank_fn)
    for grads, reducer, calls in results:
        for i, grad in enumerate(grads):
            np.testing.assert_allclose(grad, np.full(grad.shape, expected_scale * (i + 1)), rtol=1e-6)
        # reverse layer order: the last parameter first, after the count slot
        assert reducer.slices[0] == (1, 1 + 2)
        assert [p.shape for p in reducer.order] == [(2,), (2, 5), (5,), (5, 3)]
        assert len(reducer.buckets) > 1 and len(calls) == len(reducer.buckets)
        assert reducer.buckets[0][0] == 0 and reducer.buckets[-1][1] == reducer.length
    np.testing.assert_array_equal(results[0][0][0], results[1][0][0])


@pytest.mark.parametrize("average, samples", [("ranks", (None, None)), ("samples", (1, 3))])
def test_reducing_the_optimizers_flat_gradients_matches_the_own_buffer_on_every_device(device, average, samples):
    def rank_fn(comm, shared):
        net = _two_layer(device, 0)
        reducer = gfd.GradientReducer(net, comm, bucket_bytes=32, optimizer=Adam(net, lr=1e-3) if shared else None)
        for step in range(2):
            _set_grads(net, device, comm.rank + 1.0 + step)
            if step == 1 and comm.rank == 0:
                net.parameters()[2].grad = None  # no gradient on one rank's parameter: zeros
            reducer.reduce(samples=samples[comm.rank], average=True)
        return [gf.to_numpy(p.grad) for p in net.parameters()], len(reducer.buckets)

    own = run_ranks(2, lambda comm: rank_fn(comm, False))
    shared = run_ranks(2, lambda comm: rank_fn(comm, True))
    for (grads, buckets), (wanted, _) in zip(shared, own):
        assert buckets > 1
        for a, b in zip(grads, wanted):
            np.testing.assert_array_equal(a, b)


def test_reduced_gradients_are_views_into_one_reused_buffer():
    def rank_fn(comm):
        net = _two_layer("cpu", 0)
        reducer = gfd.GradientReducer(net, comm)
        flats = []
        for step in range(2):
            _set_grads(net, gf.device("cpu"), 1.0 + step)
            reducer.reduce()
            flats.append(reducer._flat)
        assert flats[0] is flats[1]
        assert all(np.shares_memory(p.grad, reducer._flat) for p in net.parameters())
        return len(reducer.buckets)

    assert run_ranks(2, rank_fn) == [1, 1]


def test_a_parameter_without_gradient_gets_the_reduced_one():
    def rank_fn(comm):
        net = _two_layer("cpu", 0)
        _set_grads(net, gf.device("cpu"), 2.0)
        if comm.rank == 0:
            net.parameters()[0].grad = None
        gfd.allreduce_gradients(net, comm)
        return gf.to_numpy(net.parameters()[0].grad)

    for grad in run_ranks(2, rank_fn):
        np.testing.assert_array_equal(grad, np.full((5, 3), 1.0))  # (0 + 2) / 2


def test_single_process_reduction_leaves_gradients_alone():
    net = _two_layer("cpu", 0)
    _set_grads(net, gf.device("cpu"), 1.0)
    before = [p.grad for p in net.parameters()]
    gfd.allreduce_gradients(net, gfd.SingleProcessCommunicator(), samples=7)
    assert all(p.grad is g for p, g in zip(net.parameters(), before))


def test_gradient_reducer_refuses_mixed_dtypes_and_bad_buckets():
    net = _two_layer("cpu", 0)
    net.parameters()[0].value = net.parameters()[0].value.astype(np.float64)
    with pytest.raises(ValueError, match="share one device and dtype"):
        gfd.GradientReducer(net, gfd.SingleProcessCommunicator())
    with pytest.raises(ValueError, match="bucket_bytes must be a positive int"):
        gfd.GradientReducer(_two_layer("cpu", 0), gfd.SingleProcessCommunicator(), bucket_bytes=0)


def test_broadcast_parameters_copies_rank0_weights_and_optimizer_state(device):
    def rank_fn(comm):
        net = _two_layer(device, 10 * comm.rank)
        optimizer = Adam(net, lr=0.1)
        if comm.rank == 0:  # rank 0 has taken a step, as if it had loaded a checkpoint
            _set_grads(net, device, 1.0)
            optimizer.step()
        ids = [id(p.value) for p in net.parameters()]
        gfd.broadcast_parameters(net, comm, optimizer=optimizer)
        assert ids == [id(p.value) for p in net.parameters()], "broadcast must work in place"
        slots = {f"{i}.{k}": gf.to_numpy(v) for i, p in enumerate(net.parameters()) for k, v in p.state.items()}
        return worker.flat_parameters(net), slots, optimizer.step_count

    (w0, s0, t0), (w1, s1, t1) = run_ranks(2, rank_fn)
    np.testing.assert_array_equal(w0, w1)
    assert sorted(s0) == sorted(s1) and len(s0) == 8 and t0 == t1 == 1
    for key in s0:
        np.testing.assert_array_equal(s0[key], s1[key])


# --------------------------------------------------------------------------------------------
# DataParallel, metrics and checkpoints
# --------------------------------------------------------------------------------------------


def test_two_thread_ranks_with_half_batches_match_one_process(device):
    def run(comm, batch):
        net, last = worker.train_loop(comm, batch_per_rank=batch, epochs=2, n=105)
        return worker.flat_parameters(net), last

    single, single_loss = run(gfd.SingleProcessCommunicator(), 20)
    (rank0, loss0), (rank1, loss1) = run_ranks(2, lambda comm: run(comm, 10))
    np.testing.assert_array_equal(rank0, rank1)
    assert loss0 == loss1
    np.testing.assert_allclose(rank0, single, rtol=1e-9, atol=1e-12)
    assert abs(loss0 - single_loss) < 1e-9


def test_data_parallel_delegates_to_the_model():
    net = _two_layer("cpu", 0)
    wrapped = gfd.DataParallel(net, gfd.SingleProcessCommunicator())
    assert list(wrapped.state_dict()) == list(net.state_dict())
    assert wrapped.parameters() == net.parameters()
    wrapped.eval()
    assert not net.training and not wrapped.training
    wrapped.train()
    assert net.training and wrapped.training
    x = np.ones((4, 3), dtype=np.float32)
    np.testing.assert_array_equal(wrapped.predict(x), net.predict(x))
    assert "DataParallel(SingleProcessCommunicator(rank=0, size=1)" in repr(wrapped)
    with pytest.raises(ValueError, match="average must be one of"):
        gfd.DataParallel(net, gfd.SingleProcessCommunicator(), average="mean")


def test_no_sync_accumulates_and_counts_samples_for_the_next_reduction():
    def rank_fn(comm):
        net = _two_layer("cpu", 0, "float64")
        wrapped = gfd.DataParallel(net, comm)
        x = np.linspace(-1, 1, 12).reshape(4, 3) * (comm.rank + 1)
        counts = []
        original = wrapped.reducer.reduce
        wrapped.reducer.reduce = lambda samples, average: (counts.append(samples), original(samples, average))
        with wrapped.no_sync():
            y, backprop = wrapped(x[:1], train=True)
            backprop(np.ones_like(y))
        assert counts == []
        y, backprop = wrapped(x[1:], train=True)
        backprop(np.ones_like(y))
        return counts

    assert run_ranks(2, rank_fn) == [[4], [4]]


def test_fit_calls_before_step_once_per_step_and_accepts_data_parallel():
    x, y = worker.dataset(60)
    net = worker.model(0)
    calls = []
    fit(gfd.DataParallel(net, gfd.SingleProcessCommunicator()), SoftmaxCrossEntropy(), SGD(net, lr=0.1),
        gfd.DistributedBatchIterator(x, y, 16, rank=0, size=1, dtype="float64"), epochs=2, verbose=False,
        before_step=lambda: calls.append(1))
    assert len(calls) == 2 * 4


def test_reduce_metrics_is_the_weighted_mean_on_every_rank():
    results = run_ranks(2, lambda comm: gfd.reduce_metrics({"loss": 1.0 + comm.rank, "acc": 0.5}, comm,
                                                           weight=1 + 2 * comm.rank))
    assert results[0] == results[1] == {"acc": 0.5, "loss": pytest.approx((1 * 1 + 2 * 3) / 4)}
    with pytest.raises(ValueError, match="weights sum to zero"):
        gfd.reduce_metrics({"loss": 1.0}, gfd.SingleProcessCommunicator(), weight=0)


def test_save_on_main_without_comm_saves_on_the_launched_rank0_only(no_launcher):
    assert gfd.save_on_main(lambda: "saved") == "saved"
    no_launcher.setenv("OMPI_COMM_WORLD_SIZE", "2")
    no_launcher.setenv("OMPI_COMM_WORLD_RANK", "1")
    assert gfd.save_on_main(lambda: pytest.fail("rank 1 must not save")) is None


def test_save_on_main_saves_once_and_a_failure_reaches_every_rank(tmp_path):
    def rank_fn(comm):
        return gfd.save_on_main(lambda path: path.write_text(str(comm.rank)) and "ok", tmp_path / "ckpt", comm=comm)

    assert run_ranks(2, rank_fn) == ["ok", None]
    assert (tmp_path / "ckpt").read_text() == "0"

    def failing(comm):
        def save():
            raise OSError("disk full")
        return gfd.save_on_main(save, comm=comm)

    with pytest.raises(OSError, match="disk full"):
        run_ranks(2, failing)
    group = ThreadGroup(1)
    assert gfd.save_on_main(lambda: 5, comm=ThreadCommunicator(group, 0)) == 5

    def failing_elsewhere(comm):
        try:
            return gfd.save_on_main(lambda: (_ for _ in ()).throw(OSError("disk full")), comm=comm)
        except OSError:
            return "rank 0 raised"
        except RuntimeError as error:
            return str(error)

    assert run_ranks(2, failing_elsewhere) == ["rank 0 raised", "save_on_main: rank 0 failed to save: OSError: disk full"]


# --------------------------------------------------------------------------------------------
# NCCL, against a fake cupy.cuda.nccl
# --------------------------------------------------------------------------------------------


def _nccl_ranks(fn):
    fake = FakeNccl(2)
    results = run_ranks(2, lambda host: fn(NCCLCommunicator(host, nccl=fake, stream=lambda: 1234), host))
    return fake, results


def test_nccl_shares_rank0_unique_id_and_reduces_device_buffers_in_place():
    def rank_fn(comm, host):
        data = np.arange(5, dtype=np.float32) * (comm.rank + 1)
        wide = np.full(3, 0.5 + comm.rank, dtype=np.float64)
        comm.allreduce(FakeDeviceArray(data))
        comm.allreduce(FakeDeviceArray(wide[1:]))  # a contiguous slice: pointer offset, count 2
        mine = np.full(4, 10.0 * comm.rank, dtype=np.float32)
        comm.broadcast(FakeDeviceArray(mine[:2]), root=1)
        return data, wide, mine

    fake, results = _nccl_ranks(rank_fn)
    assert fake.unique_ids_made == 1
    assert sorted(fake.inits) == [(2, bytes(range(128)), 0), (2, bytes(range(128)), 1)]
    for data, wide, mine in results:
        np.testing.assert_array_equal(data, [0.0, 3.0, 6.0, 9.0, 12.0])
    np.testing.assert_array_equal(results[0][2], [10.0, 10.0, 0.0, 0.0])  # only the view came from rank 1
    np.testing.assert_array_equal(results[1][2], [10.0, 10.0, 10.0, 10.0])
    np.testing.assert_array_equal(results[0][1], [0.5, 2.0, 2.0])
    np.testing.assert_array_equal(results[1][1], [1.5, 2.0, 2.0])
    calls = sorted(c for c in fake.calls if c[0] != "destroy")
    assert ("allReduce", 0, 5, FakeNccl.NCCL_FLOAT32, FakeNccl.NCCL_SUM, 1234) in calls
    assert ("allReduce", 1, 2, FakeNccl.NCCL_FLOAT64, FakeNccl.NCCL_SUM, 1234) in calls
    assert ("bcast", 0, 2, FakeNccl.NCCL_FLOAT32, 1, 1234) in calls


def test_nccl_sends_host_arrays_and_host_values_through_the_host_communicator():
    def rank_fn(comm, host):
        host_array = np.ones(3) * (comm.rank + 1)
        comm.allreduce(host_array)
        return host_array, comm.allreduce_floats([comm.rank]), comm.broadcast_object(comm.rank, root=1), host.calls

    fake, results = _nccl_ranks(rank_fn)
    assert not [c for c in fake.calls if c[0] == "allReduce"]
    for host_array, floats, obj, calls in results:
        np.testing.assert_array_equal(host_array, [3.0, 3.0, 3.0])
        assert floats == [1.0] and obj == 1
        assert calls == ["allreduce:float64:3", "allreduce:float64:1"]


def test_nccl_reduces_consecutive_bucket_views_of_one_buffer():
    def rank_fn(comm, host):  # what GradientReducer does with its flat CuPy buffer
        flat = np.arange(4, dtype=np.float32) + comm.rank
        for start, stop in [(0, 1), (1, 4)]:
            comm.allreduce(FakeDeviceArray(flat[start:stop]))
        return flat

    _, results = _nccl_ranks(rank_fn)
    for flat in results:
        np.testing.assert_array_equal(flat, [1.0, 3.0, 5.0, 7.0])


def test_nccl_refuses_strided_foreign_gpu_and_unsupported_buffers():
    def rank_fn(comm, host):
        errors = []
        for array, kind in [(FakeDeviceArray(np.zeros(6, np.float32)[::2]), ValueError),
                            (FakeDeviceArray(np.zeros(3, np.float32), gpu=1), ValueError),
                            (FakeDeviceArray(np.zeros(3, np.complex64)), TypeError)]:
            with pytest.raises(kind) as info:
                comm.allreduce(array)
            errors.append(str(info.value))
        comm.close()
        return errors

    fake, results = _nccl_ranks(rank_fn)
    errors = results[0]
    assert "needs a contiguous array" in errors[0]
    assert "on cuda:1" in errors[1] and "cuda:0" in errors[1]
    assert "no datatype" in errors[2]
    assert sorted(c for c in fake.calls if c[0] == "destroy") == [("destroy", 0), ("destroy", 1)]


def test_nccl_communicator_needs_a_cuda_device():
    with pytest.raises(ValueError, match="needs a CUDA device"):
        NCCLCommunicator(gfd.SingleProcessCommunicator(), gf.device("cpu"), nccl=FakeNccl(1))


# --------------------------------------------------------------------------------------------
# Real 2-rank jobs under mpirun
# --------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _mpi_unavailable() -> str | None:
    """Why mpirun jobs cannot run here (None when they can)."""
    if shutil.which("mpirun") is None:
        return "mpirun not found (apt-get install openmpi-bin libopenmpi-dev)"
    if importlib.util.find_spec("mpi4py") is None:
        return "mpi4py not installed (pip install 'gradflow-nn[distributed]')"
    probe = _mpirun(["-c", "from mpi4py import MPI; assert MPI.COMM_WORLD.Get_size() == 2"], timeout=60,
                    module=False)
    if probe.returncode != 0:
        return f"mpirun -np 2 with mpi4py fails here: {probe.stderr.strip()[-300:]}"
    return None


def _mpirun(args: list[str], timeout: float, module: bool = True) -> subprocess.CompletedProcess:
    version = subprocess.run(["mpirun", "--version"], capture_output=True, text=True).stdout
    flags = ["--allow-run-as-root", "--oversubscribe"] if "Open MPI" in version or "OpenRTE" in version else []
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    env.pop(gfd.launch.COMM_ENV, None)
    command = ["mpirun", *flags, "-np", "2", sys.executable, *(["-m", "mpi4py"] if module else []), *args]
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"{' '.join(command)} did not finish within {timeout} s (hung?)\n{error.stdout}\n{error.stderr}")


def _require_mpi():
    reason = _mpi_unavailable()
    if reason is not None:
        pytest.skip(reason)


@pytest.fixture(scope="module")
def two_rank_training(tmp_path_factory):
    _require_mpi()
    out = tmp_path_factory.mktemp("ddp")
    job = _mpirun([str(ROOT / "tests" / "distributed" / "distributed_worker.py"), "train", str(out)], timeout=MPI_TIMEOUT_S)
    assert job.returncode == 0, job.stdout + job.stderr
    return out


@pytest.mark.mpi
def test_mpi_ranks_hold_bit_identical_parameters_after_training(two_rank_training):
    out = two_rank_training
    for run in ("loop", "fit"):
        rank0, rank1 = np.load(out / f"{run}_rank0.npy"), np.load(out / f"{run}_rank1.npy")
        assert rank0.dtype == np.float64 and rank0.size == 6 * 16 + 16 + 16 * 3 + 3
        np.testing.assert_array_equal(rank0, rank1)


@pytest.mark.mpi
def test_mpi_reducing_the_optimizers_flat_gradients_in_place_trains_bit_identically(two_rank_training):
    # overlapped MPI_Iallreduce buckets of Adam's own flat gradient array vs the reducer's buffer
    for rank in (0, 1):
        np.testing.assert_array_equal(np.load(two_rank_training / f"shared_rank{rank}.npy"),
                                      np.load(two_rank_training / f"loop_rank{rank}.npy"))


@pytest.mark.mpi
def test_mpi_two_ranks_with_half_batches_match_one_process_with_the_full_batch(two_rank_training):
    # The same global batches (the shards interleave one permutation) and the same mean
    # gradient: only the order of float64 additions differs (two half-batch sums, then the
    # all-reduce, instead of one sum over the batch; and n * g / N weighting), about 1e-16
    # relative per step, which Adam's 63 steps keep far below 1e-9.
    single, single_loss = worker.train_loop(gfd.SingleProcessCommunicator(), batch_per_rank=20)
    np.testing.assert_allclose(np.load(two_rank_training / "loop_rank0.npy"), worker.flat_parameters(single),
                               rtol=1e-9, atol=1e-12)
    single_fit = worker.train_fit(gfd.SingleProcessCommunicator(), batch_per_rank=20)
    np.testing.assert_allclose(np.load(two_rank_training / "fit_rank0.npy"), worker.flat_parameters(single_fit),
                               rtol=1e-9, atol=1e-12)
    reports = [json.loads((two_rank_training / f"report_rank{r}.json").read_text()) for r in (0, 1)]
    assert reports[0]["last_loss"] == reports[1]["last_loss"] == pytest.approx(single_loss, rel=1e-9)


@pytest.mark.mpi
def test_mpi_job_uses_mpi_writes_the_checkpoint_on_rank0_only_and_handles_float16(two_rank_training):
    out = two_rank_training
    reports = [json.loads((out / f"report_rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["communicator"].split(",")[0] for r in reports] == ["MPICommunicator(rank=0", "MPICommunicator(rank=1"]
    assert [r["is_main_process"] for r in reports] == [True, False]
    assert [r["save_result"] for r in reports] == ["saved", None]
    assert sorted(p.name for p in out.glob("saved_by_rank*")) == ["saved_by_rank0"]
    np.testing.assert_array_equal(np.load(out / "checkpoint.npy"), np.load(out / "loop_rank0.npy"))
    assert all(r["float16_sum"] == [3.0, 3.0, 3.0] and r["float16_broadcast"] == [1.25, 1.25] for r in reports)


@pytest.mark.mpi
def test_mpi_a_failing_rank_ends_the_job_instead_of_hanging_it(tmp_path):
    _require_mpi()
    started = time.perf_counter()
    job = _mpirun([str(ROOT / "tests" / "distributed" / "distributed_worker.py"), "raise", str(tmp_path)], timeout=60)
    assert job.returncode != 0
    assert "rank 1 fails on purpose" in job.stderr + job.stdout
    assert not (tmp_path / "rank0_finished").exists()
    assert time.perf_counter() - started < 60


@pytest.mark.mpi
@pytest.mark.gpu
def test_mpi_training_on_gpus_keeps_ranks_identical_and_matches_the_cpu(tmp_path):
    # One GPU: both ranks share it through MPI (NCCL refuses two ranks on one GPU); two or
    # more: NCCL. The float64 trajectory matches the CPU one up to summation order.
    if gf.backend.cuda_device_count() == 0:
        pytest.skip("no CUDA GPU visible to CuPy")
    if getattr(sys.modules.get("cupy"), "__simulated__", False):
        pytest.skip("simulated GPUs live inside one process (no NCCL between MPI ranks); data parallel with one "
                    "simulated GPU per rank runs with thread ranks in tests/training/test_gpu_placement.py")
    _require_mpi()
    job = _mpirun([str(ROOT / "tests" / "distributed" / "distributed_worker.py"), "train", str(tmp_path), "cuda"], timeout=MPI_TIMEOUT_S)
    assert job.returncode == 0, job.stdout + job.stderr
    reports = [json.loads((tmp_path / f"report_rank{r}.json").read_text()) for r in (0, 1)]
    expected = "NCCLCommunicator" if gf.backend.cuda_device_count() >= 2 and gfd.nccl_available() else "MPICommunicator"
    assert all(r["communicator"].startswith(expected) for r in reports), reports
    single, _ = worker.train_loop(gfd.SingleProcessCommunicator(), batch_per_rank=20)
    for run in ("loop", "fit"):
        np.testing.assert_array_equal(np.load(tmp_path / f"{run}_rank0.npy"), np.load(tmp_path / f"{run}_rank1.npy"))
    np.testing.assert_allclose(np.load(tmp_path / "loop_rank0.npy"), worker.flat_parameters(single), rtol=1e-9, atol=1e-12)


@pytest.mark.mpi
def test_ddp_digits_example_runs_on_two_ranks():
    _require_mpi()
    job = _mpirun([str(ROOT / "examples" / "ddp_digits.py"), "--epochs", "1"], timeout=MPI_TIMEOUT_S)
    assert job.returncode == 0, job.stdout + job.stderr
    assert "rank 0: 719 training samples" in job.stdout and "rank 1: 719 training samples" in job.stdout
    assert "test accuracy" in job.stdout


# --------------------------------------------------------------------------------------------
# Overlap: buckets all-reduced during backprop
# --------------------------------------------------------------------------------------------


def _overlap_net(seed, width=16):
    return gf.Sequential(L.Linear(12, width, rng=seed), L.ReLU(), L.Linear(width, width, rng=seed + 1), L.ReLU(),
                         L.Linear(width, 5, rng=seed + 2)).to("cpu", "float64")


def _overlap_run(comm, overlap, steps=3, shared=False, groups=False, width=16):
    from gradflow.optim import weight_decay_groups

    from .distributed_helpers import AsyncThreadCommunicator

    net = _overlap_net(10 * comm.rank, width)  # different weights: DataParallel broadcasts rank 0's
    model = gfd.DataParallel(net, comm, bucket_bytes=256, overlap=overlap)
    optimizer = SGD(weight_decay_groups(model, 1e-2) if groups else model, lr=0.1, momentum=0.9)
    if shared:
        model.use_optimizer_buffers(optimizer)
    rng = np.random.default_rng(comm.rank)
    launched_early = []
    finish = model.reducer.finish

    def finish_and_record(average=True):
        launched_early.append(model.reducer._step["launched"] if model.reducer._step else 0)
        finish(average)

    model.reducer.finish = finish_and_record
    for _ in range(steps):
        x = rng.standard_normal((6 + comm.rank, 12))  # unequal batches: weighted by samples
        labels = rng.integers(0, 5, 6 + comm.rank)
        output, backprop = model(x, train=True)
        _, delta = SoftmaxCrossEntropy()(output, labels)
        optimizer.zero_grad()
        backprop(delta)
        optimizer.step()
    log = comm.log if isinstance(comm, AsyncThreadCommunicator) else []
    return worker.flat_parameters(net), launched_early, len(model.reducer.buckets), log


def test_overlapped_buckets_give_the_same_parameters_as_one_reduction_after_backprop():
    from .distributed_helpers import AsyncThreadCommunicator

    blocking = run_ranks(2, lambda comm: _overlap_run(comm, overlap=False))
    overlapped = run_ranks(2, lambda comm: _overlap_run(comm, overlap=True), AsyncThreadCommunicator)
    np.testing.assert_array_equal(blocking[0][0], blocking[1][0])
    np.testing.assert_array_equal(overlapped[0][0], overlapped[1][0])
    np.testing.assert_array_equal(overlapped[0][0], blocking[0][0])  # same sums, same order: bit-identical
    for _, launched_early, buckets, log in overlapped:
        assert buckets >= 3
        # every bucket started inside the model's backprop (the first layer's bucket as soon as
        # its backprop returned), none was left for finish(), which only waits
        assert launched_early == [buckets] * 3, (launched_early, buckets)
        assert log.count("done:" + log[0].split(":")[1]) == 3 and len([e for e in log if e.startswith("start")]) == 3 * buckets
    assert blocking[0][1] == []  # overlap=False never begins a step


@pytest.mark.parametrize("groups, width", [(False, 16), (True, 16), (False, 400)],
                         ids=["one_buffer", "weight_decay_groups", "large_host_parameters_updated_one_by_one"])
def test_reducing_the_optimizers_flat_gradients_in_place_is_bit_identical_blocking_and_overlapped(groups, width):
    # width 400: the host parameters average over 16384 entries, so the optimizer (flat=None)
    # updates them one by one, reading the reduced gradients as views of its flat arrays
    from .distributed_helpers import AsyncThreadCommunicator

    own = run_ranks(2, lambda comm: _overlap_run(comm, overlap=False, groups=groups, width=width))
    blocking = run_ranks(2, lambda comm: _overlap_run(comm, overlap=False, shared=True, groups=groups, width=width))
    overlapped = run_ranks(2, lambda comm: _overlap_run(comm, overlap=True, shared=True, groups=groups, width=width),
                           AsyncThreadCommunicator)
    for result in (blocking[0], blocking[1], overlapped[0], overlapped[1]):
        np.testing.assert_array_equal(result[0], own[0][0])
    for _, launched_early, buckets, log in overlapped:
        assert buckets >= 3 and launched_early == [buckets] * 3, (launched_early, buckets)
        # the count's one-element collective, then every bucket, at each step
        assert len([e for e in log if e.startswith("start")]) == 3 * (buckets + 1)


def test_reduced_gradients_are_the_optimizers_flat_gradient_so_its_step_packs_nothing():
    def run(comm):
        net = _overlap_net(0)
        model = gfd.DataParallel(net, comm, overlap=False)
        optimizer = Adam(model, lr=1e-2)
        model.use_optimizer_buffers(optimizer)
        x = np.random.default_rng(comm.rank).standard_normal((4, 12))
        y, backprop = model(x, train=True)
        backprop(np.ones_like(y))
        (buffer,) = optimizer.flat_buffers()
        packed = buffer.grad
        shared = all(np.shares_memory(p.grad, packed) for p in net.parameters())
        return shared, buffer.gather_grads() is packed, [gf.to_numpy(p.grad).copy() for p in net.parameters()]

    def reference(comm):
        net = _overlap_net(0)
        model = gfd.DataParallel(net, comm, overlap=False)
        x = np.random.default_rng(comm.rank).standard_normal((4, 12))
        y, backprop = model(x, train=True)
        backprop(np.ones_like(y))
        return [gf.to_numpy(p.grad) for p in net.parameters()]

    found, expected = run_ranks(2, run), run_ranks(2, reference)
    for (shared, same, grads), wanted in zip(found, expected):
        assert shared and same
        for a, b in zip(grads, wanted):
            np.testing.assert_array_equal(a, b)


def test_use_optimizer_buffers_refuses_an_optimizer_of_other_parameters():
    net = _overlap_net(0)
    model = gfd.DataParallel(net, gfd.SingleProcessCommunicator())
    with pytest.raises(ValueError, match="must hold exactly the 6 parameters reduced here; it holds 2"):
        model.use_optimizer_buffers(SGD(net[0], lr=0.1))
    with pytest.raises(TypeError, match="expected a gradflow Optimizer, got list"):
        model.use_optimizer_buffers([])
    assert model.reducer.optimizer is None


def test_overlap_counts_every_call_of_a_layer_used_twice():
    # one Linear applied twice: its gradient is final only after both calls have backpropagated
    from .distributed_helpers import AsyncThreadCommunicator

    class Twice(gf.Layer):
        def __init__(self, seed):
            self.first = L.Linear(8, 8, rng=seed)
            self.shared = L.Linear(8, 8, rng=seed + 1)

        def forward(self, x, train, input_grad=True):
            h, b1 = self.first(x, train)
            y1, b2 = self.shared(h, train)
            y2, b3 = self.shared(y1, train)
            return y2, lambda dy: b1(b2(b3(dy)))

    def run(comm, overlap):
        net = Twice(comm.rank).to("cpu", "float64")
        model = gfd.DataParallel(net, comm, bucket_bytes=64, overlap=overlap)
        x = np.random.default_rng(comm.rank).standard_normal((4, 8))
        y, backprop = model(x, train=True)
        backprop(np.ones_like(y))
        return [gf.to_numpy(p.grad) for p in net.parameters()]

    blocking = run_ranks(2, lambda comm: run(comm, False))
    overlapped = run_ranks(2, lambda comm: run(comm, True), AsyncThreadCommunicator)
    for a, b in zip(blocking[0], overlapped[0]):
        np.testing.assert_array_equal(a, b)


def test_communicator_iallreduce_default_is_the_blocking_allreduce():
    results = run_ranks(2, lambda comm: (lambda b: (comm.iallreduce(b).wait(), b)[1])(np.full(3, comm.rank + 1.0)))
    for buffer in results:
        np.testing.assert_array_equal(buffer, [3.0, 3.0, 3.0])
