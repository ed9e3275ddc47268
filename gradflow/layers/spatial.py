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
