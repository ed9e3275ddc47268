"""Gradient clipping, by global norm and by value, in place and without a host sync."""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

from .. import backend
from ..backend import Array
from ..core import Layer, Parameter


def _on_grad_device(function: Any) -> Any:
    """Run in the device context of the first gradient (CuPy puts new arrays on the current GPU)."""

    @functools.wraps(function)
    def wrapper(params: Any, *args: Any, **kwargs: Any) -> Any:
        params = _with_grad(params)
        with backend.device_context(params[0].grad if params else None):
            return function(params, *args, **kwargs)

    return wrapper


def _with_grad(params: "Layer | Iterable[Parameter]") -> list[Parameter]:
    params = params.parameters() if isinstance(params, Layer) else params
    return [p for p in params if p.grad is not None]


@_on_grad_device
def global_grad_norm(params: "Layer | Iterable[Parameter]") -> Array | None:
    """``sqrt(Σ_p ‖∇p‖²)`` as a 0-d array on the parameters' device (``None`` if no grads)."""
    total: Any = None
    for p in _with_grad(params):
        xp = backend.namespace(p.grad)
        squared = xp.sum(p.grad * p.grad)
        total = squared if total is None else total + squared
    if total is None:
        return None
    return backend.namespace(total).sqrt(total)


@_on_grad_device
def clip_grad_norm(params: "Layer | Iterable[Parameter]", max_norm: float, eps: float = 1e-6) -> Array | None:
    """Scale all gradients by ``min(1, max_norm / (norm + eps))``; returns the norm before clipping."""
    if not max_norm > 0:
        raise ValueError(f"clip_grad_norm: max_norm must be > 0, got {max_norm}")
    with_grad = _with_grad(params)
    norm = global_grad_norm(with_grad)
    if norm is None:
        return None
    xp = backend.namespace(norm)
    scale = xp.minimum(max_norm / (norm + eps), 1.0)
    for p in with_grad:
        p.grad *= xp.astype(scale, p.grad.dtype)
    return norm


@_on_grad_device
def clip_grad_value(params: "Layer | Iterable[Parameter]", clip_value: float) -> None:
    """Clamp every gradient entry to ``[−clip_value, clip_value]``."""
    if not clip_value > 0:
        raise ValueError(f"clip_grad_value: clip_value must be > 0, got {clip_value}")
    for p in _with_grad(params):
        p.grad = backend.namespace(p.grad).clip(p.grad, -clip_value, clip_value)
