"""Convolutions, channels first as in PyTorch: Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d.

How they compute (the same code for 1-D and 2-D):

- Internally the arrays are laid out batch-last, (C, *S, N): then a window's row of taps and
  every sample of the batch sit next to each other in memory, so im2col copies and col2im adds
  run over long contiguous stretches instead of a few pixels at a time.
- im2col: :func:`gradflow.backend.sliding_windows` views every window of the padded input;
  one copy lays the windows out as columns ``cols`` of shape (groups, C/g · K, P · N), where
  K = k_1···k_d taps and P = O_1···O_d output positions. The convolution is then ONE matrix
  product per group (a single batched ``matmul`` when groups > 1).
- col2im: the δ of the columns goes back to the input as a loop over the K kernel offsets,
  each adding one strided slice; never a loop over samples, channels or pixels.
- Outputs are returned as (N, C, *O) views of the batch-last result (no copy). A following
  layer that works elementwise keeps that memory order, and the next convolution then finds
  its input already batch-last, so a stack of conv/ReLU/pool layers never transposes.

A transposed convolution is the δ-backward of a convolution run forward (col2im), and its own
δ-backward is a convolution (im2col); the two share the helpers below.
"""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from .. import init as _init
from ..backend import Array
from ..core import Backprop, Layer, Parameter, check_delta, check_input
from .spatial import (
    Pads, check_fits, check_mode_fits, check_padding_mode, check_spatial_input, int_tuple, interior, offsets, pad,
    pad_mode, same_padding, symmetric, unpad_mode, window_slices,
)

NO_PAD = ((0, 0),)  # for the batch axis, last in the batch-last layout


def batch_last(x: Array) -> Array:
    """(N, C, *S) -> (C, *S, N), contiguous; free when x's memory is already in that order."""
    xp = backend.namespace(x)
    moved = xp.permute_dims(x, (*range(1, x.ndim), 0))
    return xp.reshape(xp.reshape(moved, (-1,)), tuple(moved.shape))


def batch_first(t: Array) -> Array:
    """(C, *S, N) -> an (N, C, *S) view."""
    return backend.namespace(t).permute_dims(t, (t.ndim - 1, *range(t.ndim - 1)))


def im2col(padded: Array, kernel: tuple[int, ...], stride: tuple[int, ...], dilation: tuple[int, ...],
           groups: int) -> Array:
    """Batch-last (C, *S, N) -> columns (groups, C/g · K, P · N): row (c, i_1..i_d), column (o_1..o_d, n)."""
    xp = backend.namespace(padded)
    windows = backend.sliding_windows(padded, kernel, stride, dilation, axis=1)  # (C, *k, *out, N)
    c = padded.shape[0]
    return xp.reshape(windows, (groups, c // groups * math.prod(kernel), -1))


def col2im(cols: Array, padded_shape: tuple[int, ...], kernel: tuple[int, ...], stride: tuple[int, ...],
           dilation: tuple[int, ...], out: tuple[int, ...]) -> Array:
    """Columns (…, C/g · K, P · N) -> batch-last (C, *S, N): adds each tap back where im2col read it."""
    xp = backend.namespace(cols)
    taps = xp.reshape(cols, (padded_shape[0], *kernel, *out, padded_shape[-1]))
    total = xp.zeros(padded_shape, dtype=cols.dtype, device=cols.device)
    for offset in offsets(kernel):
        index = (slice(None), *window_slices(offset, stride, dilation, out)[1:], slice(None))
        total[index] += taps[(slice(None), *offset, ...)]
    return total


def _grouped_matmul(a: Array, b: Array) -> Array:
    """``a @ b`` for stacks (g, m, k) @ (g, k, n); a plain 2-D product when g == 1."""
    if a.shape[0] == 1:
        xp = backend.namespace(a)
        return xp.reshape(a[0, ...] @ b[0, ...], (1, a.shape[1], b.shape[2]))
    return a @ b


def _row_products(a: Array, cols: Array) -> Array:
    """``a @ colsᵀ`` for stacks (g, m, L), (g, n, L) -> (g, m, n), computed as ``(cols @ aᵀ)ᵀ``:
    with the (large) columns matrix untransposed on the left, OpenBLAS runs this 15-20% faster."""
    return _swap_last(_grouped_matmul(cols, _swap_last(a)))


def _swap_last(a: Array) -> Array:
    return backend.namespace(a).permute_dims(a, (0, 2, 1))


class _ConvBase(Layer):
    """Argument checks, parameters and display shared by convolutions and transposed ones."""

    dims = 2
    transposed = False
    #: ``forward(x, train, input_grad=False)`` (x is data, its δ unused) skips the input δ:
    #: col2im and one GEMM for a convolution, one GEMM for a transposed one.
    skips_input_grad = True

    def __init__(self, in_channels: int, out_channels: int, kernel_size: Any, stride: Any, dilation: Any,
                 groups: int, bias: bool, init: Any, rng: Any, device: Any, dtype: str):
        name = type(self).__name__
        d = self.dims
        for label, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}: {label} must be a positive int, got {value!r}")
        if in_channels % groups or out_channels % groups:
            raise ValueError(
                f"{name}: groups={groups} must divide both in_channels={in_channels} and out_channels={out_channels}"
            )
        self.in_channels, self.out_channels, self.groups = in_channels, out_channels, groups
        self.kernel_size = int_tuple(name, "kernel_size", kernel_size, d)
        self.stride = int_tuple(name, "stride", stride, d)
        self.dilation = int_tuple(name, "dilation", dilation, d)
        taps = math.prod(self.kernel_size)
        if self.transposed:
            shape = (in_channels, out_channels // groups, *self.kernel_size)
            fan_in, fan_out = in_channels // groups * taps, out_channels * taps
        else:
            shape = (out_channels, in_channels // groups, *self.kernel_size)
            fan_in, fan_out = in_channels // groups * taps, out_channels // groups * taps
        dev = backend.device(device)
        weight = _init.get(init)(shape, fan_in, fan_out, _init.generator(rng))
        self.weight = Parameter(dev.send(weight, dtype))
        self.bias = Parameter(dev.send(_init.zeros((out_channels,)), dtype)) if bias else None

    def _check(self, x: Any) -> None:
        check_input(self, x, like=self.weight.value)
        check_spatial_input(self, x, self.dims, self.in_channels)

    def _describe_args(self) -> list[str]:
        parts = [f"{self.in_channels}", f"{self.out_channels}", f"kernel_size={self.kernel_size}"]
        if any(s != 1 for s in self.stride):
            parts.append(f"stride={self.stride}")
        return parts

    def _describe_tail(self) -> list[str]:
        parts = []
        if any(r != 1 for r in self.dilation):
            parts.append(f"dilation={self.dilation}")
        if self.groups != 1:
            parts.append(f"groups={self.groups}")
        if self.bias is None:
            parts.append("bias=False")
        return parts


class _ConvNd(_ConvBase):
    """Convolution over the last ``dims`` axes (cross-correlation, as in every DL library).

    Shapes: x (N, C_in, *S) -> y (N, C_out, *O) with
    ``O_a = ⌊(S_a + pad_a − δ_a (k_a − 1) − 1) / s_a⌋ + 1``; weight (C_out, C_in/g, *k); bias (C_out,).

    Forward: ``y[n, o, p] = b[o] + Σ_{c ∈ group(o), i} W[o, c, i] · x̃[n, c, p·s + i·δ]`` with x̃ the
    zero-padded input. As matrices, per group: ``Y = W₂ · cols`` (W₂: C_out/g × C_in/g·K).
    δ rule: ``dcols = W₂ᵀ · dY``, then col2im adds each tap's slice back (and the padding is cut).
    Gradients: ``dW₂ = dY · colsᵀ``; ``db[o] = Σ_{n, p} dy[n, o, p]``.

    padding: an int or one int per axis (both sides), ``"valid"`` (none) or ``"same"`` (output
    size = input size; stride 1 only; an odd total puts the extra row/column at the end, as
    PyTorch does).

    padding_mode: what the padding holds, as PyTorch's argument: ``"zeros"`` (default),
    ``"reflect"`` (mirrored without repeating the edge: ``x̃[−j] = x[j]``; each pad < the axis
    size), ``"replicate"`` (the edge value repeated: ``x̃[−j] = x[0]``) or ``"circular"``
    (wrapped: ``x̃[−j] = x[L − j]``; each pad <= the axis size). δ rule for the padding: the δ of
    every padded entry is added to the input entry it copies (for zeros it is dropped).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: "int | tuple[int, ...]",
        stride: "int | tuple[int, ...]" = 1,
        padding: "int | tuple[int, ...] | str" = 0,
        dilation: "int | tuple[int, ...]" = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        *,
        init: "str | _init.Initializer" = "he_uniform",
        rng: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        name = type(self).__name__
        self.padding_mode = check_padding_mode(name, padding_mode)
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, groups, bias, init, rng,
                         device, dtype)
        if padding == "valid":
            self.pads: Pads = symmetric((0,) * self.dims)
        elif padding == "same":
            if any(s != 1 for s in self.stride):
                raise ValueError(f"{name}: padding='same' needs stride 1, got stride={self.stride}")
            self.pads = same_padding(self.kernel_size, self.dilation)
        elif isinstance(padding, str):
            raise ValueError(f"{name}: padding must be an int, a tuple of ints, 'same' or 'valid', got {padding!r}")
        else:
            self.pads = symmetric(int_tuple(name, "padding", padding, self.dims, minimum=0))
        self.padding = padding if isinstance(padding, str) else tuple(b for b, _ in self.pads)

    def output_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """The output's spatial size for an input of spatial size ``spatial``."""
        return tuple(backend.window_count(n + b + a, k, s, r) for n, (b, a), k, s, r
                     in zip(spatial, self.pads, self.kernel_size, self.stride, self.dilation))

    def forward(self, x: Array, train: bool, input_grad: bool = True) -> tuple[Array, Backprop]:
        self._check(x)
        spatial = tuple(x.shape[2:])
        check_fits(self, spatial, self.pads, self.kernel_size, self.dilation)
        mode = self.padding_mode
        if mode != "zeros":
            check_mode_fits(self, spatial, self.pads, mode)
        xp = backend.namespace(x)
        g = self.groups
        W = self.weight.value
        weight_rows = xp.reshape(W, (g, self.out_channels // g, -1))  # (g, C_out/g, C_in/g · K)
        n = x.shape[0]
        pads = (*self.pads, *NO_PAD)  # the spatial axes and the batch axis of (C, *S, N)
        padded = pad_mode(batch_last(x), pads, mode)  # (C_in, *S_padded, N)
        padded_shape = tuple(padded.shape)  # backprop keeps the shape, not the array
        cols = im2col(padded, self.kernel_size, self.stride, self.dilation, g)
        del padded
        out = self.output_shape(spatial)
        y = _grouped_matmul(weight_rows, cols)  # (g, C_out/g, P · N)
        if self.bias is not None:
            y += xp.reshape(self.bias.value, (g, -1, 1))
        y = batch_first(xp.reshape(y, (self.out_channels, *out, n)))
        out_shape = tuple(y.shape)

        def backprop(dy: Array) -> Array | None:
            check_delta(self, dy, out_shape)
            dy_rows = xp.reshape(batch_last(dy), (g, self.out_channels // g, -1))  # (g, C_out/g, P · N)
            self.weight.accumulate(xp.reshape(_row_products(dy_rows, cols), W.shape))
            if self.bias is not None:
                self.bias.accumulate(xp.reshape(xp.sum(dy_rows, axis=2), (-1,)))
            if not input_grad:
                return None
            dcols = _grouped_matmul(_swap_last(weight_rows), dy_rows)  # (g, C_in/g · K, P · N)
            dx = col2im(dcols, padded_shape, self.kernel_size, self.stride, self.dilation, out)
            return batch_first(unpad_mode(dx, (*spatial, n), pads, mode))

        return y, backprop

    def extra_repr(self) -> str:
        parts = self._describe_args()
        if self.padding not in (0, "valid") and any(b or a for b, a in self.pads):
            parts.append(f"padding={self.padding!r}" if isinstance(self.padding, str) else f"padding={self.padding}")
        if self.padding_mode != "zeros":
            parts.append(f"padding_mode={self.padding_mode!r}")
        return ", ".join(parts + self._describe_tail())


class Conv1d(_ConvNd):
    """1-D convolution: x (N, C_in, L) -> y (N, C_out, L_out); weight (C_out, C_in/groups, k).

    See :class:`Conv2d` for the rules (the same, on one axis).
    """

    dims = 1


class Conv2d(_ConvNd):
    """2-D convolution: x (N, C_in, H, W) -> y (N, C_out, H_out, W_out).

    ``H_out = ⌊(H + pad_top + pad_bottom − dilation·(k_h − 1) − 1) / stride⌋ + 1`` (same for W).
    Weight (C_out, C_in/groups, k_h, k_w), initialised ``init`` (He uniform by default, for
    ReLU networks) from the host ``rng``; bias (C_out,) zeros.

    Forward: ``y[n,o,h,w] = b[o] + Σ_{c,i,j} W[o,c,i,j] · x̃[n, g(o)·C_in/g + c, h·s_h + i·δ_h, w·s_w + j·δ_w]``
    (x̃ zero-padded). δ rule: ``dx̃[n,c,h·s+i·δ,...] += Σ_o W[o,c,i,j] dy[n,o,h,w]``, then the
    padding is cut away. Gradients: ``dW[o,c,i,j] = Σ_{n,h,w} dy[n,o,h,w] x̃[n,c,h·s+i·δ,...]``,
    ``db[o] = Σ_{n,h,w} dy[n,o,h,w]``.

    Example::

        conv = Conv2d(1, 8, 3, padding="same", rng=0)
        y, backprop = conv(device("cpu").send(np.ones((2, 1, 8, 8)), "float32"), train=True)
        dx = backprop(y)     # y.shape == (2, 8, 8, 8); conv.weight.grad.shape == (8, 1, 3, 3)
    """

    dims = 2


class Conv3d(_ConvNd):
    """3-D convolution: x (N, C_in, D, H, W) -> y (N, C_out, D_out, H_out, W_out), e.g. video or volumes.

    Weight (C_out, C_in/groups, k_d, k_h, k_w); bias (C_out,). Each output size follows
    ``O = ⌊(S + pad_before + pad_after − dilation·(k − 1) − 1) / stride⌋ + 1``. The forward,
    δ rule and gradients are :class:`Conv2d`'s over three axes (one GEMM per group over
    columns of C_in/g·k_d·k_h·k_w rows); padding and padding_mode as there.
    """

    dims = 3


class _ConvTransposeNd(_ConvBase):
    """Transposed convolution (the δ-backward of a convolution, run forward).

    Shapes: x (N, C_in, *S) -> y (N, C_out, *O) with
    ``O_a = (S_a − 1) s_a − 2 p_a + δ_a (k_a − 1) + output_padding_a + 1``;
    weight (C_in, C_out/g, *k) as PyTorch; bias (C_out,).

    Forward: every input pixel scatters ``x[n, c, q] · W[c, o, i]`` to output position
    ``q·s + i·δ − p``: per group ``cols = W₂ᵀ · X`` then col2im, then the first ``p`` and last
    ``p − output_padding`` positions of each axis are cut. δ rule: the convolution of dy (padded
    back) with W at the same stride and dilation: ``dX = W₂ · im2col(dy)``.
    Gradients: ``dW₂ = X · im2col(dy)ᵀ``; ``db[o] = Σ dy[n, o, ·]``.
    """

    transposed = True

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: "int | tuple[int, ...]",
        stride: "int | tuple[int, ...]" = 1,
        padding: "int | tuple[int, ...]" = 0,
        output_padding: "int | tuple[int, ...]" = 0,
        groups: int = 1,
        bias: bool = True,
        dilation: "int | tuple[int, ...]" = 1,
        *,
        init: "str | _init.Initializer" = "he_uniform",
        rng: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        super().__init__(in_channels, out_channels, kernel_size, stride, dilation, groups, bias, init, rng,
                         device, dtype)
        name = type(self).__name__
        self.padding = int_tuple(name, "padding", padding, self.dims, minimum=0)
        self.output_padding = int_tuple(name, "output_padding", output_padding, self.dims, minimum=0)
        for op, s, r in zip(self.output_padding, self.stride, self.dilation):
            if op >= max(s, r):
                raise ValueError(
                    f"{name}: output_padding must be smaller than stride or dilation on every axis, got "
                    f"output_padding={self.output_padding}, stride={self.stride}, dilation={self.dilation}"
                )

    def output_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        return tuple((n - 1) * s - 2 * p + r * (k - 1) + op + 1 for n, s, p, r, k, op
                     in zip(spatial, self.stride, self.padding, self.dilation, self.kernel_size, self.output_padding))

    def forward(self, x: Array, train: bool, input_grad: bool = True) -> tuple[Array, Backprop]:
        self._check(x)
        spatial = tuple(x.shape[2:])
        out = self.output_shape(spatial)
        if any(o <= 0 for o in out):
            raise ValueError(f"{self.describe()}: an input of spatial size {spatial} gives an empty output {out}; "
                             "reduce the padding")
        xp = backend.namespace(x)
        n, g = x.shape[0], self.groups
        W = self.weight.value
        weight_rows = xp.reshape(W, (g, self.in_channels // g, -1))  # (g, C_in/g, C_out/g · K)
        # The scatter target: the uncut output, plus room for output_padding beyond it.
        reach = tuple((q - 1) * s + r * (k - 1) + 1
                      for q, s, r, k in zip(spatial, self.stride, self.dilation, self.kernel_size))
        full = tuple(max(f, p + o) for f, p, o in zip(reach, self.padding, out))
        cut = (*((p, f - p - o) for p, f, o in zip(self.padding, full, out)), *NO_PAD)
        x_rows = xp.reshape(batch_last(x), (g, self.in_channels // g, -1))  # (g, C_in/g, S · N)
        cols = _grouped_matmul(_swap_last(weight_rows), x_rows)  # (g, C_out/g · K, S · N)
        y = col2im(cols, (self.out_channels, *full, n), self.kernel_size, self.stride, self.dilation, spatial)
        y = y[interior((*out, n), cut)]
        if self.bias is not None:
            y = y + xp.reshape(self.bias.value, (-1,) + (1,) * (self.dims + 1))
        y = batch_first(y)
        out_shape = tuple(y.shape)

        def backprop(dy: Array) -> Array | None:
            check_delta(self, dy, out_shape)
            dy_t = batch_last(dy)  # (C_out, *O, N)
            padded = pad(dy_t, cut)[(slice(None), *(slice(0, f) for f in reach), slice(None))]
            dcols = im2col(padded, self.kernel_size, self.stride, self.dilation, g)  # (g, C_out/g · K, S · N)
            self.weight.accumulate(xp.reshape(_row_products(x_rows, dcols), W.shape))
            if self.bias is not None:
                self.bias.accumulate(xp.sum(xp.reshape(dy_t, (self.out_channels, -1)), axis=1))
            if not input_grad:
                return None
            dx = _grouped_matmul(weight_rows, dcols)  # (g, C_in/g, S · N)
            return batch_first(xp.reshape(dx, (self.in_channels, *spatial, n)))

        return y, backprop

    def extra_repr(self) -> str:
        parts = self._describe_args()
        if any(self.padding):
            parts.append(f"padding={self.padding}")
        if any(self.output_padding):
            parts.append(f"output_padding={self.output_padding}")
        return ", ".join(parts + self._describe_tail())


class ConvTranspose1d(_ConvTransposeNd):
    """1-D transposed convolution: x (N, C_in, L) -> y (N, C_out, (L − 1)s − 2p + δ(k − 1) + output_padding + 1).

    Weight (C_in, C_out/groups, k). See :class:`ConvTranspose2d` for the rules.
    """

    dims = 1


class ConvTranspose2d(_ConvTransposeNd):
    """2-D transposed convolution ("deconvolution"), the adjoint of :class:`Conv2d`.

    x (N, C_in, H, W) -> y (N, C_out, H_out, W_out) with
    ``H_out = (H − 1)·s − 2p + δ(k_h − 1) + output_padding + 1``; weight (C_in, C_out/groups, k_h, k_w).

    Forward: ``ỹ[n, o, h·s + i·δ, w·s + j·δ] += Σ_c x[n,c,h,w] W[c,o,i,j]``, then
    ``y = ỹ[:, :, p : p + H_out, p : p + W_out] + b`` (positions past ỹ are zero: output_padding).
    δ rule: ``dx[n,c,h,w] = Σ_{o,i,j} W[c,o,i,j] dỹ[n,o,h·s+i·δ,w·s+j·δ]`` (a Conv2d of dy).
    Gradients: ``dW[c,o,i,j] = Σ_{n,h,w} x[n,c,h,w] dỹ[n,o,h·s+i·δ,w·s+j·δ]``; ``db[o] = Σ dy[n,o,·,·]``.

    Example::

        up = ConvTranspose2d(8, 1, 4, stride=2, padding=1, rng=0)    # doubles H and W
        y = up.predict(device("cpu").send(np.ones((2, 8, 4, 4)), "float32"))   # (2, 1, 8, 8)
    """

    dims = 2


class ConvTranspose3d(_ConvTransposeNd):
    """3-D transposed convolution, the adjoint of :class:`Conv3d`: x (N, C_in, D, H, W) -> (N, C_out, D_out, H_out, W_out).

    Each output size ``O = (S − 1)·s − 2p + δ(k − 1) + output_padding + 1``; weight
    (C_in, C_out/groups, k_d, k_h, k_w); bias (C_out,). Forward, δ rule and gradients are
    :class:`ConvTranspose2d`'s over three axes.
    """

    dims = 3
