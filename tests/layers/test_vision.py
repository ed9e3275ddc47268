"""Convolution, pooling and normalisation behaviour beyond the generic registry checks:
the strided-window fast path against its portable fallback, argument errors at construction,
batch-norm running statistics, max-pool ties, skipping the input δ, and PyTorch as a second
oracle."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import backend
from gradflow import layers as L
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import SGD

WINDOW_CASES = [
    # shape, kernel, stride, dilation, axis
    ((2, 3, 7, 6), (3, 2), (1, 1), (1, 1), None),
    ((2, 3, 9, 8), (2, 3), (2, 3), (2, 1), None),
    ((3, 10), (4,), (3,), (2,), None),
    ((3, 7, 6, 2), (3, 3), (2, 1), (1, 2), 1),  # batch-last layout: (C, H, W, N)
]


@pytest.mark.parametrize("shape,kernel,stride,dilation,axis", WINDOW_CASES)
@pytest.mark.parametrize("strided_input", [False, True], ids=["contiguous", "strided"])
def test_sliding_windows_fast_path_matches_portable_fallback_on_every_device(
        device, shape, kernel, stride, dilation, axis, strided_input):
    host = np.random.default_rng(0).normal(size=shape)
    if strided_input:  # a view with a gap between entries, as a slice of a wider array
        wide = np.zeros(shape[:-1] + (2 * shape[-1],))
        wide[..., ::2] = host
        x = device.send(wide, "float64")[..., ::2]
    else:
        x = device.send(host, "float64")
    fast = backend.to_numpy(backend.sliding_windows(x, kernel, stride, dilation, axis=axis))
    portable = backend.to_numpy(backend.sliding_windows(x, kernel, stride, dilation, axis=axis, portable=True))
    np.testing.assert_array_equal(fast, portable)
    # and both are the definition: out[..., i, o, ...] = x[..., o·s + i·δ, ...]
    first = len(shape) - len(kernel) if axis is None else axis
    expected_out = tuple((n - r * (k - 1) - 1) // s + 1 for n, k, s, r in
                         zip(shape[first:first + len(kernel)], kernel, stride, dilation))
    assert fast.shape == shape[:first] + kernel + expected_out + shape[first + len(kernel):]
    tap = tuple(k - 1 for k in kernel)
    position = tuple(o - 1 for o in expected_out)
    source = tuple(o * s + i * r for o, s, i, r in zip(position, stride, tap, dilation))
    lead = (slice(None),) * first
    np.testing.assert_array_equal(fast[(*lead, *tap, *position, ...)], host[(*lead, *source, ...)])


def test_sliding_windows_rejects_axes_smaller_than_the_dilated_kernel():
    x = np.zeros((2, 4))
    with pytest.raises(ValueError, match=r"sliding_windows: axes \(4,\) are smaller than the dilated kernel"):
        backend.sliding_windows(x, (3,), (1,), (2,))


CONSTRUCTION_ERRORS = [
    (lambda: L.Conv2d(0, 4, 3), r"Conv2d: in_channels must be a positive int, got 0"),
    (lambda: L.Conv2d(3, 4, 0), r"Conv2d: kernel_size must be an int >= 1 or a tuple of 2 such ints, got 0"),
    (lambda: L.Conv2d(3, 4, (3, 3, 3)), r"Conv2d: kernel_size must be .* a tuple of 2 such ints, got \(3, 3, 3\)"),
    (lambda: L.Conv2d(3, 4, 3, stride=0), r"Conv2d: stride must be an int >= 1"),
    (lambda: L.Conv2d(3, 4, 3, dilation=(1, 0)), r"Conv2d: dilation must be an int >= 1 .* got \(1, 0\)"),
    (lambda: L.Conv2d(3, 4, 3, padding=-1), r"Conv2d: padding must be a non-negative int"),
    (lambda: L.Conv2d(3, 4, 3, padding="full"), r"Conv2d: padding must be an int, a tuple of ints, 'same' or 'valid', got 'full'"),
    (lambda: L.Conv2d(3, 4, 3, stride=2, padding="same"), r"Conv2d: padding='same' needs stride 1, got stride=\(2, 2\)"),
    (lambda: L.Conv2d(3, 4, 3, groups=2), r"Conv2d: groups=2 must divide both in_channels=3 and out_channels=4"),
    (lambda: L.Conv1d(2, 2, (3, 3)), r"Conv1d: kernel_size must be .* a tuple of 1 such ints"),
    (lambda: L.ConvTranspose2d(2, 2, 3, stride=2, output_padding=2),
     r"ConvTranspose2d: output_padding must be smaller than stride or dilation"),
    (lambda: L.ConvTranspose2d(2, 3, 3, groups=2), r"ConvTranspose2d: groups=2 must divide both"),
    (lambda: L.MaxPool2d(2, padding=2), r"MaxPool2d: padding must be at most half the kernel size"),
    (lambda: L.MaxPool2d(0), r"MaxPool2d: kernel_size must be an int >= 1"),
    (lambda: L.AvgPool1d(3, stride=0), r"AvgPool1d: stride must be an int >= 1"),
    (lambda: L.BatchNorm2d(0), r"BatchNorm2d: num_features must be a positive int"),
    (lambda: L.BatchNorm1d(3, momentum=1.5), r"BatchNorm1d: momentum must be in \[0, 1\]"),
    (lambda: L.BatchNorm2d(3, eps=0), r"BatchNorm2d: eps must be > 0"),
    (lambda: L.GroupNorm(4, 6), r"GroupNorm: num_groups=4 must divide num_channels=6"),
    # the PyTorch-style options (issue 14)
    (lambda: L.Conv2d(2, 2, 3, padding_mode="mirror"), r"Conv2d: padding_mode must be one of 'zeros', 'reflect', 'replicate', 'circular', got 'mirror'"),
    (lambda: L.Conv3d(2, 2, (3, 3)), r"Conv3d: kernel_size must be .* a tuple of 3 such ints"),
    (lambda: L.ConvTranspose3d(2, 2, 3, stride=2, output_padding=2), r"ConvTranspose3d: output_padding must be smaller"),
    (lambda: L.MaxPool2d(2, dilation=0), r"MaxPool2d: dilation must be an int >= 1"),
    (lambda: L.AvgPool2d(2, divisor_override=0), r"AvgPool2d: divisor_override must be None or a positive int, got 0"),
    (lambda: L.AvgPool1d(2, divisor_override=1.5), r"AvgPool1d: divisor_override must be None or a positive int, got 1.5"),
    (lambda: L.AdaptiveAvgPool2d((2, 0)), r"AdaptiveAvgPool2d: output_size must be a positive int, None, or a tuple of 2"),
    (lambda: L.AdaptiveMaxPool1d((2, 2)), r"AdaptiveMaxPool1d: output_size must be .* a tuple of 1 such values, got \(2, 2\)"),
    (lambda: L.MaxUnpool2d(0), r"MaxUnpool2d: kernel_size must be an int >= 1"),
    (lambda: L.BatchNorm2d(3, momentum="cumulative"), r"BatchNorm2d: momentum must be in \[0, 1\] or None"),
    (lambda: L.InstanceNorm2d(0), r"InstanceNorm2d: num_features must be a positive int"),
    (lambda: L.InstanceNorm1d(3, eps=float("inf")), r"InstanceNorm1d: eps must be a finite number > 0"),
    (lambda: L.RMSNorm(4, eps=0), r"RMSNorm: eps must be a finite number > 0 or None, got 0"),
    (lambda: L.RMSNorm(()), r"RMSNorm: normalized_shape must be a positive int"),
    (lambda: L.Embedding(5, 3, max_norm=-1.0), r"Embedding: max_norm must be None or a finite number > 0, got -1.0"),
    (lambda: L.Embedding(5, 3, max_norm=1.0, norm_type=0), r"Embedding: norm_type must be a number > 0"),
]


@pytest.mark.parametrize("make,error,pattern", [
    (lambda: L.MaxPool2d(2, ceil_mode=1), TypeError, r"MaxPool2d: ceil_mode must be a bool, got 1"),
    (lambda: L.MaxPool1d(2, return_indices="yes"), TypeError, r"MaxPool1d: return_indices must be a bool"),
    (lambda: L.AvgPool2d(2, count_include_pad=None), TypeError, r"AvgPool2d: count_include_pad must be a bool"),
    (lambda: L.BatchNorm1d(3, track_running_stats=0), TypeError, r"BatchNorm1d: track_running_stats must be a bool"),
    (lambda: L.LayerNorm(3, bias="no"), TypeError, r"LayerNorm: bias must be a bool"),
])
def test_vision_option_flags_must_be_bools(make, error, pattern):
    with pytest.raises(error, match=pattern):
        make()


@pytest.mark.parametrize("make,pattern", CONSTRUCTION_ERRORS, ids=[p.split(":")[0] + str(i) for i, (_, p) in
                                                                     enumerate(CONSTRUCTION_ERRORS)])
def test_vision_layers_reject_invalid_arguments_at_construction(make, pattern):
    with pytest.raises(ValueError, match=pattern):
        make()


def test_conv_same_padding_with_even_kernel_pads_more_at_the_end_and_keeps_the_size():
    conv = L.Conv2d(1, 2, (4, 2), padding="same", dilation=(1, 3), rng=0)
    assert conv.pads == ((1, 2), (1, 2))
    y = conv.predict(gf.device("cpu").send(np.ones((1, 1, 5, 6)), "float32"))
    assert y.shape == (1, 2, 5, 6)


def test_batch_norm_running_statistics_follow_pytorch_rule_on_every_device(device):
    """r ← (1 − m) r + m · batch stat, with the unbiased variance, after each train forward."""
    rng = np.random.default_rng(3)
    batches = [rng.normal(loc=i, scale=1 + i, size=(4, 3, 2, 5)) for i in range(3)]
    bn = L.BatchNorm2d(3, momentum=0.2).to(device, "float64")
    mean, var = np.zeros(3), np.ones(3)
    for batch in batches:
        bn(device.send(batch, "float64"), train=True)
        mean = 0.8 * mean + 0.2 * batch.mean(axis=(0, 2, 3))
        var = 0.8 * var + 0.2 * batch.var(axis=(0, 2, 3), ddof=1)
    np.testing.assert_allclose(backend.to_numpy(bn.running_mean.value), mean, rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(bn.running_var.value), var, rtol=1e-12)
    # eval mode uses them and leaves them alone
    x = rng.normal(size=(2, 3, 2, 5))
    y = backend.to_numpy(bn(device.send(x, "float64"), train=False)[0])
    expected = (x - mean.reshape(1, 3, 1, 1)) / np.sqrt(var.reshape(1, 3, 1, 1) + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(bn.running_mean.value), mean, rtol=1e-12)


def _small_cnn():
    return gf.Sequential(
        L.Conv2d(2, 5, 3, padding=1, rng=0), L.BatchNorm2d(5), L.ReLU(), L.MaxPool2d(2),
        L.Conv2d(5, 3, (2, 1), rng=1), L.GroupNorm(3, 3),
        L.GlobalAvgPool(), L.Linear(3, 4, rng=2),
    )


def _train_a_few_steps(device, steps=3):
    rng = np.random.default_rng(5)
    model = _small_cnn().to(device, "float64")
    optimizer = SGD(model, lr=0.1, momentum=0.9)
    loss = SoftmaxCrossEntropy()
    for _ in range(steps):
        x = device.send(rng.normal(size=(6, 2, 6, 5)), "float64")
        labels = device.send(rng.integers(0, 4, size=6))
        output, backprop = model(x, train=True)
        _, delta = loss(output, labels)
        optimizer.zero_grad()
        backprop(delta)
        optimizer.step()
    return {name: backend.to_numpy(value) for name, value in model.state_dict().items()}


def test_running_statistics_and_weights_match_across_devices_after_train_steps(device):
    here = _train_a_few_steps(device)
    reference = _train_a_few_steps(gf.device("cpu"))
    assert "1.running_mean" in here and "1.running_var" in here
    for name, value in reference.items():
        np.testing.assert_allclose(here[name], value, rtol=1e-9, atol=1e-12, err_msg=name)
    assert not np.allclose(here["1.running_mean"], 0.0)  # the statistics did move


def test_max_pool_routes_delta_to_the_first_max_only_when_values_tie(device):
    pool = L.MaxPool2d(2)
    x = device.send(np.zeros((1, 1, 2, 4)), "float64")
    _, backprop = pool(x, train=True)
    dx = backend.to_numpy(backprop(device.send(np.array([[[[1.0, 2.0]]]]), "float64")))
    np.testing.assert_array_equal(dx, [[[[1, 0, 2, 0], [0, 0, 0, 0]]]])
    # overlapping windows over a constant: each window gives its δ to its own first entry
    pool1d = L.MaxPool1d(3, stride=1)
    _, backprop = pool1d(device.send(np.ones((1, 1, 5)), "float64"), train=True)
    dx = backend.to_numpy(backprop(device.send(np.array([[[1.0, 10.0, 100.0]]]), "float64")))
    np.testing.assert_array_equal(dx, [[[1, 10, 100, 0, 0]]])


@pytest.mark.parametrize("make", [lambda: L.Conv2d(3, 4, 3, stride=2, padding=1, rng=0),
                                  lambda: L.ConvTranspose2d(3, 4, 3, stride=2, rng=0)], ids=["conv", "transposed"])
def test_conv_input_grad_false_skips_the_input_delta_and_keeps_parameter_gradients(device, make):
    x = device.send(np.random.default_rng(0).normal(size=(2, 3, 5, 6)), "float64")
    full, skipped = make().to(device, "float64"), make().to(device, "float64")
    y, backprop = full(x, train=True)
    dy = device.send(np.random.default_rng(1).normal(size=tuple(y.shape)), "float64")
    assert backprop(dy) is not None
    _, backprop_skipped = skipped.forward(x, True, input_grad=False)
    assert backprop_skipped(dy) is None
    for (name, a), (_, b) in zip(full.named_parameters(), skipped.named_parameters()):
        np.testing.assert_allclose(backend.to_numpy(b.grad), backend.to_numpy(a.grad), rtol=1e-12, err_msg=name)


def test_conv_stack_gives_the_same_result_on_channels_first_views_as_on_contiguous_copies():
    """Convolutions return (N, C, *S) views of batch-last memory; each layer must read them right."""
    rng = np.random.default_rng(0)
    layers = [L.Conv2d(2, 4, 3, padding=1, rng=0), L.ReLU(), L.MaxPool2d(2, stride=1),
              L.ConvTranspose2d(4, 3, 2, stride=2, rng=1), L.AvgPool2d(2), L.Conv2d(3, 2, 2, rng=2)]
    for layer in layers:
        layer.to("cpu", "float64")
    x = rng.normal(size=(3, 2, 5, 7))
    chained, copied = x, x
    deltas = []
    for layer in layers:
        chained, backprop_chained = layer(chained, train=True)
        copied, backprop_copied = layer(np.ascontiguousarray(copied), train=True)
        np.testing.assert_allclose(chained, copied, rtol=1e-12, atol=1e-12)
        deltas.append((backprop_chained, backprop_copied))
    dy = rng.normal(size=chained.shape)
    d_chained, d_copied = dy, dy
    for backprop_chained, backprop_copied in reversed(deltas):
        d_chained, d_copied = backprop_chained(d_chained), backprop_copied(np.ascontiguousarray(d_copied))
        np.testing.assert_allclose(d_chained, d_copied, rtol=1e-10, atol=1e-12)


TORCH_CONFIGS = [
    ("Conv2d", dict(in_channels=6, out_channels=4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2),
                    dilation=(1, 2), groups=2), (2, 6, 9, 8)),
    ("Conv2d", dict(in_channels=3, out_channels=5, kernel_size=4, padding="same"), (2, 3, 7, 6)),
    ("Conv1d", dict(in_channels=6, out_channels=3, kernel_size=3, stride=2, padding=1, groups=3), (2, 6, 9)),
    ("ConvTranspose2d", dict(in_channels=6, out_channels=4, kernel_size=(3, 2), stride=(1, 3), padding=(2, 0),
                             output_padding=(1, 2), dilation=(2, 1)), (2, 6, 5, 4)),
    ("ConvTranspose1d", dict(in_channels=4, out_channels=2, kernel_size=5, stride=3, padding=2, groups=2), (2, 4, 6)),
]


@pytest.mark.filterwarnings("ignore:Using padding=.same.:UserWarning")
@pytest.mark.parametrize("name,kwargs,shape", TORCH_CONFIGS, ids=[f"{c[0]}-{i}" for i, c in enumerate(TORCH_CONFIGS)])
def test_convolutions_agree_with_pytorch(name, kwargs, shape):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    ours = getattr(L, name)(**kwargs, rng=0).to("cpu", "float64")
    theirs = getattr(torch.nn, name)(**kwargs).double()
    bias = rng.normal(size=kwargs["out_channels"])
    ours.bias.value = bias.copy()
    with torch.no_grad():
        theirs.weight.copy_(torch.from_numpy(ours.weight.value))
        theirs.bias.copy_(torch.from_numpy(bias))
    x = rng.normal(size=shape)
    y, backprop = ours(x, train=True)
    x_t = torch.from_numpy(x).requires_grad_()
    y_t = theirs(x_t)
    np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = rng.normal(size=y.shape)
    dx = backprop(dy)
    y_t.backward(torch.from_numpy(dy))
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), rtol=1e-10, atol=1e-12)
