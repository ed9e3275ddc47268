"""Pooling, channels first: MaxPool1d/2d, AvgPool1d/2d, adaptive pooling, MaxUnpool1d/2d and
GlobalAvgPool.

Windows are taken as K strided slices of the (padded) input, one per kernel offset, and
combined elementwise (a max over slices is several times faster than reshaping into windows
and reducing). Backward adds each slice's share of the δ back into the same slice.

Adaptive pooling has windows of varying size, so it works one axis at a time: window i of an
axis of size L with O outputs covers ``[⌊iL/O⌋, ⌈(i+1)L/O⌉)``. Averages are a product with an
(O, L) averaging matrix per axis; maxima are a max over the K = max window size gathers
``take(x, idx_j)`` (idx_j[i] = the j-th entry of window i, clamped to its last entry).
"""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from ..backend import Array
from ..core import Backprop, Layer, check_delta, check_input
from .spatial import Pads, check_fits, check_spatial_input, int_tuple, interior, offsets, pad, window_slices

class _PoolNd(Layer):
    """kernel_size, stride (default: kernel_size), padding (at most half the kernel size),
    dilation and ceil_mode, per axis, as PyTorch's pooling layers.

    Output size per axis, with span = dilation·(k − 1) + 1:
    ``O = ⌊(L + 2p − span)/s⌋ + 1``, or with ``ceil_mode`` ``⌈(L + 2p − span)/s⌉ + 1`` minus one
    when the last window would start past the input and its left padding (``(O − 1)s ≥ L + p``).
    Windows that run past the padded input in ceil mode see only what lies inside it.
    """

    dims = 2
    has_dilation = False

    def __init__(self, kernel_size: "int | tuple[int, ...]", stride: "int | tuple[int, ...] | None" = None,
                 padding: "int | tuple[int, ...]" = 0, dilation: "int | tuple[int, ...]" = 1,
                 ceil_mode: bool = False):
        name = type(self).__name__
        self.kernel_size = int_tuple(name, "kernel_size", kernel_size, self.dims)
        self.stride = self.kernel_size if stride is None else int_tuple(name, "stride", stride, self.dims)
        self.padding = int_tuple(name, "padding", padding, self.dims, minimum=0)
        self.dilation = int_tuple(name, "dilation", dilation, self.dims)
        if not isinstance(ceil_mode, bool):
            raise TypeError(f"{name}: ceil_mode must be a bool, got {ceil_mode!r}")
        self.ceil_mode = ceil_mode
        spans = tuple(r * (k - 1) + 1 for k, r in zip(self.kernel_size, self.dilation))
        if any(2 * p > k for p, k in zip(self.padding, self.kernel_size)):  # PyTorch's limit (undilated kernel)
            raise ValueError(f"{name}: padding must be at most half the kernel size, got padding={self.padding} "
                             f"for kernel_size={self.kernel_size}")
        self._spans = spans
        self.pads: Pads = tuple((p, p) for p in self.padding)  # the symmetric padding (ceil mode may add more per call)
        # Windows that do not overlap let backward assign each slice instead of adding to it.
        self._disjoint = all(s >= n for s, n in zip(self.stride, spans))

    def output_shape(self, spatial: tuple[int, ...]) -> tuple[int, ...]:
        """The output's spatial size for an input of spatial size ``spatial``."""
        out = []
        for n, k, s, p, span in zip(spatial, self.kernel_size, self.stride, self.padding, self._spans):
            if self.ceil_mode:
                o = -((span - n - 2 * p) // s) + 1  # ⌈(n + 2p − span)/s⌉ + 1
                if (o - 1) * s >= n + p:
                    o -= 1
            else:
                o = (n + 2 * p - span) // s + 1
            out.append(o)
        return tuple(out)

    def _pads(self, spatial: tuple[int, ...], out: tuple[int, ...]) -> Pads:
        """(p, p + room for ceil mode's last window) per axis."""
        return tuple((p, p + max(0, (o - 1) * s + span - n - 2 * p))
                     for n, o, s, p, span in zip(spatial, out, self.stride, self.padding, self._spans))

    def _prepare(self, x: Any, fill: float) -> tuple[Array, tuple[int, ...], Pads, list[tuple]]:
        """Check x; return the padded input, the output's spatial size, the pads and one index per kernel offset."""
        check_input(self, x)
        check_spatial_input(self, x, self.dims, None)
        spatial = tuple(x.shape[2:])
        check_fits(self, spatial, tuple((p, p) for p in self.padding), self.kernel_size, self.dilation)
        out = self.output_shape(spatial)
        pads = self._pads(spatial, out)
        padded = pad(x, pads, fill)
        indices = [window_slices(o, self.stride, self.dilation, out) for o in offsets(self.kernel_size)]
        return padded, out, pads, indices

    def _scatter(self, padded: Array, x: Array, out: tuple[int, ...], pads: Pads, indices: list[tuple], parts) -> Array:
        """Sum each offset's δ part into its slice of a zero (padded-size) array; cut the padding."""
        xp = backend.namespace(padded)
        exact = self._disjoint and all(n == o * s for n, o, s in zip(padded.shape[2:], out, self.stride)) \
            and all(s == k for s, k in zip(self.stride, self._spans))
        # When the windows tile the input exactly every entry is written once: no zero fill needed.
        dx = xp.empty_like(padded) if exact else xp.zeros_like(padded)  # keeps the memory order of x
        for index, part in zip(indices, parts):
            if self._disjoint:
                dx[index] = part
            else:
                dx[index] += part
        return dx[interior(tuple(x.shape[2:]), pads)] if padded is not x else dx

    def extra_repr(self) -> str:
        parts = [f"kernel_size={self.kernel_size}"]
        if self.stride != self.kernel_size:
            parts.append(f"stride={self.stride}")
        if any(self.padding):
            parts.append(f"padding={self.padding}")
        if any(r != 1 for r in self.dilation):
            parts.append(f"dilation={self.dilation}")
        if self.ceil_mode:
            parts.append("ceil_mode=True")
        return ", ".join(parts)


class _MaxPoolNd(_PoolNd):
    """Max over each window (padding counts as −∞).

    Forward: ``y[n, c, p] = max_i x̃[n, c, p·s + i·δ]`` (δ = dilation). δ rule: the whole
    ``dy[n, c, p]`` goes to the first position (in row-major kernel order) that attains the max;
    ties get nothing more, so the δ sums exactly once per window. Overlapping windows add up.

    return_indices: the call returns ``(y, indices)`` instead of ``y``: ``indices`` (int64, the
    shape of y) holds, for each output, the flat position ``Σ_a q_a · Π_{b>a} S_b`` of its argmax
    q in the unpadded input plane (PyTorch's convention, the input of :class:`MaxUnpool2d`).
    Backprop still takes the δ of y alone.
    """

    def __init__(self, kernel_size: "int | tuple[int, ...]", stride: "int | tuple[int, ...] | None" = None,
                 padding: "int | tuple[int, ...]" = 0, dilation: "int | tuple[int, ...]" = 1,
                 return_indices: bool = False, ceil_mode: bool = False):
        super().__init__(kernel_size, stride, padding, dilation, ceil_mode)
        if not isinstance(return_indices, bool):
            raise TypeError(f"{type(self).__name__}: return_indices must be a bool, got {return_indices!r}")
        self.return_indices = return_indices

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        padded, out, pads, indices = self._prepare(x, -math.inf)
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

            return self._scatter(padded, x, out, pads, indices, parts())

        if self.return_indices:
            return (y, self._argmax_positions(x, y, slices, out)), backprop
        return y, backprop

    def _argmax_positions(self, x: Array, y: Array, slices: list[Array], out: tuple[int, ...]) -> Array:
        """The flat input position of each window's first max (row-major taps)."""
        xp = backend.namespace(x)
        spatial = tuple(x.shape[2:])
        sizes = [math.prod(spatial[a + 1:]) for a in range(self.dims)]  # flat stride of each axis
        base = xp.zeros(tuple(out), dtype=xp.int64, device=x.device)
        for a in range(self.dims):
            starts = (xp.arange(out[a], dtype=xp.int64, device=x.device) * self.stride[a] - self.padding[a]) * sizes[a]
            base = base + xp.reshape(starts, (*(1,) * a, out[a], *(1,) * (self.dims - a - 1)))
        taps = [sum(i * r * m for i, r, m in zip(offset, self.dilation, sizes)) for offset in offsets(self.kernel_size)]
        chosen = xp.full(tuple(y.shape), taps[-1], dtype=xp.int64, device=x.device)
        for tap, piece in zip(reversed(taps[:-1]), reversed(slices[:-1])):
            chosen = xp.where(piece == y, xp.asarray(tap, dtype=xp.int64, device=x.device), chosen)
        return chosen + base

    def extra_repr(self) -> str:
        text = super().extra_repr()
        return text + (", return_indices=True" if self.return_indices else "")


class MaxPool1d(_MaxPoolNd):
    """Max pooling over L: x (N, C, L) -> (N, C, L_out), L_out as :class:`MaxPool2d`'s H_out. See :class:`MaxPool2d`."""

    dims = 1


class MaxPool2d(_MaxPoolNd):
    """Max pooling: x (N, C, H, W) -> (N, C, H_out, W_out),
    ``H_out = ⌊(H + 2p − δ(k_h − 1) − 1)/s_h⌋ + 1`` (⌈·⌉ with ``ceil_mode``, see :class:`_PoolNd`); same for W.

    Arguments (each an int or one per axis): kernel_size; stride (default kernel_size);
    padding (>= 0, at most half the kernel size; padded entries are −∞); dilation (>= 1, the
    spacing δ of a window's taps); return_indices (bool: also return the argmax positions, see
    :class:`_MaxPoolNd`); ceil_mode (bool: round the output size up).

    Forward: ``y[n,c,h,w] = max_{i,j} x̃[n, c, h·s_h + i·δ_h, w·s_w + j·δ_w]`` with x̃ padded by −∞.
    δ rule: ``dx`` gets ``dy[n,c,h,w]`` at the first (row-major) argmax of each window, 0 elsewhere;
    overlapping windows add. No parameters.
    """

    dims = 2


class _AvgPoolNd(_PoolNd):
    """Mean over each window, as PyTorch's AvgPool.

    Divisor m_p of window p: ``divisor_override`` (a positive int) when given; else with
    ``count_include_pad=True`` (the default) the window's entries inside the symmetrically padded
    input (the kernel size, except for a ceil-mode window that runs past it); with ``False`` the
    window's entries inside the unpadded input.

    Forward: ``y[n, c, p] = (1/m_p) Σ_i x̃[n, c, p·s + i]``. δ rule: each tap of window p gets
    ``dy[n, c, p] / m_p``.
    """

    def __init__(self, kernel_size: "int | tuple[int, ...]", stride: "int | tuple[int, ...] | None" = None,
                 padding: "int | tuple[int, ...]" = 0, ceil_mode: bool = False, count_include_pad: bool = True,
                 divisor_override: "int | None" = None):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        name = type(self).__name__
        if not isinstance(count_include_pad, bool):
            raise TypeError(f"{name}: count_include_pad must be a bool, got {count_include_pad!r}")
        if divisor_override is not None and (isinstance(divisor_override, bool) or not isinstance(divisor_override, int)
                                             or divisor_override <= 0):
            raise ValueError(f"{name}: divisor_override must be None or a positive int, got {divisor_override!r}")
        self.count_include_pad = count_include_pad
        self.divisor_override = divisor_override

    def _divisor(self, x: Array, pads: Pads, indices: list[tuple]) -> "float | Array":
        if self.divisor_override is not None:
            return float(self.divisor_override)
        ceil_room = any(a != p for (_, a), p in zip(pads, self.padding))
        if not ceil_room and (self.count_include_pad or not any(self.padding)):
            return float(math.prod(self.kernel_size))
        xp = backend.namespace(x)
        spatial = tuple(x.shape[2:])
        if self.count_include_pad:  # ones over the symmetrically padded input, zeros in the ceil-mode room
            region = tuple(n + 2 * p for n, p in zip(spatial, self.padding))
            inside = tuple((0, a - p) for (_, a), p in zip(pads, self.padding))
        else:
            region, inside = spatial, pads
        real = pad(xp.ones(region, dtype=x.dtype, device=x.device), inside)
        counts = real[indices[0]]
        for index in indices[1:]:
            counts = counts + real[index]
        return counts  # (*out): entries counted per window, broadcast over N and C

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        padded, out, pads, indices = self._prepare(x, 0.0)
        total = padded[indices[0]]
        for index in indices[1:]:
            total = total + padded[index]
        divisor = self._divisor(x, pads, indices)
        y = total / divisor
        out_shape = tuple(y.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, out_shape)
            share = dy / divisor
            return self._scatter(padded, x, out, pads, indices, (share for _ in indices))

        return y, backprop

    def extra_repr(self) -> str:
        text = super().extra_repr()
        text += ", count_include_pad=False" if not self.count_include_pad else ""
        return text + (f", divisor_override={self.divisor_override}" if self.divisor_override is not None else "")


class AvgPool1d(_AvgPoolNd):
    """Average pooling over L: x (N, C, L) -> (N, C, L_out), L_out as :class:`MaxPool1d`'s. See :class:`AvgPool2d`."""

    dims = 1


class AvgPool2d(_AvgPoolNd):
    """Average pooling: x (N, C, H, W) -> (N, C, H_out, W_out) (sizes as :class:`MaxPool2d`, no dilation).

    Arguments: kernel_size, stride (default kernel_size), padding (each an int or one per axis;
    padding at most half the kernel, zero-filled); ceil_mode (bool); count_include_pad (bool,
    default True: padded zeros count in the divisor); divisor_override (None or a positive int
    used as every window's divisor).

    Forward: ``y[n,c,h,w] = (1/m) Σ_{i,j} x̃[n, c, h·s_h + i, w·s_w + j]`` with x̃ zero-padded and
    m the window's divisor (see :class:`_AvgPoolNd`).
    δ rule: ``dx̃[n, c, h·s_h + i, w·s_w + j] += dy[n,c,h,w] / m``. No parameters.
    """

    dims = 2


# -- adaptive pooling -------------------------------------------------------------------------


def adaptive_windows(size: int, out: int) -> list[tuple[int, int]]:
    """Window i of an axis of ``size`` entries pooled to ``out``: ``[⌊i·size/out⌋, ⌈(i+1)·size/out⌉)``."""
    return [((i * size) // out, -((-(i + 1) * size) // out)) for i in range(out)]


class _AdaptivePoolNd(Layer):
    """output_size: an int (every axis) or one entry per axis, each a positive int or None
    (keep that axis's input size)."""

    dims = 2

    def __init__(self, output_size: "int | None | tuple[int | None, ...]"):
        name = type(self).__name__
        items = (output_size,) * self.dims if output_size is None or isinstance(output_size, int) else output_size
        if (not isinstance(items, (tuple, list)) or len(items) != self.dims
                or not all(v is None or (isinstance(v, int) and not isinstance(v, bool) and v > 0) for v in items)):
            raise ValueError(f"{name}: output_size must be a positive int, None, or a tuple of {self.dims} such values, "
                             f"got {output_size!r}")
        self.output_size = tuple(items)
        self._cache: dict[tuple, Any] = {}

    def _sizes(self, x: Any) -> tuple[tuple[int, ...], tuple[int, ...]]:
        check_input(self, x)
        check_spatial_input(self, x, self.dims, None)
        spatial = tuple(x.shape[2:])
        if any(n == 0 for n in spatial):
            raise ValueError(f"{self.describe()}: expected a non-empty spatial size, got an input of shape {tuple(x.shape)}")
        return spatial, tuple(n if o is None else o for n, o in zip(spatial, self.output_size))

    def _host_array(self, x: Array, key: tuple, make) -> Array:
        """A small host-built constant (averaging matrix, gather indices), sent once per device and dtype."""
        full = (*key, backend.device_of(x).name, backend.dtype_name(x.dtype))
        if full not in self._cache:
            value = make()
            self._cache[full] = backend.device_of(x).send(value, None if value.dtype.kind == "i" else x.dtype)
        return self._cache[full]

    def extra_repr(self) -> str:
        return f"output_size={self.output_size if self.dims > 1 else self.output_size[0]}"


class _AdaptiveAvgPoolNd(_AdaptivePoolNd):
    """Mean over adaptive windows, one axis at a time (the mean over a box is the mean of the means).

    Shapes: x (N, C, *S) -> y (N, C, *O). Per axis a, with A_a the (O_a, S_a) matrix holding
    ``1/|window i|`` on window i's entries: ``y = x ×_a A_a`` for every axis.
    Forward: ``y[n, c, i] = (1/|w_i|) Σ_{q ∈ w_i} x[n, c, q]``; δ rule: ``dx = dy ×_a A_aᵀ``.
    """

    def _matrix(self, x: Array, size: int, out: int) -> Array:
        return self._host_array(x, ("avg", size, out),
                                lambda: backend.averaging_matrix(adaptive_windows(size, out), size))

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        spatial, out = self._sizes(x)
        xp = backend.namespace(x)
        mats = [self._matrix(x, n, o) for n, o in zip(spatial, out)]
        y = x
        for a in reversed(range(self.dims)):  # last axis first
            y = _apply_along(xp, y, mats[a], a - self.dims)
        out_shape = tuple(y.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, out_shape)
            d = dy
            for a in range(self.dims):
                d = _apply_along(xp, d, xp.permute_dims(mats[a], (1, 0)), a - self.dims)
            return d

        return y, backprop


def _apply_along(xp: Any, x: Array, m: Array, axis: int) -> Array:
    """``m`` (P, Q) applied to axis ``axis`` (negative, of size Q) of x: that axis becomes P."""
    if axis == -1:
        return x @ xp.permute_dims(m, (1, 0))
    moved = xp.moveaxis(x, axis, -2)
    return xp.moveaxis(m @ moved, -2, axis)


class _AdaptiveMaxPoolNd(_AdaptivePoolNd):
    """Max over adaptive windows, one axis at a time (the max over a box is the max of the maxes).

    Shapes: x (N, C, *S) -> y (N, C, *O). Per axis, with K the largest window and
    ``idx_j[i] = min(start_i + j, end_i − 1)``: ``z = max_j take(x, idx_j)`` (last axis first).
    δ rule: per axis in reverse, each output's δ goes to the first j attaining the max and is
    added back at ``idx_j`` (a product with the one-hot (O, S) matrix of idx_j). Overall the δ of
    a window goes to its first max in row-major order, as PyTorch.
    """

    def _gathers(self, x: Array, size: int, out: int) -> tuple[list[Array], list[Array]]:
        windows = adaptive_windows(size, out)
        span = max(hi - lo for lo, hi in windows)
        idx = [backend.window_offset_indices(windows, j) for j in range(span)]
        picks = [self._host_array(x, ("take", size, out, j), lambda j=j: idx[j]) for j in range(span)]
        scatters = [self._host_array(x, ("onehot", size, out, j), lambda j=j: backend.one_hot_rows(idx[j], size))
                    for j in range(span)]
        return picks, scatters

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        spatial, out = self._sizes(x)
        xp = backend.namespace(x)
        stages = []  # (axis, scatters, pieces, result) per stage, last axis first
        y = x
        for a in reversed(range(self.dims)):
            axis = x.ndim - self.dims + a
            picks, scatters = self._gathers(x, spatial[a], out[a])
            pieces = [xp.take(y, pick, axis=axis) for pick in picks]
            z = pieces[0]
            for piece in pieces[1:]:
                z = xp.maximum(z, piece)
            if len(pieces) == 1:
                z = xp.asarray(z, copy=True)
            stages.append((a - self.dims, scatters, pieces, z))
            y = z
        out_shape = tuple(y.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, out_shape)
            d = dy
            for axis, scatters, pieces, z in reversed(stages):
                remaining, total = d, None
                for k, (piece, scatter) in enumerate(zip(pieces, scatters)):
                    part = remaining if k == len(pieces) - 1 else backend.multiply_by_mask(remaining, piece == z)
                    if k < len(pieces) - 1:
                        remaining = remaining - part
                    back = _apply_along(xp, part, xp.permute_dims(scatter, (1, 0)), axis)
                    total = back if total is None else total + back
                d = total
            return d

        return y, backprop


class AdaptiveAvgPool1d(_AdaptiveAvgPoolNd):
    """Adaptive average pooling: x (N, C, L) -> (N, C, output_size); window i covers
    ``[⌊iL/O⌋, ⌈(i+1)L/O⌉)``. output_size: a positive int (or None: keep L). See :class:`AdaptiveAvgPool2d`."""

    dims = 1


class AdaptiveAvgPool2d(_AdaptiveAvgPoolNd):
    """Adaptive average pooling: x (N, C, H, W) -> (N, C, O_h, O_w), whatever H and W are.

    output_size: an int (both axes) or (O_h, O_w), each a positive int or None (keep that size).
    Window (i, j) covers rows ``[⌊iH/O_h⌋, ⌈(i+1)H/O_h⌉)`` and the same for columns.
    Forward: ``y[n,c,i,j] = mean of x[n,c]`` over window (i, j), i.e. ``y = A_h x A_wᵀ``;
    δ rule: ``dx = A_hᵀ dy A_w`` (A: the averaging matrices of :class:`_AdaptiveAvgPoolNd`). No parameters.
    """

    dims = 2


class AdaptiveMaxPool1d(_AdaptiveMaxPoolNd):
    """Adaptive max pooling: x (N, C, L) -> (N, C, output_size), windows as :class:`AdaptiveAvgPool1d`.
    output_size: a positive int (or None: keep L). See :class:`AdaptiveMaxPool2d`."""

    dims = 1


class AdaptiveMaxPool2d(_AdaptiveMaxPoolNd):
    """Adaptive max pooling: x (N, C, H, W) -> (N, C, O_h, O_w), windows as :class:`AdaptiveAvgPool2d`.

    output_size: an int or (O_h, O_w), each a positive int or None (keep that size).
    Forward: ``y[n,c,i,j] = max of x[n,c]`` over window (i, j). δ rule: the whole ``dy[n,c,i,j]``
    goes to the window's first (row-major) max. No parameters; no ``return_indices``.
    """

    dims = 2


# -- unpooling --------------------------------------------------------------------------------


class _MaxUnpoolNd(Layer):
    """The partial inverse of max pooling: put each value back at the position its index names.

    Call: ``y, backprop = unpool(x, train, indices=indices, output_size=None)``; x (N, C, *S)
    floating, indices an integer array of x's shape on x's device (the ``indices`` of a
    ``MaxPool(..., return_indices=True)``: flat positions in each (n, c) output plane, values in
    ``[0, Π O)``); output_size: None (then ``O = (S − 1)·s − 2p + k`` per axis) or the spatial
    size O (with or without the leading N, C).

    Forward: ``y[n, c] = 0`` except ``y[n, c].flat[indices[n, c, q]] = x[n, c, q]``. An index
    repeated (overlapping pooling windows that share a max) gets the mean of its values, which is
    that shared value. δ rule, as PyTorch: ``dx[n, c, q] = dy[n, c].flat[indices[n, c, q]]`` (a
    gather; a repeated index hands its full δ to each of its entries). The indices get no δ.
    """

    dims = 2

    def __init__(self, kernel_size: "int | tuple[int, ...]", stride: "int | tuple[int, ...] | None" = None,
                 padding: "int | tuple[int, ...]" = 0):
        name = type(self).__name__
        self.kernel_size = int_tuple(name, "kernel_size", kernel_size, self.dims)
        self.stride = self.kernel_size if stride is None else int_tuple(name, "stride", stride, self.dims)
        self.padding = int_tuple(name, "padding", padding, self.dims, minimum=0)

    def _output_size(self, x: Array, output_size: Any) -> tuple[int, ...]:
        spatial = tuple(x.shape[2:])
        default = tuple((n - 1) * s - 2 * p + k for n, s, p, k in zip(spatial, self.stride, self.padding, self.kernel_size))
        if output_size is None:
            size = default
        else:
            size = tuple(output_size)[-self.dims:] if isinstance(output_size, (tuple, list)) else ()
            if (len(size) != self.dims or not all(isinstance(v, int) and not isinstance(v, bool) for v in size)
                    or len(tuple(output_size)) not in (self.dims, self.dims + 2)):
                raise ValueError(f"{self.describe()}: output_size must be None or a tuple of {self.dims} "
                                 f"(or {self.dims + 2}) ints, got {output_size!r}")
            low = tuple(d - s for d, s in zip(default, self.stride))
            high = tuple(d + s for d, s in zip(default, self.stride))
            if not all(lo < v < hi for lo, v, hi in zip(low, size, high)):
                raise ValueError(f"{self.describe()}: output_size {size} must lie strictly between {low} and {high} "
                                 f"for an input of spatial size {spatial}")
        if any(v <= 0 for v in size):
            raise ValueError(f"{self.describe()}: an input of spatial size {spatial} gives an empty output {size}")
        return size

    def forward(self, x: Array, train: bool, indices: Any = None, output_size: Any = None) -> tuple[Array, Backprop]:
        check_input(self, x)
        check_spatial_input(self, x, self.dims, None)
        if indices is None:
            raise TypeError(f"{self.describe()}: expected indices=... (the indices of a max pooling with "
                            "return_indices=True), got None")
        if not backend.is_array(indices):
            raise TypeError(f"{self.describe()}: expected indices as an integer array, got {type(indices).__name__}")
        if not backend.same_device(indices, x):
            raise backend.DeviceError(f"{self.describe()}: expected indices on the input's device "
                                      f"{backend.device_of(x)}, got them on {backend.device_of(indices)}")
        xp = backend.namespace(x)
        if not xp.isdtype(indices.dtype, "integral"):
            raise TypeError(f"{self.describe()}: expected integer indices, got dtype {backend.dtype_name(indices.dtype)}")
        if tuple(indices.shape) != tuple(x.shape):
            raise ValueError(f"{self.describe()}: expected indices of the input's shape {tuple(x.shape)}, "
                             f"got {tuple(indices.shape)}")
        out = self._output_size(x, output_size)
        plane = math.prod(out)
        if math.prod(x.shape) > 0:
            low, high = int(xp.min(indices)), int(xp.max(indices))
            if low < 0 or high >= plane:
                raise ValueError(f"{self.describe()}: indices must lie in [0, {plane - 1}] (the output plane {out}), "
                                 f"got values in [{low}, {high}]")
        n, c = x.shape[0], x.shape[1]
        rows = xp.reshape(xp.arange(n * c, dtype=xp.int64, device=x.device) * plane, (n * c, 1))
        flat = xp.reshape(rows + xp.reshape(xp.astype(indices, xp.int64), (n * c, -1)), (-1,))
        # Overlapping pooling windows name one input entry twice, with the same value: the mean of
        # the values written to a position is that value (PyTorch writes it twice).
        sums = xp.zeros((n * c * plane, 2), dtype=x.dtype, device=x.device)
        entries = xp.reshape(x, (-1, 1))
        backend.scatter_add_rows(sums, flat, xp.concat([entries, xp.ones_like(entries)], axis=1))
        counts = sums[:, 1]
        y = xp.reshape(sums[:, 0] / xp.where(counts > 0, counts, xp.ones_like(counts)), (n, c, *out))
        x_shape = tuple(x.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, tuple(y.shape))
            return xp.reshape(xp.take(xp.reshape(dy, (-1,)), flat, axis=0), x_shape)

        return y, backprop

    def extra_repr(self) -> str:
        parts = [f"kernel_size={self.kernel_size}"]
        if self.stride != self.kernel_size:
            parts.append(f"stride={self.stride}")
        if any(self.padding):
            parts.append(f"padding={self.padding}")
        return ", ".join(parts)


class MaxUnpool1d(_MaxUnpoolNd):
    """Max unpooling: x (N, C, L) -> (N, C, (L − 1)s − 2p + k), values back at their ``indices``. See :class:`MaxUnpool2d`."""

    dims = 1


class MaxUnpool2d(_MaxUnpoolNd):
    """Max unpooling, the partial inverse of :class:`MaxPool2d`: x (N, C, H, W) -> (N, C, H_out, W_out),
    ``H_out = (H − 1)s_h − 2p_h + k_h`` (or ``output_size``), zeros except at the argmax positions.

    Arguments: kernel_size, stride (default kernel_size), padding: those of the max pooling
    whose indices are given. Call with ``indices=`` (and optionally ``output_size=``); see
    :class:`_MaxUnpoolNd` for the forward and δ rules. No parameters.

    Example::

        pool, unpool = MaxPool2d(2, return_indices=True), MaxUnpool2d(2)
        (y, idx), _ = pool(x, train=True)
        restored, backprop = unpool(y, train=True, indices=idx)   # x's shape, maxima kept
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
        if any(n == 0 for n in x.shape[2:]):
            raise ValueError(f"{self.describe()}: expected a non-empty spatial size to average over, got an input "
                             f"of shape {tuple(x.shape)}")
        xp = backend.namespace(x)
        shape = tuple(x.shape)
        axes = tuple(range(2, x.ndim))
        y = xp.mean(x, axis=axes)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, tuple(y.shape))
            share = xp.reshape(dy * (1.0 / math.prod(shape[2:])), (*shape[:2], *(1,) * len(axes)))
            return xp.asarray(xp.broadcast_to(share, shape), copy=True)

        return y, backprop
