"""Flat multi-tensor optimizer steps: a fixed number of array operations however many parameter
arrays the model has, and everything that replaces arrays (model.to, load_state_dict,
checkpoints, clipping by hand) keeps working."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import layers
from gradflow.core import Parameter
from gradflow.optim import SGD, Adam, AdamW, clip_grad_norm

RNG = np.random.default_rng(3)


def test_every_optimizer_step_takes_the_same_operations_for_2_and_20_parameter_arrays():
    from benchmarks.measure import optimizer_step_operations

    counts = optimizer_step_operations(layer_counts=(1, 10))
    assert set(counts) >= {"sgd", "sgd_momentum", "adam", "adamw_clip_norm", "adam_amsgrad_clip_value",
                           "rmsprop_centered_momentum", "adagrad", "clip_grad_norm", "clip_grad_value"}
    for name, row in counts.items():
        assert set(row) == {2, 20}, (name, row)
        assert row[2] == row[20], f"{name}: {row[2]} operations with 2 parameter arrays, {row[20]} with 20"
        assert row[2] > 0


def _mlp(device, dtype="float64"):
    return gf.Sequential(layers.Linear(3, 5, rng=0), layers.Tanh(), layers.Linear(5, 2, rng=1)).to(device, dtype)


def _train(model, optimizer, steps, device, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        x = device.send(rng.normal(size=(4, 3)), model.dtype)
        y, backprop = model(x, train=True)
        optimizer.zero_grad()
        backprop(device.send(rng.normal(size=(4, 2)), model.dtype))
        optimizer.step()


def test_parameters_gradients_and_slots_become_views_of_one_flat_buffer(device):
    model = _mlp(device)
    optimizer = Adam(model, lr=0.01)
    _train(model, optimizer, 2, device)
    (_, indices, bucket), = optimizer._buckets
    assert indices == [0, 1, 2, 3] and bucket.size == sum(p.size for p in model.parameters())
    flat = gf.to_numpy(bucket.value)
    offset = 0
    for p in model.parameters():
        np.testing.assert_array_equal(flat[offset:offset + p.size], gf.to_numpy(p.value).reshape(-1))
        assert p.value is bucket.value_views[indices.index(model.parameters().index(p))]
        assert p.state["exp_avg"] is bucket.slot_views["exp_avg"][model.parameters().index(p)]
        assert p.grad is bucket.grad_views[model.parameters().index(p)]
        offset += p.size


def test_moving_the_model_between_steps_rebuilds_the_buffers_and_keeps_training_exact(device):
    reference = _mlp("cpu")
    ref_opt = Adam(reference, lr=0.01, weight_decay=0.01)
    _train(reference, ref_opt, 5, gf.device("cpu"))

    model = _mlp("cpu")
    optimizer = Adam(model, lr=0.01, weight_decay=0.01)
    rng = np.random.default_rng(0)
    batches = [(rng.normal(size=(4, 3)), rng.normal(size=(4, 2))) for _ in range(5)]
    for i, (x, dy) in enumerate(batches):
        if i == 3:
            model.to(device)
        y, backprop = model(device.send(x, "float64") if i >= 3 else x, train=True)
        optimizer.zero_grad()
        backprop(device.send(dy, "float64") if i >= 3 else dy)
        optimizer.step()
    for p in model.parameters():
        assert device.owns(p.value) and all(device.owns(a) for a in p.state.values())
    for ours, theirs in zip(model.parameters(), reference.parameters()):
        np.testing.assert_allclose(gf.to_numpy(ours.value), theirs.value, rtol=1e-12, atol=1e-14)


def test_loading_weights_between_steps_takes_effect():
    model = _mlp("cpu")
    optimizer = SGD(model, lr=0.1)
    _train(model, optimizer, 2, gf.device("cpu"))
    saved = {k: np.array(v) for k, v in model.state_dict().items()}
    _train(model, optimizer, 2, gf.device("cpu"))
    model.load_state_dict(saved)
    for p in model.parameters():
        p.grad = np.zeros(p.shape)
    optimizer.step()  # a zero gradient: the loaded weights must stay as loaded
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(value, saved[key])


def test_each_update_marks_exactly_the_updated_parameters_modified():
    a, b = Parameter(np.ones(3)), Parameter(np.ones(2))
    optimizer = AdamW([a, b], lr=0.1)
    a.grad, b.grad = np.ones(3), np.ones(2)
    optimizer.step()
    a.grad, b.grad = np.ones(3), None
    optimizer.step()
    assert (a.version, b.version) == (2, 1)


def test_clipping_by_hand_then_stepping_matches_the_optimizers_own_clipping():
    first, second = _mlp("cpu"), _mlp("cpu")
    by_hand, built_in = SGD(first, lr=0.1, momentum=0.9), SGD(second, lr=0.1, momentum=0.9, clip_norm=0.05)
    for step in range(3):
        for p, q in zip(first.parameters(), second.parameters()):
            g = RNG.normal(size=p.shape)
            p.grad, q.grad = g.copy(), g.copy()
        clip_grad_norm(first, 0.05)
        by_hand.step()
        built_in.step()
    for p, q in zip(first.parameters(), second.parameters()):
        np.testing.assert_allclose(p.value, q.value, rtol=1e-13, atol=1e-15)


def test_groups_and_dtypes_get_separate_buffers():
    a, b, c = Parameter(np.ones(3)), Parameter(np.ones(2, dtype=np.float32)), Parameter(np.ones(4))
    optimizer = Adam([{"params": [a, b]}, {"params": [c], "lr": 0.5}], lr=0.1)
    for p in (a, b, c):
        p.grad = np.ones(p.shape, dtype=p.value.dtype)
    optimizer.step()
    assert [(g, i) for g, i, _ in optimizer._buckets] == [(0, [0]), (0, [1]), (1, [2])]
    assert b.value.dtype == np.float32 and b.state["exp_avg"].dtype == np.float32
    np.testing.assert_allclose(c.value, 0.5, rtol=1e-6)


@pytest.mark.parametrize("optimizer_class", [SGD, Adam])
def test_a_second_optimizer_on_the_same_parameters_rebuilds_and_stays_correct(optimizer_class):
    p = Parameter(np.ones(3))
    first, second = optimizer_class([p], lr=0.1), optimizer_class([p], lr=0.1)
    for optimizer in (first, second, first):
        p.grad = np.ones(3)
        optimizer.step()
    assert p.value.shape == (3,) and np.all(p.value < 1)


def test_a_checkpoint_keeps_each_groups_lr_step_counts_and_slots(tmp_path):
    model = _mlp("cpu")
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if name.endswith("bias")]

    def make():
        return Adam([{"params": weights}, {"params": biases, "lr": 0.003, "weight_decay": 0.0}], lr=0.01,
                    weight_decay=0.1)

    optimizer = make()
    for step in range(3):
        for p in model.parameters():
            p.grad = None if (p in biases and step == 0) else RNG.normal(size=p.shape)
        optimizer.step()
    gf.save(tmp_path / "ckpt.safetensors", model, optimizer)
    fresh = make()
    fresh.lr = 0.5  # both groups now 0.5: the checkpoint must restore 0.01 and 0.003
    gf.load(tmp_path / "ckpt.safetensors", model, fresh)
    assert [g["lr"] for g in fresh.param_groups] == [0.01, 0.003]
    assert fresh.param_steps == optimizer.param_steps == [3, 3, 2, 2]  # weights, then biases
    for p in model.parameters():
        p.grad = np.ones(p.shape)
    before = [np.array(p.value) for p in model.parameters()]
    fresh.step()
    assert all(np.any(p.value != b) for p, b in zip(model.parameters(), before))


def _steps(model, optimizer, device, steps=3):
    rng = np.random.default_rng(5)
    for _ in range(steps):
        for p in model.parameters():
            p.grad = device.send(rng.normal(size=p.shape), "float32")
        optimizer.step()


def test_by_default_large_host_parameters_update_one_by_one_and_match_the_flat_update(device):
    from gradflow.optim.flat import HOST_FLAT_MAX_MEAN_SIZE

    def large():  # (128, 256) weight and (128,) bias: 16448 elements per array on average
        return gf.Sequential(layers.Linear(256, 128, rng=0)).to(device, "float32")

    chosen, packed = large(), large()
    by_default, flat = SGD(chosen, lr=0.1, momentum=0.9), SGD(packed, lr=0.1, momentum=0.9, flat=True)
    _steps(chosen, by_default, device)
    _steps(packed, flat, device)
    (_, _, bucket), = by_default._buckets
    on_host = gf.backend.computes_on_host(bucket.value)
    assert bucket.size >= HOST_FLAT_MAX_MEAN_SIZE * 2 and bucket.flat_pays is not on_host
    assert (bucket.grad is None) is on_host  # the gradients were never packed on the host
    for ours, theirs in zip(chosen.parameters(), packed.parameters()):
        np.testing.assert_array_equal(gf.to_numpy(ours.value), gf.to_numpy(theirs.value))
        np.testing.assert_array_equal(gf.to_numpy(ours.state["momentum_buffer"]),
                                      gf.to_numpy(theirs.state["momentum_buffer"]))
    small = _mlp(device, "float32")
    small_default = SGD(small, lr=0.1, momentum=0.9)
    _steps(small, small_default, device)
    assert small_default._buckets[0][2].flat_pays
    assert all(p.grad is view for p, view in zip(small.parameters(), small_default._buckets[0][2].grad_views))


def test_by_default_a_gpu_step_of_large_parameters_takes_the_same_operations_for_2_and_4_arrays():
    import array_api_compat.numpy as compat_numpy

    from gradflow.backend import fused
    from gradflow.testing.counting import OperationCounter

    counts = []
    for count in (1, 2):
        counter = OperationCounter(compat_numpy)
        counter.array_type.gradflow_library = "cupy"  # taken for CuPy arrays: the GPU's choices
        model = gf.Sequential(*[layers.Linear(256, 128 if i == 0 else 256, rng=i) for i in range(count)][::-1])
        optimizer = Adam(model, lr=1e-3)
        counter.wrap_layer(model)
        for step in range(3):
            for p in model.parameters():
                p.grad = counter.wrap(RNG.normal(size=p.shape).astype(np.float32))
            if step == 2:
                counter.reset()
            # the portable rule: CuPy's kernels cannot run on these NumPy proxies (the simulated
            # ElementwiseKernel refuses NumPy operands, as CuPy does: cupy/_core/_scalar.pyx)
            with fused.engine("portable"):
                optimizer.step()
        counts.append(counter.total)
    assert counts[0] == counts[1] > 0
