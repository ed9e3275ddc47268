"""Helpers shared by the convolution and pooling layers: argument checks, padding, offsets.

Spatial layers use PyTorch's channels-first layout: (N, C, L) in 1-D, (N, C, H, W) in 2-D.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from typing import Any

from .. import backend
from ..backend import Array

Pads = tuple[tuple[int, int], ...]  # (before, after) per spatial axis

LAYOUTS = {1: "(N, C, L)", 2: "(N, C, H, W)", 3: "(N, C, D, H, W)"}


def int_tuple(owner: str, name: str, value: Any, dims: int, minimum: int = 1) -> tuple[int, ...]:
    """``value`` (an int or a sequence of ``dims`` ints, each ``>= minimum``) as a tuple."""
    items = (value,) * dims if _is_int(value) else value
    if (not isinstance(items, (tuple, list)) or len(items) != dims
            or not all(_is_int(v) and v >= minimum for v in items)):
        expected = "a non-negative int" if minimum == 0 else f"an int >= {minimum}"
        raise ValueError(f"{owner}: {name} must be {expected} or a tuple of {dims} such ints, got {value!r}")
    return tuple(int(v) for v in items)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def symmetric(padding: tuple[int, ...]) -> Pads:
    """Per-axis padding ``p`` as ``(p, p)`` pairs (the same before and after)."""
    return tuple((p, p) for p in padding)


def same_padding(kernel: tuple[int, ...], dilation: tuple[int, ...]) -> Pads:
    """Padding that keeps the size at stride 1; an odd total puts the extra on the end (as PyTorch)."""
    totals = [r * (k - 1) for k, r in zip(kernel, dilation)]
    return tuple((t // 2, t - t // 2) for t in totals)


def pad(x: Array, pads: Pads, value: float = 0.0) -> Array:
    """``x`` with ``pads`` added around its last ``len(pads)`` axes, filled with ``value``.

    Returns ``x`` itself when there is nothing to pad.
    """
    if not any(before or after for before, after in pads):
        return x
    xp = backend.namespace(x)
    d = len(pads)
    lead = tuple(x.shape[: x.ndim - d])
    spatial = tuple(x.shape[x.ndim - d:])
    shape = lead + tuple(n + b + a for n, (b, a) in zip(spatial, pads))
    padded = xp.full(shape, value, dtype=x.dtype, device=x.device)
    padded[interior(spatial, pads)] = x
    return padded


def interior(spatial: Sequence[int], pads: Pads) -> tuple:
    """The index of the unpadded region inside a padded array."""
    return (..., *(slice(b, b + n) for n, (b, _) in zip(spatial, pads)))


def offsets(kernel: Sequence[int]) -> Iterator[tuple[int, ...]]:
    """Every kernel offset, row-major (the order the flattened weights use)."""
    return itertools.product(*(range(k) for k in kernel))


def window_slices(offset: Sequence[int], stride: Sequence[int], dilation: Sequence[int],
                  out: Sequence[int]) -> tuple:
    """The basic index picking tap ``offset`` of every window: positions ``o s + i δ``."""
    return (..., *(slice(i * r, i * r + s * (o - 1) + 1, s) for i, s, r, o in zip(offset, stride, dilation, out)))


def check_spatial_input(layer: Any, x: Array, dims: int, channels: int | None) -> None:
    """Channels-first rank and channel count, with the layout named in the message."""
    if x.ndim != dims + 2:
        raise ValueError(f"{layer.describe()}: expected a {dims + 2}-D input {LAYOUTS[dims]}, got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(
            f"{layer.describe()}: expected {channels} input channels (axis 1), got {x.shape[1]} "
            f"in an input of shape {tuple(x.shape)}"
        )


def check_fits(layer: Any, spatial: tuple[int, ...], pads: Pads, kernel: tuple[int, ...],
               dilation: tuple[int, ...]) -> None:
    """The padded input must hold at least one (dilated) window on every axis."""
    padded = tuple(n + b + a for n, (b, a) in zip(spatial, pads))
    span = tuple(r * (k - 1) + 1 for k, r in zip(kernel, dilation))
    if any(p < s for p, s in zip(padded, span)):
        raise ValueError(
            f"{layer.describe()}: the input's spatial size {spatial} (padded to {padded}) is smaller than "
            f"the {'dilated ' if any(r > 1 for r in dilation) else ''}kernel {span}"
        )


PADDING_MODES = ("zeros", "reflect", "replicate", "circular")


def check_padding_mode(owner: str, mode: Any) -> str:
    """``mode`` when it is one of :data:`PADDING_MODES`, else a ValueError naming ``owner``."""
    if mode not in PADDING_MODES:
        raise ValueError(f"{owner}: padding_mode must be one of {', '.join(map(repr, PADDING_MODES))}, got {mode!r}")
    return mode


def check_mode_fits(layer: Any, spatial: tuple[int, ...], pads: Pads, mode: str) -> None:
    """reflect needs each pad < the axis size, circular each pad <= it (as PyTorch)."""
    for n, (b, a) in zip(spatial, pads):
        if (mode == "reflect" and max(b, a) >= n) or (mode == "circular" and max(b, a) > n):
            limit = "smaller than" if mode == "reflect" else "at most"
            raise ValueError(
                f"{layer.describe()}: padding_mode={mode!r} needs each padding {limit} the input size on its axis, "
                f"got padding {tuple(pads)} for spatial size {tuple(spatial)}"
            )


def _axis_slice(ndim: int, axis: int, part: slice) -> tuple:
    return (*(slice(None),) * axis, part, ...)


def pad_mode(x: Array, pads: Pads, mode: str) -> Array:
    """``x`` padded on its last ``len(pads)`` axes by ``mode`` (reflect, replicate or circular).

    Per axis of size L with (b, a) added: reflect copies ``x[b], …, x[1]`` before and
    ``x[L−2], …, x[L−1−a]`` after (the edge itself is not repeated); replicate repeats
    ``x[0]`` b times and ``x[L−1]`` a times; circular wraps: ``x[L−b:]`` before, ``x[:a]`` after.
    Built from slices, flips and one concatenation per axis: the same code on every device.
    """
    if mode == "zeros":
        return pad(x, pads)
    xp = backend.namespace(x)
    first = x.ndim - len(pads)
    for k, (b, a) in enumerate(pads):
        if not (b or a):
            continue
        axis = first + k
        n = x.shape[axis]
        take = lambda part: x[_axis_slice(x.ndim, axis, part)]  # noqa: E731
        if mode == "reflect":
            before, after = xp.flip(take(slice(1, b + 1)), axis=axis), xp.flip(take(slice(n - 1 - a, n - 1)), axis=axis)
        elif mode == "replicate":
            def repeat(edge, times):
                shape = list(edge.shape)
                shape[axis] = times
                return xp.broadcast_to(edge, tuple(shape))
            before, after = repeat(take(slice(0, 1)), b), repeat(take(slice(n - 1, n)), a)
        else:  # circular
            before, after = take(slice(n - b, n)), take(slice(0, a))
        x = xp.concat([before, x, after], axis=axis)
    return x


def unpad_mode(d_padded: Array, spatial: tuple[int, ...], pads: Pads, mode: str) -> Array:
    """The δ-backward of :func:`pad_mode`: each padded entry's δ goes back to the entry it copied.

    ``zeros`` cuts the padding away; the other modes add the border δs onto their sources
    (reflect: flipped, one in from the edge; replicate: summed onto the edge; circular: onto the
    far end), one axis at a time, last axis first (the reverse of the forward).
    """
    if mode == "zeros":
        return d_padded[interior(spatial, pads)]
    xp = backend.namespace(d_padded)
    d = d_padded
    first = d.ndim - len(pads)
    for k in reversed(range(len(pads))):
        b, a = pads[k]
        if not (b or a):
            continue
        axis = first + k
        n = spatial[k]
        at = lambda part: _axis_slice(d.ndim, axis, part)  # noqa: E731
        left, right = d[at(slice(0, b))], d[at(slice(b + n, b + n + a))]
        core = xp.asarray(d[at(slice(b, b + n))], copy=True)
        if mode == "reflect":
            if b:
                core[at(slice(1, b + 1))] += xp.flip(left, axis=axis)
            if a:
                core[at(slice(n - 1 - a, n - 1))] += xp.flip(right, axis=axis)
        elif mode == "replicate":
            if b:
                core[at(slice(0, 1))] += xp.sum(left, axis=axis, keepdims=True)
            if a:
                core[at(slice(n - 1, n))] += xp.sum(right, axis=axis, keepdims=True)
        else:  # circular
            if b:
                core[at(slice(n - b, n))] += left
            if a:
                core[at(slice(0, a))] += right
        d = core
    return d
