"""Gradient clipping, by global norm and by value, in place and without a host sync.

Both functions take a fixed number of array operations per device and dtype, however many
parameters there are: the gradients are packed into one flat array (one ``concat``), clipped
there, and every ``p.grad`` becomes a view of it (the optimizer's own clipping works on its
flat buffers directly). The global norm is the ``norm_type``-norm of all gradient entries
together, ``(Σ_p Σ_i |g_pi|^q)^(1/q)`` (``max |g_pi|`` for ``math.inf``), as in
``torch.nn.utils.clip_grad_norm_``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from .. import backend
from ..backend import Array
from ..core import Layer, Parameter
from .flat import bucket_key, device_context


def _with_grad(params: "Layer | Iterable[Parameter]") -> list[Parameter]:
    params = params.parameters() if isinstance(params, Layer) else params
    return [p for p in params if p.grad is not None]


def _flat_grads(with_grad: list[Parameter]) -> list[Array]:
    """One flat gradient per (device, dtype); each ``p.grad`` becomes a view of it."""
    groups: dict[tuple[str, str], list[Parameter]] = {}
    for p in with_grad:
        groups.setdefault(bucket_key(p), []).append(p)
    flats = []
    for members in groups.values():
        if len(members) == 1:
            flats.append(members[0].grad)
            continue
        xp = backend.namespace(members[0].grad)
        with device_context(members[0].grad):
            flat = xp.concat([xp.reshape(p.grad, (-1,)) for p in members])
        offset = 0
        for p in members:
            p.grad = xp.reshape(flat[offset:offset + p.size], p.shape)
            offset += p.size
        flats.append(flat)
    return flats


def norm_of_arrays(arrays: list[Array], norm_type: float = 2.0) -> Array:
    """The ``norm_type``-norm of every entry of ``arrays`` together, a 0-d array (on the first
    array's device; the arrays must share one device)."""
    total: Any = None
    for g in arrays:
        xp = backend.namespace(g)
        with device_context(g):
            if norm_type == math.inf:
                part = xp.max(xp.abs(g)) if g.size else xp.zeros((), dtype=g.dtype)
            elif norm_type == 2.0:
                part = xp.sum(g * g)
            elif norm_type == 1.0:
                part = xp.sum(xp.abs(g))
            else:
                part = xp.sum(xp.abs(g) ** norm_type)
            if total is None:
                total = part
            elif norm_type == math.inf:
                total = xp.maximum(total, xp.astype(part, total.dtype) if part.dtype != total.dtype else part)
            else:
                total = total + part
    xp = backend.namespace(total)
    with device_context(total):
        if norm_type == math.inf or norm_type == 1.0:
            return total
        if norm_type == 2.0:
            return xp.sqrt(total)
        return total ** (1.0 / norm_type)


def clip_arrays_by_norm(arrays: list[Array], max_norm: float, norm_type: float = 2.0, eps: float = 1e-6) -> Array | None:
    """Scale ``arrays`` in place by ``min(1, max_norm / (norm + eps))``; returns the norm before."""
    if not arrays:
        return None
    norm = norm_of_arrays(arrays, norm_type)
    xp = backend.namespace(norm)
    with device_context(norm):
        scale = xp.minimum(max_norm / (norm + eps), 1.0)
        for g in arrays:
            g *= scale if scale.dtype == g.dtype else xp.astype(scale, g.dtype)
    return norm


def clip_arrays_by_value(arrays: list[Array], clip_value: float) -> None:
    """Clamp every entry of ``arrays`` to ``[−clip_value, clip_value]``, in place."""
    for g in arrays:
        with device_context(g):
            g[...] = backend.namespace(g).clip(g, -clip_value, clip_value)


def global_grad_norm(params: "Layer | Iterable[Parameter]", norm_type: float = 2.0) -> Array | None:
    """The ``norm_type``-norm of all gradients together (``sqrt(Σ_p ‖∇p‖²)`` by default), as a
    0-d array on the parameters' device; ``None`` if no parameter has a gradient.

    params: a Layer or Parameters. norm_type: 2, 1, any number > 0, or ``math.inf`` (the
    largest absolute entry).
    """
    _check_norm_type("global_grad_norm", norm_type)
    with_grad = _with_grad(params)
    if not with_grad:
        return None
    return norm_of_arrays(_flat_grads(with_grad), float(norm_type))


def clip_grad_norm(params: "Layer | Iterable[Parameter]", max_norm: float, eps: float = 1e-6,
                   norm_type: float = 2.0) -> Array | None:
    """Scale all gradients by ``min(1, max_norm / (norm + eps))``; returns the norm before clipping.

    params: a Layer or Parameters (those without a gradient are ignored). max_norm: > 0.
    eps: added to the norm (PyTorch uses 1e-6 too). norm_type: 2, 1, any number > 0, or
    ``math.inf``. In place (each ``p.grad`` becomes a view of one flat array per device and
    dtype) and without a host sync: the norm stays a 0-d array on the device.
    """
    if isinstance(max_norm, bool) or not isinstance(max_norm, (int, float)) or not max_norm > 0 \
            or not math.isfinite(max_norm):
        raise ValueError(f"clip_grad_norm: max_norm must be > 0, got {max_norm}")
    _check_norm_type("clip_grad_norm", norm_type)
    with_grad = _with_grad(params)
    if not with_grad:
        return None
    return clip_arrays_by_norm(_flat_grads(with_grad), float(max_norm), float(norm_type), eps)


def clip_grad_value(params: "Layer | Iterable[Parameter]", clip_value: float) -> None:
    """Clamp every gradient entry to ``[−clip_value, clip_value]``, in place.

    params: a Layer or Parameters (those without a gradient are ignored). clip_value: > 0.
    """
    if isinstance(clip_value, bool) or not isinstance(clip_value, (int, float)) or not clip_value > 0 \
            or not math.isfinite(clip_value):
        raise ValueError(f"clip_grad_value: clip_value must be > 0, got {clip_value}")
    with_grad = _with_grad(params)
    if with_grad:
        clip_arrays_by_value(_flat_grads(with_grad), float(clip_value))


def _check_norm_type(owner: str, norm_type: Any) -> None:
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)) or not norm_type > 0:
        raise ValueError(f"{owner}: norm_type must be a number > 0 or math.inf, got {norm_type!r}")
