"""The PyTorch-style options of the vision layers (issue 14), checked against torch.nn in float64:
pooling (ceil_mode, dilation, return_indices, count_include_pad, divisor_override, adaptive,
unpooling), padding modes, 3-D convolutions, BatchNorm without running statistics or with a
cumulative average, LayerNorm without bias, RMSNorm, InstanceNorm, Embedding max_norm and small
integer ids. The registry (tests/cases/vision_options.py) checks the same layers against NumPy
references and finite differences on every device; this file is the second oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gradflow as gf
from gradflow import backend
from gradflow import layers as L

torch = pytest.importorskip("torch")


def _distinct(shape, seed=0):
    n = int(np.prod(shape))
    return (np.random.default_rng(seed).permutation(n) - n / 2).reshape(shape) * 0.05


def _compare(ours, theirs, x, *, copy=(), atol=1e-12, train=True, call=None):
    """Forward and backward of ``ours`` (float64, cpu) against ``theirs`` (a torch module or function)."""
    for name in copy:
        ours_p = getattr(ours, name)
        with torch.no_grad():
            getattr(theirs, name).copy_(torch.from_numpy(np.asarray(ours_p.value)))
    y, backprop = ours(x, train=train) if call is None else call(ours, x)
    x_t = torch.from_numpy(x.copy()).requires_grad_()
    y_t = theirs(x_t)
    np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-10, atol=atol)
    dy = np.random.default_rng(1).normal(size=y.shape)
    dx = backprop(dy)
    y_t.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-10, atol=atol)
    for name in copy:
        np.testing.assert_allclose(getattr(ours, name).grad, getattr(theirs, name).grad.numpy(), rtol=1e-10, atol=atol)


POOLS = [
    ("MaxPool2d", dict(kernel_size=3, stride=2, ceil_mode=True), (2, 3, 8, 7)),
    ("MaxPool2d", dict(kernel_size=(3, 2), stride=(2, 3), padding=(1, 1), ceil_mode=True), (2, 2, 6, 8)),
    ("MaxPool2d", dict(kernel_size=2, stride=1, dilation=(2, 3)), (2, 2, 6, 8)),
    ("MaxPool2d", dict(kernel_size=3, stride=2, padding=1, dilation=2, ceil_mode=True), (1, 2, 9, 10)),
    ("MaxPool1d", dict(kernel_size=3, stride=2, dilation=2, ceil_mode=True), (2, 3, 10)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, ceil_mode=True), (2, 3, 8, 7)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True), (2, 3, 8, 6)),
    ("AvgPool2d", dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False), (2, 3, 8, 6)),
    ("AvgPool2d", dict(kernel_size=(2, 3), stride=2, padding=1, divisor_override=5), (2, 2, 7, 6)),
    ("AvgPool2d", dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1), count_include_pad=False), (2, 2, 5, 4)),
    ("AvgPool1d", dict(kernel_size=4, stride=3, padding=2, ceil_mode=True, count_include_pad=False), (2, 3, 10)),
    ("AvgPool1d", dict(kernel_size=4, stride=3, padding=1, ceil_mode=True), (2, 3, 11)),
    ("AdaptiveAvgPool2d", dict(output_size=(3, 4)), (2, 3, 7, 9)),
    ("AdaptiveAvgPool2d", dict(output_size=(5, None)), (2, 2, 3, 4)),
    ("AdaptiveAvgPool1d", dict(output_size=4), (2, 3, 11)),
    ("AdaptiveMaxPool2d", dict(output_size=(3, 4)), (2, 3, 7, 9)),
    ("AdaptiveMaxPool2d", dict(output_size=(4, 2)), (1, 2, 3, 5)),
    ("AdaptiveMaxPool1d", dict(output_size=4), (2, 3, 11)),
]


@pytest.mark.parametrize("name,kwargs,shape", POOLS, ids=[f"{p[0]}-{i}" for i, p in enumerate(POOLS)])
def test_pooling_options_agree_with_pytorch(name, kwargs, shape):
    _compare(getattr(L, name)(**kwargs), getattr(torch.nn, name)(**kwargs), _distinct(shape))


@pytest.mark.parametrize("dims,kwargs", [
    (2, dict(kernel_size=2)), (2, dict(kernel_size=3, stride=2, padding=1)), (2, dict(kernel_size=(3, 2), stride=(2, 1), ceil_mode=True)),
    (2, dict(kernel_size=2, stride=1, dilation=2)), (1, dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)),
])
def test_max_pool_indices_and_unpooling_agree_with_pytorch(dims, kwargs):
    shape = (2, 3, 7, 8)[:dims + 2]
    x = _distinct(shape, seed=3)
    pool = getattr(L, f"MaxPool{dims}d")(**kwargs, return_indices=True)
    (y, idx), backprop = pool(x, train=True)
    y_t, idx_t = getattr(torch.nn, f"MaxPool{dims}d")(**kwargs, return_indices=True)(torch.from_numpy(x))
    np.testing.assert_array_equal(y, y_t.numpy())
    np.testing.assert_array_equal(idx, idx_t.numpy())
    assert idx.dtype == np.int64
    dx = backprop(np.ones_like(y))  # backprop takes the δ of y alone
    assert dx.shape == x.shape
    if "dilation" in kwargs or kwargs.get("ceil_mode"):
        return  # PyTorch's MaxUnpool has no dilation; ceil-mode sizes need output_size (tested below)
    unpool_args = {k: v for k, v in kwargs.items() if k in ("kernel_size", "stride", "padding")}
    ours = getattr(L, f"MaxUnpool{dims}d")(**unpool_args)
    theirs = getattr(torch.nn, f"MaxUnpool{dims}d")(**unpool_args)
    z, back = ours(y, train=True, indices=idx, output_size=x.shape[2:])
    y_t = torch.from_numpy(y.copy()).requires_grad_()
    z_t = theirs(y_t, idx_t, output_size=x.shape[2:])
    np.testing.assert_allclose(z, z_t.detach().numpy(), rtol=1e-15, atol=0)  # a repeated index: the mean of equal values
    dz = np.random.default_rng(0).normal(size=z.shape)
    z_t.backward(torch.from_numpy(dz))
    np.testing.assert_allclose(back(dz), y_t.grad.numpy(), rtol=0, atol=0)


def test_max_unpool_default_size_and_output_size_checks():
    x = _distinct((1, 2, 4, 6))
    (y, idx), _ = L.MaxPool2d(2, return_indices=True)(x, train=True)
    z = L.MaxUnpool2d(2)(y, train=False, indices=idx)[0]
    assert z.shape == x.shape and np.count_nonzero(z) == y.size
    with pytest.raises(ValueError, match=r"MaxUnpool2d\(kernel_size=\(2, 2\)\): output_size \(6, 6\) must lie strictly between"):
        L.MaxUnpool2d(2)(y, indices=idx, output_size=(6, 6))


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("dims", [1, 2, 3])
def test_padding_modes_agree_with_pytorch(mode, dims):
    shape = {1: (2, 4, 9), 2: (2, 4, 6, 7), 3: (1, 4, 4, 5, 3)}[dims]
    kwargs = dict(in_channels=4, out_channels=6, kernel_size=(3, 2, 3)[:dims], stride=(2, 1, 1)[:dims],
                  padding=(2, 1, 1)[:dims], dilation=(1, 2, 1)[:dims], groups=2, padding_mode=mode)
    ours = getattr(L, f"Conv{dims}d")(**kwargs, rng=0).to("cpu", "float64")
    theirs = getattr(torch.nn, f"Conv{dims}d")(**kwargs).double()
    ours.bias.value = np.random.default_rng(2).normal(size=6)
    _compare(ours, theirs, np.random.default_rng(0).normal(size=shape), copy=("weight", "bias"))


@pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")
def test_same_padding_with_a_padding_mode_agrees_with_pytorch():
    kwargs = dict(in_channels=2, out_channels=3, kernel_size=(4, 3), padding="same", padding_mode="reflect")
    ours = L.Conv2d(**kwargs, rng=0).to("cpu", "float64")
    _compare(ours, torch.nn.Conv2d(**kwargs).double(), np.random.default_rng(0).normal(size=(2, 2, 5, 6)),
             copy=("weight", "bias"))


def test_conv_transpose3d_agrees_with_pytorch():
    kwargs = dict(in_channels=4, out_channels=2, kernel_size=(2, 3, 2), stride=(2, 1, 2), padding=(0, 1, 1),
                  output_padding=(1, 0, 1), groups=2, dilation=(1, 2, 1))
    ours = L.ConvTranspose3d(**kwargs, rng=0).to("cpu", "float64")
    ours.bias.value = np.random.default_rng(2).normal(size=2)
    _compare(ours, torch.nn.ConvTranspose3d(**kwargs).double(), np.random.default_rng(0).normal(size=(2, 4, 3, 2, 3)),
             copy=("weight", "bias"))


def test_padding_mode_too_large_for_the_input_is_a_clear_error():
    conv = L.Conv1d(1, 1, 3, padding=4, padding_mode="reflect", rng=0)
    with pytest.raises(ValueError, match=r"Conv1d\(.*padding_mode='reflect' needs each padding smaller than the input size"):
        conv(np.ones((1, 1, 4), dtype=np.float32))


def _batch_norm_pair(**kwargs):
    ours = L.BatchNorm2d(3, **kwargs).to("cpu", "float64")
    theirs = torch.nn.BatchNorm2d(3, **kwargs).double()
    rng = np.random.default_rng(4)
    ours.weight.value, ours.bias.value = rng.normal(size=3), rng.normal(size=3)
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.value))
        theirs.bias.copy_(torch.from_numpy(ours.bias.value))
    return ours, theirs


def test_batch_norm_cumulative_average_matches_pytorch():
    ours, theirs = _batch_norm_pair(momentum=None)
    rng = np.random.default_rng(0)
    for i in range(4):
        x = rng.normal(loc=i, scale=1 + i, size=(4, 3, 2, 3))
        ours(x, train=True)
        theirs.train()(torch.from_numpy(x))
    np.testing.assert_allclose(ours.running_mean.value, theirs.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(ours.running_var.value, theirs.running_var.numpy(), rtol=1e-12)
    assert int(ours.num_batches_tracked.value) == int(theirs.num_batches_tracked) == 4
    theirs.eval()
    _compare(ours, theirs, rng.normal(size=(2, 3, 2, 3)), copy=("weight", "bias"), train=False)


def test_batch_norm_cumulative_count_survives_a_checkpoint_and_a_move(tmp_path, device):
    def model():
        return gf.Sequential(L.Conv2d(1, 2, 3, rng=0), L.BatchNorm2d(2, momentum=None), L.BatchNorm2d(2, track_running_stats=False))

    saved = model().to(device)
    for i in range(3):
        saved(device.send(np.random.default_rng(i).normal(size=(4, 1, 5, 5)), "float32"), train=True)
    gf.save(tmp_path / "bn.safetensors", saved)
    restored = model().to(device)
    gf.load(tmp_path / "bn.safetensors", restored)
    state = {k: backend.to_numpy(v) for k, v in restored.state_dict().items()}
    assert state["1.num_batches_tracked"].shape == () and int(state["1.num_batches_tracked"]) == 3
    assert "2.running_mean" not in state
    np.testing.assert_array_equal(state["1.running_mean"], backend.to_numpy(saved[1].running_mean.value))
    restored.to(device, "float64")  # the count stays an integer
    assert backend.dtype_name(restored[1].num_batches_tracked.value.dtype) == "int64"


def test_batch_norm_without_running_statistics_uses_the_batch_in_eval_too():
    ours, theirs = _batch_norm_pair(track_running_stats=False)
    assert ours.running_mean is None and "running_mean" not in ours.state_dict()
    theirs.eval()
    x = np.random.default_rng(0).normal(size=(4, 3, 2, 3))
    _compare(ours, theirs, x, copy=("weight", "bias"), train=False)


@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("dims", [1, 2])
def test_instance_norm_agrees_with_pytorch(dims, affine):
    ours = getattr(L, f"InstanceNorm{dims}d")(3, affine=affine).to("cpu", "float64")
    theirs = getattr(torch.nn, f"InstanceNorm{dims}d")(3, affine=affine).double()
    if affine:
        ours.weight.value = np.random.default_rng(3).normal(size=3)
        ours.bias.value = np.random.default_rng(4).normal(size=3)
    x = np.random.default_rng(0).normal(size=(2, 3, 5, 4)[:dims + 2])
    _compare(ours, theirs, x, copy=("weight", "bias") if affine else ())


def test_layer_norm_without_bias_and_rms_norm_agree_with_pytorch():
    ours = L.LayerNorm((2, 5), bias=False).to("cpu", "float64")
    ours.weight.value = np.random.default_rng(3).normal(size=(2, 5))
    assert ours.bias is None and list(ours.state_dict()) == ["weight"]
    x = np.random.default_rng(0).normal(size=(3, 2, 5))
    _compare(ours, torch.nn.LayerNorm((2, 5), bias=False).double(), x, copy=("weight",))
    for eps in (None, 1e-3):
        rms = L.RMSNorm(5, eps=eps).to("cpu", "float64")
        rms.weight.value = np.random.default_rng(5).normal(size=5)
        _compare(rms, torch.nn.RMSNorm(5, eps=eps).double(), x, copy=("weight",))


@pytest.mark.parametrize("norm_type", [2.0, 1.0, 3.0, math.inf])
def test_embedding_max_norm_renormalises_referenced_rows_like_pytorch(norm_type):
    ours = L.Embedding(6, 4, padding_idx=1, max_norm=1.2, norm_type=norm_type, rng=0).to("cpu", "float64")
    theirs = torch.nn.Embedding(6, 4, padding_idx=1, max_norm=1.2, norm_type=norm_type).double()
    ours.weight.value[2] *= 0.1  # one referenced row well inside the limit
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.value))
    ids = np.array([[0, 2, 2, 1], [5, 0, 1, 2]])
    version, before = ours.weight.version, ours.weight.value.copy()
    y, backprop = ours(ids, train=True)
    y_t = theirs(torch.from_numpy(ids))
    np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ours.weight.value, theirs.weight.detach().numpy(), rtol=1e-12, atol=1e-14)
    assert ours.weight.version == version + 1  # changed in place, and says so
    np.testing.assert_array_equal(ours.weight.value[[3, 4]], before[[3, 4]])  # not referenced: kept as they were
    norms = np.linalg.norm(before, ord=norm_type, axis=1)
    assert norms[2] < 1.2 and np.any(norms[[0, 5]] > 1.2)  # some referenced rows are rescaled, one is not
    np.testing.assert_array_equal(ours.weight.value[2], before[2])
    dy = np.random.default_rng(1).normal(size=y.shape)
    backprop(dy)
    y_t.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("dtype", ["int8", "int16", "uint8", "int32", "uint16"])
def test_embedding_takes_ids_of_any_integer_dtype_on_every_device(device, dtype):
    layer = L.Embedding(7, 3, rng=0).to(device)
    ids = np.array([[1, 6, 1], [0, 2, 5]]).astype(dtype)
    try:
        sent = device.send(ids)
    except Exception as error:  # a library without this dtype
        pytest.skip(f"{device.name} has no {dtype}: {error}")
    y, backprop = layer(sent, train=True)
    expected = backend.to_numpy(layer.weight.value)[ids.astype(np.int64)]
    np.testing.assert_array_equal(backend.to_numpy(y), expected)
    backprop(device.send(np.ones(expected.shape), "float32"))
    counts = np.bincount(ids.reshape(-1).astype(np.int64), minlength=7)
    np.testing.assert_array_equal(backend.to_numpy(layer.weight.grad), np.repeat(counts[:, None], 3, axis=1))


def test_global_avg_pool_of_zero_spatial_size_is_a_clear_error(device):
    with pytest.raises(ValueError, match=r"GlobalAvgPool\(\): expected a non-empty spatial size.*shape \(2, 3, 0, 4\)"):
        L.GlobalAvgPool()(device.send(np.ones((2, 3, 0, 4)), "float32"), train=True)


@pytest.mark.parametrize("kwargs", [dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, dilation=1, ceil_mode=True),
                                    dict(kernel_size=(2, 3), stride=1, dilation=(2, 1))])
def test_max_pool_indices_are_the_same_on_every_device_and_unpool_puts_the_maxima_back(device, kwargs):
    x = _distinct((2, 3, 7, 8), seed=5)
    pool = L.MaxPool2d(**kwargs, return_indices=True)
    (y_ref, idx_ref), _ = pool(x, train=False)
    (y, idx), backprop = pool(device.send(x, "float64"), train=True)
    np.testing.assert_array_equal(backend.to_numpy(y), y_ref)
    np.testing.assert_array_equal(backend.to_numpy(idx), idx_ref)
    assert backend.dtype_name(idx.dtype) == "int64"
    assert backend.to_numpy(backprop(device.send(np.ones(y_ref.shape), "float64"))).shape == x.shape
    # every index names the entry holding its max
    flat = x.reshape(2, 3, -1)
    np.testing.assert_array_equal(np.take_along_axis(flat, idx_ref.reshape(2, 3, -1), axis=2).reshape(y_ref.shape), y_ref)
    if kwargs.get("dilation", 1) == 1 and not kwargs.get("ceil_mode"):
        unpool = L.MaxUnpool2d(kwargs["kernel_size"], kwargs.get("stride"), kwargs.get("padding", 0))
        z = backend.to_numpy(unpool(y, train=False, indices=idx, output_size=x.shape[2:])[0])
        kept = z != 0
        np.testing.assert_array_equal(z[kept], x[kept])


@pytest.mark.parametrize("make,shape", [(lambda: L.GroupNorm(2, 4), (2, 4, 0)), (lambda: L.InstanceNorm2d(3), (2, 3, 4, 0)),
                                        (lambda: L.AdaptiveMaxPool1d(2), (2, 3, 0))])
def test_normalising_or_pooling_over_nothing_is_a_clear_error(device, make, shape):
    layer = make().to(device)
    with pytest.raises(ValueError, match=rf"{type(layer).__name__}\(.*\): expected a non-empty spatial size"):
        layer(device.send(np.ones(shape), "float32"), train=True)


def test_batch_norm_options_cross_to_pytorch_with_their_counters():
    from gradflow.interop import load_torch_state_dict, torch_state_dict

    ours = gf.Sequential(L.BatchNorm2d(3, momentum=None), L.BatchNorm2d(3, track_running_stats=False)).to("cpu", "float64")
    for i in range(2):
        ours(np.random.default_rng(i).normal(size=(4, 3, 2, 2)), train=True)
    theirs = torch.nn.Sequential(torch.nn.BatchNorm2d(3, momentum=None), torch.nn.BatchNorm2d(3, track_running_stats=False)).double()
    theirs.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in torch_state_dict(ours).items()})  # strict
    assert int(theirs[0].num_batches_tracked) == 2
    back = gf.Sequential(L.BatchNorm2d(3, momentum=None), L.BatchNorm2d(3, track_running_stats=False)).to("cpu", "float64")
    load_torch_state_dict(back, theirs.state_dict())
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(np.asarray(back.state_dict()[key]), np.asarray(value), err_msg=key)
