"""Cases for convolutions, pooling, batch and group norm, with NumPy float64 references.

The references are written from the definitions, one output position (or one input position,
for transposed convolutions) at a time: slow, obviously right, and independent of the im2col
code they check. Sizes are tiny and odd on purpose: non-square images, stride > 1, padding
larger on one side ("same" with an even kernel), dilation, groups, channel counts that are not
multiples of 4. Max-pool inputs hold distinct values so finite differences never straddle a tie.
"""

from __future__ import annotations

import itertools

import numpy as np

import gradflow as gf
from gradflow import layers as L
from tests.cases import LayerCase

RNG = np.random.default_rng(7)


def _normal(*shape):
    return RNG.normal(size=shape)


def _distinct(*shape):
    """Distinct values (spaced 0.05 apart, shuffled) so that every window has a unique max."""
    n = int(np.prod(shape))
    return (RNG.permutation(n) - n / 2).reshape(shape) * 0.05


def _with(make, **arrays):
    """A factory giving ``make()`` fixed non-trivial parameters/buffers (drawn once, here)."""
    cpu = gf.device("cpu")

    def build():
        layer = make()
        for name, value in arrays.items():
            getattr(layer, name).value = cpu.send(value, "float32")
        return layer

    return build


# -- references -----------------------------------------------------------------------------


def conv_reference(x, w, b, stride, pads, dilation, groups):
    """y[n, o, p] = b[o] + Σ_{c in o's group, i} w[o, c, i] · x_padded[n, c, p·s + i·δ]."""
    d = x.ndim - 2
    padded = np.pad(x, [(0, 0), (0, 0), *pads])
    out_channels, group_in = w.shape[0], w.shape[1]
    group_out = out_channels // groups
    kernel = w.shape[2:]
    out = [(padded.shape[2 + a] - dilation[a] * (kernel[a] - 1) - 1) // stride[a] + 1 for a in range(d)]
    y = np.zeros((x.shape[0], out_channels, *out))
    for position in itertools.product(*(range(o) for o in out)):
        window = tuple(slice(p * s, p * s + r * (k - 1) + 1, r)
                       for p, s, r, k in zip(position, stride, dilation, kernel))
        for g in range(groups):
            patch = padded[(slice(None), slice(g * group_in, (g + 1) * group_in), *window)]  # (N, C/g, *k)
            weights = w[g * group_out:(g + 1) * group_out]  # (O/g, C/g, *k)
            y[(slice(None), slice(g * group_out, (g + 1) * group_out), *position)] = np.tensordot(
                patch, weights, axes=(list(range(1, d + 2)), list(range(1, d + 2))))
    if b is not None:
        y += b.reshape(1, -1, *(1,) * d)
    return y


def conv_transpose_reference(x, w, b, stride, padding, output_padding, dilation, groups):
    """Every input pixel q scatters x[n, c, q] · w[c, o, i] to position q·s + i·δ; then crop p."""
    d = x.ndim - 2
    spatial, kernel = x.shape[2:], w.shape[2:]
    group_in, group_out = x.shape[1] // groups, w.shape[1]
    out = [(spatial[a] - 1) * stride[a] - 2 * padding[a] + dilation[a] * (kernel[a] - 1) + output_padding[a] + 1
           for a in range(d)]
    room = [(spatial[a] - 1) * stride[a] + dilation[a] * (kernel[a] - 1) + 1 + output_padding[a] for a in range(d)]
    full = np.zeros((x.shape[0], group_out * groups, *room))
    for q in itertools.product(*(range(n) for n in spatial)):
        for tap in itertools.product(*(range(k) for k in kernel)):
            target = tuple(qa * s + i * r for qa, i, s, r in zip(q, tap, stride, dilation))
            for g in range(groups):
                contribution = x[(slice(None), slice(g * group_in, (g + 1) * group_in), *q)] @ \
                    w[(slice(g * group_in, (g + 1) * group_in), slice(None), *tap)]
                full[(slice(None), slice(g * group_out, (g + 1) * group_out), *target)] += contribution
    y = full[(slice(None), slice(None), *(slice(p, p + o) for p, o in zip(padding, out)))]
    if b is not None:
        y = y + b.reshape(1, -1, *(1,) * d)
    return y


def pool_reference(x, kernel, stride, padding, mode, count_include_pad=True):
    d = x.ndim - 2
    fill = -np.inf if mode == "max" else 0.0
    padded = np.pad(x, [(0, 0), (0, 0), *((p, p) for p in padding)], constant_values=fill)
    real = np.pad(np.ones(x.shape[2:]), [(p, p) for p in padding])
    out = [(padded.shape[2 + a] - kernel[a]) // stride[a] + 1 for a in range(d)]
    y = np.zeros((*x.shape[:2], *out))
    for position in itertools.product(*(range(o) for o in out)):
        window = tuple(slice(p * s, p * s + k) for p, s, k in zip(position, stride, kernel))
        values = padded[(slice(None), slice(None), *window)].reshape(*x.shape[:2], -1)
        if mode == "max":
            y[(..., *position)] = values.max(axis=-1)
        else:
            count = np.prod(kernel) if count_include_pad else real[window].sum()
            y[(..., *position)] = values.sum(axis=-1) / count
    return y


def batch_norm_reference(p, x, train, eps=1e-5):
    axes = (0, *range(2, x.ndim))
    shape = (1, -1) + (1,) * (x.ndim - 2)
    if train:
        mean, var = x.mean(axis=axes), x.var(axis=axes)
    else:
        mean, var = p["running_mean"], p["running_var"]
    y = (x - mean.reshape(shape)) / np.sqrt(var.reshape(shape) + eps)
    if "weight" in p:
        y = y * p["weight"].reshape(shape) + p["bias"].reshape(shape)
    return y


def group_norm_reference(p, x, groups, eps=1e-5):
    n, c = x.shape[:2]
    flat = x.reshape(n, groups, -1)
    y = ((flat - flat.mean(-1, keepdims=True)) / np.sqrt(flat.var(-1, keepdims=True) + eps)).reshape(x.shape)
    if "weight" in p:
        shape = (1, c) + (1,) * (x.ndim - 2)
        y = y * p["weight"].reshape(shape) + p["bias"].reshape(shape)
    return y


def _conv(stride, pads, dilation, groups):
    return lambda p, x: conv_reference(x, p["weight"], p.get("bias"), stride, pads, dilation, groups)


def _conv_t(stride, padding, output_padding, dilation, groups):
    return lambda p, x: conv_transpose_reference(x, p["weight"], p.get("bias"), stride, padding, output_padding,
                                                 dilation, groups)


def _pool(kernel, stride, padding, mode, count_include_pad=True):
    return lambda p, x: pool_reference(x, kernel, stride, padding, mode, count_include_pad)


# -- bad inputs -----------------------------------------------------------------------------

CONV2D_BAD = [
    ("3-D input", np.ones((3, 6, 7)), ValueError, r"Conv2d\(3, 5, kernel_size=\(3, 3\).*expected a 4-D input \(N, C, H, W\), got shape \(3, 6, 7\)"),
    ("wrong channel count", np.ones((2, 4, 6, 7)), ValueError, r"Conv2d\(3, 5.*expected 3 input channels \(axis 1\), got 4"),
    ("image smaller than kernel", np.ones((2, 3, 2, 7)), ValueError, r"Conv2d\(3, 5.*spatial size \(2, 7\) \(padded to \(2, 7\)\) is smaller than the kernel \(3, 3\)"),
    ("integer input", np.ones((2, 3, 6, 7), dtype=np.int64), TypeError, r"Conv2d\(3, 5.*floating-point.*int64"),
]
CONV1D_BAD = [
    ("2-D input", np.ones((4, 11)), ValueError, r"Conv1d\(.*expected a 3-D input \(N, C, L\), got shape \(4, 11\)"),
    ("sequence shorter than the dilated kernel", np.ones((2, 4, 4)), ValueError,
     r"Conv1d\(4, 6.*spatial size \(4,\).*smaller than the dilated kernel \(5,\)"),
]
CONV_T_BAD = [
    ("wrong channel count", np.ones((2, 2, 3, 4)), ValueError, r"ConvTranspose2d\(3, 2.*expected 3 input channels \(axis 1\), got 2"),
    ("3-D input", np.ones((3, 3, 4)), ValueError, r"ConvTranspose2d\(3, 2.*expected a 4-D input \(N, C, H, W\)"),
]
POOL_BAD = [
    ("3-D input", np.ones((3, 5, 7)), ValueError, r"MaxPool2d\(kernel_size=\(2, 2\)\): expected a 4-D input \(N, C, H, W\), got shape \(3, 5, 7\)"),
    ("image smaller than kernel", np.ones((1, 1, 1, 7)), ValueError, r"MaxPool2d\(kernel_size=\(2, 2\)\).*spatial size \(1, 7\).*smaller than the kernel \(2, 2\)"),
]
AVGPOOL_BAD = [
    ("2-D input", np.ones((3, 10)), ValueError, r"AvgPool1d\(kernel_size=\(4,\).*expected a 3-D input \(N, C, L\)"),
]
BN2D_BAD = [
    ("3-D input", np.ones((4, 3, 5)), ValueError, r"BatchNorm2d\(3\): expected a 4-D \(N, C, H, W\) input, got shape \(4, 3, 5\)"),
    ("wrong channel count", np.ones((4, 2, 3, 5)), ValueError, r"BatchNorm2d\(3\): expected 3 channels \(axis 1\), got 2"),
    ("one value per channel in training", np.ones((1, 3, 1, 1)), ValueError, r"BatchNorm2d\(3\): training needs more than one value per channel"),
]
BN1D_BAD = [
    ("4-D input", np.ones((6, 5, 2, 2)), ValueError, r"BatchNorm1d\(5, momentum=0.3\): expected a 2-D \(N, C\) or 3-D \(N, C, L\) input"),
    ("batch of one in training", np.ones((1, 5)), ValueError, r"BatchNorm1d\(5, momentum=0.3\): training needs more than one value per channel"),
]
GAP_BAD = [
    ("2-D input", np.ones((3, 5)), ValueError, r"GlobalAvgPool\(\): expected an input \(N, C, \*spatial\) with at least one spatial axis, got shape \(3, 5\)"),
]
GN_BAD = [
    ("wrong channel count", np.ones((3, 4, 4, 3)), ValueError, r"GroupNorm\(2, 6\): expected an input \(N, 6, \*spatial\), got shape \(3, 4, 4, 3\)"),
]


# -- cases ----------------------------------------------------------------------------------

LAYER_CASES = [
    # Conv2d
    LayerCase("conv2d", _with(lambda: L.Conv2d(3, 5, 3, rng=0), bias=_normal(5)), _normal(2, 3, 6, 7),
              _conv((1, 1), [(0, 0), (0, 0)], (1, 1), 1), bad_inputs=CONV2D_BAD),
    LayerCase("conv2d_stride_padding_nonsquare", lambda: L.Conv2d(3, 4, (3, 2), stride=(2, 1), padding=(1, 2), rng=1),
              _normal(2, 3, 7, 5), _conv((2, 1), [(1, 1), (2, 2)], (1, 1), 1)),
    LayerCase("conv2d_same_even_kernel", _with(lambda: L.Conv2d(2, 3, (4, 2), padding="same", rng=2), bias=_normal(3)),
              _normal(2, 2, 5, 6), _conv((1, 1), [(1, 2), (0, 1)], (1, 1), 1)),
    LayerCase("conv2d_dilation_stride", lambda: L.Conv2d(2, 3, 3, stride=(1, 2), padding=(2, 1), dilation=(2, 1), rng=3),
              _normal(2, 2, 7, 6), _conv((1, 2), [(2, 2), (1, 1)], (2, 1), 1)),
    LayerCase("conv2d_same_dilated", lambda: L.Conv2d(3, 2, (2, 3), padding="same", dilation=(3, 2), rng=4),
              _normal(1, 3, 6, 7), _conv((1, 1), [(1, 2), (2, 2)], (3, 2), 1)),
    LayerCase("conv2d_groups", _with(lambda: L.Conv2d(6, 9, 3, stride=2, padding=1, groups=3, rng=5), bias=_normal(9)),
              _normal(2, 6, 5, 4), _conv((2, 2), [(1, 1), (1, 1)], (1, 1), 3)),
    LayerCase("conv2d_depthwise_no_bias", lambda: L.Conv2d(3, 3, (2, 3), groups=3, bias=False, rng=6),
              _normal(2, 3, 4, 5), _conv((1, 1), [(0, 0), (0, 0)], (1, 1), 3)),
    LayerCase("conv2d_valid_stride_3", lambda: L.Conv2d(2, 5, 2, stride=3, padding="valid", rng=7),
              _normal(2, 2, 8, 7), _conv((3, 3), [(0, 0), (0, 0)], (1, 1), 1)),
    # Conv1d
    LayerCase("conv1d_stride_padding", _with(lambda: L.Conv1d(3, 5, 3, stride=2, padding=1, rng=8), bias=_normal(5)),
              _normal(2, 3, 11), _conv((2,), [(1, 1)], (1,), 1)),
    LayerCase("conv1d_same_even_kernel", lambda: L.Conv1d(2, 3, 4, padding="same", rng=9),
              _normal(3, 2, 9), _conv((1,), [(1, 2)], (1,), 1)),
    LayerCase("conv1d_dilation_groups", lambda: L.Conv1d(4, 6, 3, dilation=2, groups=2, rng=10),
              _normal(2, 4, 10), _conv((1,), [(0, 0)], (2,), 2), bad_inputs=CONV1D_BAD),
    # ConvTranspose
    LayerCase("conv_transpose2d_stride_output_padding",
              _with(lambda: L.ConvTranspose2d(3, 2, 3, stride=2, padding=1, output_padding=1, rng=11), bias=_normal(2)),
              _normal(2, 3, 3, 4), _conv_t((2, 2), (1, 1), (1, 1), (1, 1), 1), bad_inputs=CONV_T_BAD),
    LayerCase("conv_transpose2d_groups_dilation",
              lambda: L.ConvTranspose2d(4, 6, (2, 3), stride=(1, 2), padding=(0, 1), groups=2, dilation=(2, 1), rng=12),
              _normal(2, 4, 3, 3), _conv_t((1, 2), (0, 1), (0, 0), (2, 1), 2)),
    LayerCase("conv_transpose2d_output_padding_beyond_padding",
              lambda: L.ConvTranspose2d(2, 3, (3, 2), stride=3, output_padding=(2, 1), bias=False, rng=13),
              _normal(1, 2, 3, 2), _conv_t((3, 3), (0, 0), (2, 1), (1, 1), 1)),
    LayerCase("conv_transpose1d", lambda: L.ConvTranspose1d(3, 2, 4, stride=2, padding=1, rng=14),
              _normal(2, 3, 5), _conv_t((2,), (1,), (0,), (1,), 1)),
    # Pooling
    LayerCase("max_pool2d", lambda: L.MaxPool2d(2), _distinct(2, 3, 5, 7), _pool((2, 2), (2, 2), (0, 0), "max"),
              bad_inputs=POOL_BAD),
    LayerCase("max_pool2d_overlapping_padded", lambda: L.MaxPool2d(3, stride=2, padding=1), _distinct(2, 3, 7, 6),
              _pool((3, 3), (2, 2), (1, 1), "max")),
    LayerCase("max_pool2d_rectangular", lambda: L.MaxPool2d((2, 3), stride=(1, 2)), _distinct(2, 2, 5, 7),
              _pool((2, 3), (1, 2), (0, 0), "max")),
    LayerCase("max_pool2d_exact_tiling", lambda: L.MaxPool2d(2), _distinct(2, 3, 4, 6), _pool((2, 2), (2, 2), (0, 0), "max")),
    LayerCase("max_pool1d", lambda: L.MaxPool1d(3, stride=2, padding=1), _distinct(2, 3, 9), _pool((3,), (2,), (1,), "max")),
    LayerCase("avg_pool2d", lambda: L.AvgPool2d(2), _normal(2, 3, 5, 7), _pool((2, 2), (2, 2), (0, 0), "avg")),
    LayerCase("avg_pool2d_overlapping_padded", lambda: L.AvgPool2d(3, stride=2, padding=1), _normal(2, 3, 7, 6),
              _pool((3, 3), (2, 2), (1, 1), "avg")),
    LayerCase("avg_pool2d_exclude_padding",
              lambda: L.AvgPool2d((3, 2), stride=(2, 1), padding=(1, 1), count_include_pad=False), _normal(2, 2, 5, 4),
              _pool((3, 2), (2, 1), (1, 1), "avg", count_include_pad=False)),
    LayerCase("avg_pool1d", lambda: L.AvgPool1d(4, stride=3, padding=2), _normal(2, 3, 10), _pool((4,), (3,), (2,), "avg"),
              bad_inputs=AVGPOOL_BAD),
    LayerCase("global_avg_pool_2d", L.GlobalAvgPool, _normal(2, 3, 5, 4), lambda p, x: x.mean(axis=(2, 3)), bad_inputs=GAP_BAD),
    LayerCase("global_avg_pool_1d", L.GlobalAvgPool, _normal(3, 5, 7), lambda p, x: x.mean(axis=2)),
    # Batch norm: train mode is checked through the batch statistics, eval mode with set running statistics.
    LayerCase("batch_norm2d_train",
              _with(lambda: L.BatchNorm2d(3), weight=_normal(3), bias=_normal(3)),
              _normal(4, 3, 3, 5) * 2 + 1, lambda p, x: batch_norm_reference(p, x, True), train=True, bad_inputs=BN2D_BAD),
    LayerCase("batch_norm2d_eval",
              _with(lambda: L.BatchNorm2d(3), weight=_normal(3), bias=_normal(3), running_mean=_normal(3),
                  running_var=np.abs(_normal(3)) + 0.5),
              _normal(2, 3, 3, 5), lambda p, x: batch_norm_reference(p, x, False)),
    LayerCase("batch_norm1d_train_features",
              _with(lambda: L.BatchNorm1d(5, momentum=0.3), weight=_normal(5), bias=_normal(5)),
              _normal(6, 5), lambda p, x: batch_norm_reference(p, x, True), train=True, bad_inputs=BN1D_BAD),
    LayerCase("batch_norm1d_train_sequences_no_affine", lambda: L.BatchNorm1d(3, affine=False, eps=1e-3),
              _normal(4, 3, 7), lambda p, x: batch_norm_reference(p, x, True, eps=1e-3), train=True),
    LayerCase("batch_norm1d_eval_sequences",
              _with(lambda: L.BatchNorm1d(3), weight=_normal(3), bias=_normal(3), running_mean=_normal(3),
                            running_var=np.abs(_normal(3)) + 0.5),
              _normal(2, 3, 7), lambda p, x: batch_norm_reference(p, x, False)),
    # Group norm
    LayerCase("group_norm2d", _with(lambda: L.GroupNorm(2, 6), weight=_normal(6), bias=_normal(6)),
              _normal(3, 6, 4, 3), lambda p, x: group_norm_reference(p, x, 2), bad_inputs=GN_BAD),
    LayerCase("group_norm1d_instance", _with(lambda: L.GroupNorm(3, 3), weight=_normal(3), bias=_normal(3)),
              _normal(2, 3, 7), lambda p, x: group_norm_reference(p, x, 3), train=True),
    LayerCase("group_norm_one_group_no_affine", lambda: L.GroupNorm(1, 5, affine=False, eps=1e-3),
              _normal(2, 5, 6), lambda p, x: group_norm_reference(p, x, 1, eps=1e-3)),
]
