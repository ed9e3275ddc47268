"""Cases for the PyTorch-style options of the vision and normalisation layers (issue 14), with
NumPy float64 references written from PyTorch's definitions (output sizes, divisors and windows
computed the way its kernels do, one output position at a time) rather than from gradflow's
slicing code: pooling with ceil_mode, dilation, divisor_override; adaptive pooling; unpooling;
convolutions with padding modes; 3-D convolutions; BatchNorm without running statistics or with
a cumulative average; LayerNorm without bias; RMSNorm; InstanceNorm; Embedding with max_norm.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from gradflow import layers as L
from tests.cases import LayerCase
from tests.cases.vision import _with, batch_norm_reference, conv_reference, conv_transpose_reference

RNG = np.random.default_rng(14)


def _normal(*shape):
    return RNG.normal(size=shape)


def _distinct(*shape):
    n = int(np.prod(shape))
    return (RNG.permutation(n) - n / 2).reshape(shape) * 0.05


# -- references -----------------------------------------------------------------------------


def pooled_size(n, k, s, p, d, ceil_mode):
    """PyTorch's pooling_output_shape."""
    out = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil_mode else 0)) // s + 1
    if ceil_mode and (out - 1) * s >= n + p:
        out -= 1
    return out


def max_pool_ref(x, kernel, stride, padding, dilation=None, ceil_mode=False):
    d = x.ndim - 2
    dilation = dilation or (1,) * d
    out = [pooled_size(x.shape[2 + a], kernel[a], stride[a], padding[a], dilation[a], ceil_mode) for a in range(d)]
    y = np.full((*x.shape[:2], *out), -np.inf)
    for position in itertools.product(*(range(o) for o in out)):
        for tap in itertools.product(*(range(k) for k in kernel)):
            source = tuple(o * s - p + i * r for o, s, p, i, r in zip(position, stride, padding, tap, dilation))
            if all(0 <= q < n for q, n in zip(source, x.shape[2:])):
                y[(..., *position)] = np.maximum(y[(..., *position)], x[(..., *source)])
    return y


def avg_pool_ref(x, kernel, stride, padding, ceil_mode=False, count_include_pad=True, divisor_override=None):
    """PyTorch's avg_pool kernel: hend = min(hstart + k, H + p) sets the padded count, then clamp."""
    d = x.ndim - 2
    out = [pooled_size(x.shape[2 + a], kernel[a], stride[a], padding[a], 1, ceil_mode) for a in range(d)]
    y = np.zeros((*x.shape[:2], *out))
    for position in itertools.product(*(range(o) for o in out)):
        lo = [o * s - p for o, s, p in zip(position, stride, padding)]
        hi = [min(a + k, n + p) for a, k, n, p in zip(lo, kernel, x.shape[2:], padding)]
        pool_size = math.prod(h - a for a, h in zip(lo, hi))
        lo = [max(a, 0) for a in lo]
        hi = [min(h, n) for h, n in zip(hi, x.shape[2:])]
        window = x[(..., *(slice(a, h) for a, h in zip(lo, hi)))]
        total = window.reshape(*x.shape[:2], -1).sum(-1)
        divisor = divisor_override or (pool_size if count_include_pad else math.prod(h - a for a, h in zip(lo, hi)))
        y[(..., *position)] = total / divisor
    return y


def adaptive_ref(x, out, mode):
    out = [n if o is None else o for n, o in zip(x.shape[2:], out)]
    y = np.zeros((*x.shape[:2], *out))
    for position in itertools.product(*(range(o) for o in out)):
        window = tuple(slice(math.floor(i * n / o), math.ceil((i + 1) * n / o))
                       for i, n, o in zip(position, x.shape[2:], out))
        values = x[(..., *window)].reshape(*x.shape[:2], -1)
        y[(..., *position)] = values.max(-1) if mode == "max" else values.mean(-1)
    return y


def unpool_ref(x, indices, out):
    y = np.zeros((*x.shape[:2], math.prod(out)))
    for n, c in itertools.product(range(x.shape[0]), range(x.shape[1])):
        y[n, c, indices[n, c].reshape(-1)] = x[n, c].reshape(-1)
    return y.reshape(*x.shape[:2], *out)


NP_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def conv_mode_ref(stride, padding, dilation, groups, mode):
    def reference(p, x):
        padded = np.pad(x, [(0, 0), (0, 0), *((q, q) for q in padding)], mode=NP_MODES[mode])
        zero = [(0, 0)] * len(padding)
        return conv_reference(padded, p["weight"], p.get("bias"), stride, zero, dilation, groups)
    return reference


def instance_norm_ref(p, x, eps=1e-5):
    axes = tuple(range(2, x.ndim))
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    if "weight" in p:
        shape = (1, -1) + (1,) * (x.ndim - 2)
        y = y * p["weight"].reshape(shape) + p["bias"].reshape(shape)
    return y


def rms_norm_ref(p, x, axes, eps):
    eps = np.finfo(x.dtype).eps if eps is None else eps
    y = x / np.sqrt((x * x).mean(axis=axes, keepdims=True) + eps)
    return y * p["weight"] if "weight" in p else y


def layer_norm_no_bias_ref(p, x, axes, eps=1e-5):
    y = (x - x.mean(axis=axes, keepdims=True)) / np.sqrt(x.var(axis=axes, keepdims=True) + eps)
    assert "bias" not in p
    return y * p["weight"]


def embedding_max_norm_ref(max_norm, norm_type):
    """The params are read after the forward, so they already hold the rescaled rows: check that
    every referenced row is within max_norm (the rescaling happened) and gather."""
    def reference(p, ids):
        rows = p["weight"][np.unique(ids)]
        assert np.all(np.linalg.norm(rows, ord=norm_type, axis=1) <= max_norm * (1 + 1e-12))
        return p["weight"][ids]
    return reference


def _big_rows(make, factor):
    """Scale the table so that most rows exceed max_norm before the first look-up."""
    def build():
        layer = make()
        layer.weight.value = layer.weight.value * factor
        return layer
    return build


def _unpool_inputs(shape, kernel):
    """A pooled input and, per window, one position inside it (distinct: windows do not overlap)."""
    n, c, *spatial = shape
    out = [s * k for s, k in zip(spatial, kernel)]
    rng = np.random.default_rng(5)
    idx = np.zeros(shape, dtype=np.int64)
    for position in itertools.product(*(range(s) for s in spatial)):
        for i, j in itertools.product(range(n), range(c)):
            source = [p * k + int(rng.integers(0, k)) for p, k in zip(position, kernel)]
            idx[(i, j, *position)] = np.ravel_multi_index(source, out)
    return _normal(*shape), idx, tuple(out)


X_UNPOOL2, IDX_UNPOOL2, OUT_UNPOOL2 = _unpool_inputs((2, 3, 2, 3), (2, 2))
X_UNPOOL1, IDX_UNPOOL1, OUT_UNPOOL1 = _unpool_inputs((2, 2, 4), (3,))

# -- bad inputs -----------------------------------------------------------------------------

UNPOOL_BAD = [
    ("float indices", np.ones((2, 3, 2, 3)), TypeError, r"MaxUnpool2d\(kernel_size=\(2, 2\)\): expected integer indices, got dtype float32",
     {"indices": np.ones((2, 3, 2, 3))}),
    ("indices of another shape", np.ones((2, 3, 2, 3)), ValueError, r"MaxUnpool2d.*expected indices of the input's shape \(2, 3, 2, 3\), got \(2, 3, 2, 2\)",
     {"indices": np.zeros((2, 3, 2, 2), dtype=np.int64)}),
    ("index past the output plane", np.ones((2, 3, 2, 3)), ValueError, r"MaxUnpool2d.*indices must lie in \[0, 23\].*got values in \[0, 24\]",
     {"indices": np.where(np.arange(36).reshape(2, 3, 2, 3) == 5, 24, 0)}),
    ("no indices", np.ones((2, 3, 2, 3)), TypeError, r"MaxUnpool2d.*expected indices=", {}),
    ("3-D input", np.ones((2, 3, 6)), ValueError, r"MaxUnpool2d.*expected a 4-D input \(N, C, H, W\)"),
]

# -- cases ----------------------------------------------------------------------------------

LAYER_CASES = [
    # Pooling: ceil_mode, dilation, divisor_override
    LayerCase("max_pool2d_ceil_mode", lambda: L.MaxPool2d(3, stride=2, ceil_mode=True), _distinct(2, 2, 8, 7),
              lambda p, x: max_pool_ref(x, (3, 3), (2, 2), (0, 0), ceil_mode=True)),
    LayerCase("max_pool2d_dilation_padding_ceil", lambda: L.MaxPool2d((3, 2), stride=(2, 1), padding=1, dilation=(2, 3), ceil_mode=True),
              _distinct(2, 2, 9, 8), lambda p, x: max_pool_ref(x, (3, 2), (2, 1), (1, 1), (2, 3), True)),
    LayerCase("max_pool1d_dilation", lambda: L.MaxPool1d(3, stride=1, dilation=2), _distinct(2, 3, 9),
              lambda p, x: max_pool_ref(x, (3,), (1,), (0,), (2,))),
    LayerCase("avg_pool2d_ceil_mode_padded", lambda: L.AvgPool2d(3, stride=2, padding=1, ceil_mode=True), _normal(2, 2, 8, 6),
              lambda p, x: avg_pool_ref(x, (3, 3), (2, 2), (1, 1), ceil_mode=True)),
    LayerCase("avg_pool2d_ceil_mode_exclude_padding",
              lambda: L.AvgPool2d((3, 2), stride=2, padding=1, ceil_mode=True, count_include_pad=False), _normal(2, 2, 8, 7),
              lambda p, x: avg_pool_ref(x, (3, 2), (2, 2), (1, 1), ceil_mode=True, count_include_pad=False)),
    LayerCase("avg_pool2d_divisor_override", lambda: L.AvgPool2d(2, stride=1, padding=1, divisor_override=3), _normal(2, 2, 4, 5),
              lambda p, x: avg_pool_ref(x, (2, 2), (1, 1), (1, 1), divisor_override=3)),
    LayerCase("avg_pool1d_ceil_mode", lambda: L.AvgPool1d(4, stride=3, padding=1, ceil_mode=True), _normal(2, 3, 11),
              lambda p, x: avg_pool_ref(x, (4,), (3,), (1,), ceil_mode=True)),
    # Adaptive pooling
    LayerCase("adaptive_avg_pool2d", lambda: L.AdaptiveAvgPool2d((3, 4)), _normal(2, 3, 7, 9),
              lambda p, x: adaptive_ref(x, (3, 4), "avg"),
              bad_inputs=[("3-D input", np.ones((2, 3, 7)), ValueError, r"AdaptiveAvgPool2d\(output_size=\(3, 4\)\): expected a 4-D input \(N, C, H, W\)"),
                          ("empty spatial axis", np.ones((2, 3, 0, 4)), ValueError, r"AdaptiveAvgPool2d.*non-empty spatial size")]),
    LayerCase("adaptive_avg_pool2d_upsampling_keep_width", lambda: L.AdaptiveAvgPool2d((5, None)), _normal(2, 2, 3, 4),
              lambda p, x: adaptive_ref(x, (5, None), "avg")),
    LayerCase("adaptive_avg_pool1d", lambda: L.AdaptiveAvgPool1d(4), _normal(2, 3, 11), lambda p, x: adaptive_ref(x, (4,), "avg"),
              bad_inputs=[("4-D input", np.ones((2, 3, 4, 4)), ValueError, r"AdaptiveAvgPool1d\(output_size=4\): expected a 3-D input \(N, C, L\)")]),
    LayerCase("adaptive_max_pool2d", lambda: L.AdaptiveMaxPool2d((3, 4)), _distinct(2, 3, 7, 9),
              lambda p, x: adaptive_ref(x, (3, 4), "max"),
              bad_inputs=[("3-D input", np.ones((2, 3, 7)), ValueError, r"AdaptiveMaxPool2d\(output_size=\(3, 4\)\): expected a 4-D input")]),
    LayerCase("adaptive_max_pool2d_overlapping_windows", lambda: L.AdaptiveMaxPool2d((4, 2)), _distinct(2, 2, 3, 5),
              lambda p, x: adaptive_ref(x, (4, 2), "max")),
    LayerCase("adaptive_max_pool1d", lambda: L.AdaptiveMaxPool1d(4), _distinct(2, 3, 11), lambda p, x: adaptive_ref(x, (4,), "max"),
              bad_inputs=[("2-D input", np.ones((3, 11)), ValueError, r"AdaptiveMaxPool1d\(output_size=4\): expected a 3-D input")]),
    # Unpooling
    LayerCase("max_unpool2d", lambda: L.MaxUnpool2d(2), X_UNPOOL2, lambda p, x, indices: unpool_ref(x, indices, OUT_UNPOOL2),
              call_kwargs={"indices": IDX_UNPOOL2}, bad_inputs=UNPOOL_BAD),
    LayerCase("max_unpool1d_output_size", lambda: L.MaxUnpool1d(3), X_UNPOOL1,
              lambda p, x, indices, output_size: unpool_ref(x, indices, OUT_UNPOOL1),
              call_kwargs={"indices": IDX_UNPOOL1, "output_size": OUT_UNPOOL1},
              bad_inputs=[("output_size out of range", np.ones((2, 2, 4)), ValueError,
                           r"MaxUnpool1d\(kernel_size=\(3,\)\): output_size \(20,\) must lie strictly between \(9,\) and \(15,\)",
                           {"indices": IDX_UNPOOL1, "output_size": (20,)})]),
    # Convolutions: padding modes, 3-D
    LayerCase("conv2d_reflect", _with(lambda: L.Conv2d(4, 6, (3, 2), stride=(2, 1), padding=(2, 1), dilation=(1, 2), groups=2,
                                                        padding_mode="reflect", rng=20), bias=_normal(6)),
              _normal(2, 4, 6, 7), conv_mode_ref((2, 1), (2, 1), (1, 2), 2, "reflect")),
    LayerCase("conv2d_replicate", lambda: L.Conv2d(2, 3, 3, padding=2, padding_mode="replicate", rng=21), _normal(2, 2, 4, 5),
              conv_mode_ref((1, 1), (2, 2), (1, 1), 1, "replicate")),
    LayerCase("conv2d_circular", lambda: L.Conv2d(2, 3, (2, 3), stride=2, padding=(1, 3), padding_mode="circular", rng=22),
              _normal(2, 2, 5, 3), conv_mode_ref((2, 2), (1, 3), (1, 1), 1, "circular"),
              bad_inputs=[("padding wider than the input", np.ones((2, 2, 5, 2)), ValueError,
                           r"Conv2d\(2, 3.*padding_mode='circular' needs each padding at most the input size")]),
    LayerCase("conv1d_reflect", lambda: L.Conv1d(3, 2, 3, padding=3, padding_mode="reflect", rng=23), _normal(2, 3, 5),
              conv_mode_ref((1,), (3,), (1,), 1, "reflect")),
    LayerCase("conv3d", _with(lambda: L.Conv3d(4, 6, (2, 3, 2), stride=(1, 2, 1), padding=(1, 0, 1), dilation=(1, 1, 2), groups=2,
                                               rng=24), bias=_normal(6)),
              _normal(2, 4, 3, 5, 4), lambda p, x: conv_reference(x, p["weight"], p["bias"], (1, 2, 1), [(1, 1), (0, 0), (1, 1)], (1, 1, 2), 2),
              bad_inputs=[("4-D input", np.ones((2, 4, 3, 5)), ValueError, r"Conv3d\(4, 6.*expected a 5-D input \(N, C, D, H, W\), got shape \(2, 4, 3, 5\)")]),
    LayerCase("conv3d_replicate", lambda: L.Conv3d(2, 2, 2, padding=1, padding_mode="replicate", rng=25), _normal(1, 2, 3, 2, 3),
              lambda p, x: conv_reference(np.pad(x, [(0, 0), (0, 0), (1, 1), (1, 1), (1, 1)], mode="edge"), p["weight"], p["bias"],
                                          (1, 1, 1), [(0, 0)] * 3, (1, 1, 1), 1)),
    LayerCase("conv_transpose3d", _with(lambda: L.ConvTranspose3d(4, 2, (2, 3, 2), stride=(2, 1, 2), padding=(0, 1, 1), output_padding=(1, 0, 1),
                                                                  groups=2, dilation=(1, 2, 1), rng=26), bias=_normal(2)),
              _normal(2, 4, 2, 2, 3),
              lambda p, x: conv_transpose_reference(x, p["weight"], p["bias"], (2, 1, 2), (0, 1, 1), (1, 0, 1), (1, 2, 1), 2),
              bad_inputs=[("wrong channel count", np.ones((2, 3, 2, 2, 3)), ValueError, r"ConvTranspose3d\(4, 2.*expected 4 input channels \(axis 1\), got 3")]),
    # Normalisation
    LayerCase("batch_norm2d_cumulative_average", _with(lambda: L.BatchNorm2d(3, momentum=None), weight=_normal(3), bias=_normal(3)),
              _normal(4, 3, 2, 3) * 2 + 1, lambda p, x: batch_norm_reference(p, x, True), train=True),
    LayerCase("batch_norm1d_no_running_stats_eval", lambda: L.BatchNorm1d(4, track_running_stats=False), _normal(5, 4, 3),
              lambda p, x: batch_norm_reference(p, x, True), train=True),
    LayerCase("instance_norm2d_affine", _with(lambda: L.InstanceNorm2d(3, affine=True), weight=_normal(3), bias=_normal(3)),
              _normal(2, 3, 4, 3), lambda p, x: instance_norm_ref(p, x),
              bad_inputs=[("3-D input", np.ones((2, 3, 4)), ValueError, r"InstanceNorm2d\(3, affine=True\): expected a 4-D input \(N, C, H, W\) with C = 3")]),
    LayerCase("instance_norm1d", lambda: L.InstanceNorm1d(4, eps=1e-3), _normal(2, 4, 6), lambda p, x: instance_norm_ref(p, x, 1e-3),
              bad_inputs=[("wrong channel count", np.ones((2, 3, 6)), ValueError, r"InstanceNorm1d\(4, eps=0.001\): expected a 3-D input \(N, C, L\) with C = 4")]),
    LayerCase("layer_norm_no_bias", _with(lambda: L.LayerNorm((2, 5), bias=False), weight=_normal(2, 5)), _normal(3, 2, 5) * 2 + 1,
              lambda p, x: layer_norm_no_bias_ref(p, x, (-2, -1))),
    LayerCase("rms_norm", _with(lambda: L.RMSNorm(5), weight=_normal(5)), _normal(3, 2, 5) * 2 + 1,
              lambda p, x: rms_norm_ref(p, x, (-1,), None),
              bad_inputs=[("wrong trailing size", np.ones((3, 4)), ValueError, r"RMSNorm\(5, elementwise_affine=True\): expected input whose trailing axes are \(5,\)")]),
    LayerCase("rms_norm_two_axes_no_affine", lambda: L.RMSNorm((2, 5), eps=1e-3, elementwise_affine=False), _normal(3, 2, 5),
              lambda p, x: rms_norm_ref(p, x, (-2, -1), 1e-3)),
    # Embedding: every referenced row sits at max_norm after the forward, on the kink of the
    # rescaling, where finite differences are undefined: the gradient (the scatter-add of dy, as
    # PyTorch) is checked against torch in tests/layers/test_vision_options.py instead.
    LayerCase("embedding_max_norm", _big_rows(lambda: L.Embedding(7, 3, max_norm=1.5, rng=0), 2.0),
              np.array([[1, 4, 1, 0], [6, 4, 4, 2]]), embedding_max_norm_ref(1.5, 2.0), check_input_gradient=False,
              check_gradients=False),
    LayerCase("embedding_max_norm_inf_int8_ids", _big_rows(lambda: L.Embedding(5, 4, padding_idx=0, max_norm=0.8, norm_type=math.inf, rng=1), 2.0),
              np.array([4, 1, 1, 3], dtype=np.int8), embedding_max_norm_ref(0.8, np.inf), check_input_gradient=False,
              check_gradients=False),
]
