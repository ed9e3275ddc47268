"""Multi-head scaled dot-product self-attention."""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from .. import init as _init
from ..backend import Array, DeviceError
from ..core import Backprop, Layer, _device_name, check_delta, check_input
from .dropout import Dropout
from .linear import Linear


class MultiHeadAttention(Layer):
    """Self-attention with ``num_heads`` heads (Vaswani et al. 2017).

    Shapes: x (N, T, E) -> y (N, T, E), E = embed_dim = heads · d. Sub-layers: ``qkv`` (a Linear
    E -> 3E whose output splits into queries, keys and values) and ``out`` (Linear E -> E).

    Forward, per head: ``S = Q Kᵀ / √d`` (N, h, T, T); hidden keys get weight zero:
    ``P = softmax_masked(S)`` over the key axis (a query that sees no key at all gets all-zero
    weights instead of NaN); ``P' = dropout(P)`` in training; ``O = P' V``; the heads are
    concatenated and ``y = out(O)``.

    δ rule: ``dV = P'ᵀ dO``, ``dP' = dO Vᵀ``, ``dP = dropout δ(dP')``,
    ``dS = P ⊙ (dP − Σ_keys dP ⊙ P) / √d``, ``dQ = dS K``, ``dK = dSᵀ Q``; then through ``qkv``.

    Masks: ``causal=True`` lets query t see keys ≤ t. ``key_padding_mask`` (call argument), a
    bool array (N, T) on the input's device: True marks a padded key that no query may see
    (PyTorch's convention).
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        dropout: float = 0.0,
        causal: bool = False,
        bias: bool = True,
        seed: int | None = None,
        rng: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MultiHeadAttention: {name} must be a positive int, got {value!r}")
        if embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.causal = bool(causal)
        generator = _init.generator(rng)
        self.qkv = Linear(embed_dim, 3 * embed_dim, bias, rng=generator, device=device, dtype=dtype)
        self.out = Linear(embed_dim, embed_dim, bias, rng=generator, device=device, dtype=dtype)
        self.attention_dropout = Dropout(dropout, seed=seed) if dropout > 0 else None

    def _visible(self, x: Array, key_padding_mask: Any, xp: Any) -> Array | None:
        """Bool array broadcastable to (N, h, T, T): True where a query may see a key."""
        N, T = x.shape[0], x.shape[1]
        visible = None
        if key_padding_mask is not None:
            mask = key_padding_mask
            if not backend.is_array(mask):
                raise TypeError(f"{self.describe()}: expected key_padding_mask as a bool array, got {type(mask).__name__}")
            if not backend.same_device(mask, x):
                raise DeviceError(f"{self.describe()}: key_padding_mask is on {_device_name(mask)} but the input on {_device_name(x)}")
            if mask.dtype != xp.bool:
                raise TypeError(f"{self.describe()}: expected a bool key_padding_mask (True = padded), got dtype {backend.dtype_name(mask.dtype)}")
            if tuple(mask.shape) != (N, T):
                raise ValueError(
                    f"{self.describe()}: expected key_padding_mask of shape (N, T) = {(N, T)}, got {tuple(mask.shape)}"
                )
            visible = xp.logical_not(mask)[:, None, None, :]
        if self.causal:
            rows = xp.arange(T, device=x.device)
            lower = rows[:, None] >= rows[None, :]
            visible = lower if visible is None else xp.logical_and(visible, lower)
        return visible

    def forward(self, x: Array, train: bool, key_padding_mask: Array | None = None) -> tuple[Array, Backprop]:
        check_input(self, x, ndim=3, features=self.embed_dim, like=self.qkv.weight.value)
        xp = backend.namespace(x)
        visible = self._visible(x, key_padding_mask, xp)
        N, T, E = x.shape
        h, d = self.num_heads, self.head_dim
        scale = 1.0 / math.sqrt(d)

        qkv, qkv_backprop = self.qkv(x, train)
        qkv = xp.permute_dims(xp.reshape(qkv, (N, T, 3, h, d)), (2, 0, 3, 1, 4))  # (3, N, h, T, d)
        q, k, v = qkv[0, ...] * scale, qkv[1, ...], qkv[2, ...]  # scaling Q costs less than S
        scores = q @ xp.matrix_transpose(k)
        if visible is not None:
            scores = xp.where(visible, scores, float(xp.finfo(x.dtype).min))
        e = xp.exp(scores - xp.max(scores, axis=-1, keepdims=True))
        if key_padding_mask is not None:  # a row may hide every key: its weights must be 0, not 1/T
            e = xp.where(visible, e, 0.0)
            total = xp.sum(e, axis=-1, keepdims=True)
            total = xp.where(total > 0, total, 1.0)
        else:  # causal or no mask: every query sees itself, and hidden keys give exp(−huge) = 0
            total = xp.sum(e, axis=-1, keepdims=True)
        weights = e / total
        dropped, dropout_backprop = (weights, None) if self.attention_dropout is None else self.attention_dropout(weights, train)
        heads = dropped @ v  # (N, h, T, d)
        merged = xp.reshape(xp.permute_dims(heads, (0, 2, 1, 3)), (N, T, E))
        y, out_backprop = self.out(merged, train)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, (N, T, E))
            d_heads = xp.permute_dims(xp.reshape(out_backprop(dy), (N, T, h, d)), (0, 2, 1, 3))
            d_weights = d_heads @ xp.matrix_transpose(v)
            if dropout_backprop is not None:
                d_weights = dropout_backprop(d_weights)
            d_scores = weights * (d_weights - xp.sum(d_weights * weights, axis=-1, keepdims=True))
            d_qkv = xp.empty((N, T, 3, h, d), dtype=dy.dtype, device=dy.device)
            by_part = xp.permute_dims(d_qkv, (2, 0, 3, 1, 4))  # a view (3, N, h, T, d) to write into
            by_part[0, ...] = (d_scores @ k) * scale
            by_part[1, ...] = xp.matrix_transpose(d_scores) @ q
            by_part[2, ...] = xp.matrix_transpose(dropped) @ d_heads
            return qkv_backprop(xp.reshape(d_qkv, (N, T, 3 * E)))

        return y, backprop

    def extra_repr(self) -> str:
        extra = ", causal=True" if self.causal else ""
        if self.attention_dropout is not None:
            extra += f", dropout={self.attention_dropout.p}"
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}{extra}"
