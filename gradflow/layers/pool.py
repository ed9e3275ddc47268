"""Pooling, channels first: MaxPool1d/2d, AvgPool1d/2d and GlobalAvgPool.

Windows are taken as K strided slices of the (padded) input, one per kernel offset, and
combined elementwise (a max over slices is several times faster than reshaping into windows
and reducing). Backward adds each slice's share of the δ back into the same slice.
"""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from ..backend import Array
from ..core import Backprop, Layer, check_delta, check_input
from .spatial import Pads, check_fits, check_spatial_input, int_tuple, interior, offsets, pad, symmetric, window_slices


class _PoolNd(Layer):
    """kernel_size, stride (default: kernel_size) and padding (at most half the kernel), per axis."""

    dims = 2

    def __init__(self, kernel_size: "int | tuple[int, ...]", stride: "int | tuple[int, ...] | None" = None,
                 padding: "int | tuple[int, ...]" = 0):
        name = type(self).__name__
        self.kernel_size = int_tuple(name, "kernel_size", kernel_size, self.dims)
        self.stride = self.kernel_size if stride is None else int_tuple(name, "stride", stride, self.dims)
        self.padding = int_tuple(name, "padding", padding, self.dims, minimum=0)
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):
            raise ValueError(f"{name}: padding must be at most half the kernel size, got padding={self.padding} "
                             f"for kernel_size={self.kernel_size}")
        self.pads: Pads = symmetric(self.padding)
        self._dilation = (1,) * self.dims
        # Windows that do not overlap let backward assign each slice instead of adding to it.
        self._disjoint = all(s >= k for s, k in zip(self.stride, self.kernel_size))

    def _prepare(self, x: Any, fill: float) -> tuple[Array, tuple[int, ...], list[tuple]]:
        """Check x; return the padded input, the output's spatial size and one index per kernel offset."""
        check_input(self, x)
        check_spatial_input(self, x, self.dims, None)
        spatial = tuple(x.shape[2:])
        check_fits(self, spatial, self.pads, self.kernel_size, self._dilation)
        padded = pad(x, self.pads, fill)
        out = tuple(backend.window_count(n, k, s) for n, k, s in zip(padded.shape[2:], self.kernel_size, self.stride))
        indices = [window_slices(o, self.stride, self._dilation, out) for o in offsets(self.kernel_size)]
        return padded, out, indices

    def _scatter(self, padded: Array, x: Array, out: tuple[int, ...], indices: list[tuple], parts) -> Array:
        """Sum each offset's δ part into its slice of a zero (padded-size) array; cut the padding."""
        xp = backend.namespace(padded)
        exact = self._disjoint and all(n == o * s for n, o, s in zip(padded.shape[2:], out, self.stride)) \
            and all(s == k for s, k in zip(self.stride, self.kernel_size))
        # When the windows tile the input exactly every entry is written once: no zero fill needed.
        dx = xp.empty_like(padded) if exact else xp.zeros_like(padded)  # keeps the memory order of x
        for index, part in zip(indices, parts):
            if self._disjoint:
                dx[index] = part
            else:
                dx[index] += part
        return dx[interior(tuple(x.shape[2:]), self.pads)] if padded is not x else dx

    def extra_repr(self) -> str:
        parts = [f"kernel_size={self.kernel_size}"]
        if self.stride != self.kernel_size:
            parts.append(f"stride={self.stride}")
        if any(self.padding):
            parts.append(f"padding={self.padding}")
        return ", ".join(parts)


class _MaxPoolNd(_PoolNd):
    """Max over each window (padding counts as −∞).

    Forward: ``y[n, c, p] = max_i x̃[n, c, p·s + i]``. δ rule: the whole ``dy[n, c, p]`` goes to
    the first position (in row-major kernel order) that attains the max; ties get nothing more,
    so the δ sums exactly once per window. Overlapping windows (stride < kernel) add up.
    """

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        padded, out, indices = self._prepare(x, -math.inf)
        xp = backend.namespace(x)
        slices = [padded[index] for index in indices]
        y = slices[0]
        for piece in slices[1:]:
            y = xp.maximum(y, piece)
        if len(slices) == 1:
            y = xp.asarray(y, copy=True)
        out_shape = tuple(y.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, out_shape)

            def parts():
                # Mask products, not xp.where: NumPy's where is ~10x slower on float32 here.
                remaining = dy
                for piece in slices[:-1]:
                    part = backend.multiply_by_mask(remaining, piece == y)
                    yield part
                    remaining = remaining - part
                yield remaining  # the max is attained somewhere: what is left belongs to the last tap

            return self._scatter(padded, x, out, indices, parts())

        return y, backprop


class MaxPool1d(_MaxPoolNd):
    """Max pooling over L: x (N, C, L) -> (N, C, ⌊(L + 2p − k)/s⌋ + 1). See :class:`MaxPool2d`."""

    dims = 1


class MaxPool2d(_MaxPoolNd):
    """Max pooling: x (N, C, H, W) -> (N, C, ⌊(H + 2p − k_h)/s_h⌋ + 1, ⌊(W + 2p − k_w)/s_w⌋ + 1).

    Forward: ``y[n,c,h,w] = max_{i,j} x̃[n, c, h·s_h + i, w·s_w + j]`` with x̃ padded by −∞.
    δ rule: ``dx`` gets ``dy[n,c,h,w]`` at the first (row-major) argmax of each window, 0 elsewhere;
    overlapping windows add. No parameters.
    """

    dims = 2


class _AvgPoolNd(_PoolNd):
    """Mean over each window. ``count_include_pad=True`` (PyTorch's default) divides by the
    kernel size everywhere; ``False`` divides by the number of real (unpadded) entries.

    Forward: ``y[n, c, p] = (1/m_p) Σ_i x̃[n, c, p·s + i]``. δ rule: each tap of window p gets
    ``dy[n, c, p] / m_p``.
    """

    def __init__(self, kernel_size: "int | tuple[int, ...]", stride: "int | tuple[int, ...] | None" = None,
                 padding: "int | tuple[int, ...]" = 0, count_include_pad: bool = True):
        super().__init__(kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)

    def _divisor(self, x: Array, out: tuple[int, ...], indices: list[tuple]) -> "float | Array":
        if self.count_include_pad or not any(self.padding):
            return float(math.prod(self.kernel_size))
        xp = backend.namespace(x)
        ones = xp.ones(tuple(x.shape[2:]), dtype=x.dtype, device=x.device)
        real = pad(ones, self.pads)
        counts = real[indices[0]]
        for index in indices[1:]:
            counts = counts + real[index]
        return counts  # (*out): real entries per window, broadcast over N and C

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        padded, out, indices = self._prepare(x, 0.0)
        total = padded[indices[0]]
        for index in indices[1:]:
            total = total + padded[index]
        divisor = self._divisor(x, out, indices)
        y = total / divisor
        out_shape = tuple(y.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, out_shape)
            share = dy / divisor
            return self._scatter(padded, x, out, indices, (share for _ in indices))

        return y, backprop

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + (", count_include_pad=False" if not self.count_include_pad else "")


class AvgPool1d(_AvgPoolNd):
    """Average pooling over L: x (N, C, L) -> (N, C, ⌊(L + 2p − k)/s⌋ + 1). See :class:`AvgPool2d`."""

    dims = 1


class AvgPool2d(_AvgPoolNd):
    """Average pooling: x (N, C, H, W) -> (N, C, H_out, W_out) (sizes as :class:`MaxPool2d`).

    Forward: ``y[n,c,h,w] = (1/m) Σ_{i,j} x̃[n, c, h·s_h + i, w·s_w + j]`` with x̃ zero-padded and
    m = k_h·k_w (or the count of unpadded taps with ``count_include_pad=False``).
    δ rule: ``dx̃[n, c, h·s_h + i, w·s_w + j] += dy[n,c,h,w] / m``. No parameters.
    """

    dims = 2


class GlobalAvgPool(Layer):
    """Mean over every spatial axis: x (N, C, *S) -> y (N, C).

    Forward: ``y[n, c] = (1/|S|) Σ_p x[n, c, p]``. δ rule: ``dx[n, c, p] = dy[n, c] / |S|``.
    """

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        check_input(self, x)
        if x.ndim < 3:
            raise ValueError(f"{self.describe()}: expected an input (N, C, *spatial) with at least one spatial "
                             f"axis, got shape {tuple(x.shape)}")
        xp = backend.namespace(x)
        shape = tuple(x.shape)
        axes = tuple(range(2, x.ndim))
        y = xp.mean(x, axis=axes)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, tuple(y.shape))
            share = xp.reshape(dy * (1.0 / math.prod(shape[2:])), (*shape[:2], *(1,) * len(axes)))
            return xp.asarray(xp.broadcast_to(share, shape), copy=True)

        return y, backprop
