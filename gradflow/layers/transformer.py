"""A pre-norm transformer encoder block."""

from __future__ import annotations

from typing import Any

from .. import init as _init
from ..backend import Array
from ..containers import Residual, Sequential
from ..core import Backprop, Layer, check_input
from .activations import GELU
from .attention import MultiHeadAttention
from .dropout import Dropout
from .layer_norm import LayerNorm
from .linear import Linear


def _offset(seed: int | None, k: int) -> int | None:
    """The k-th dropout seed of a block: ``seed + k``, or None (each draws its own)."""
    return None if seed is None else seed + k


class TransformerEncoderBlock(Layer):
    """Pre-norm transformer block (as in GPT-2 and Xiong et al. 2020):

        h = x + Dropout(MHA(LN₁(x)))
        y = h + Dropout(W₂ GELU(W₁ LN₂(h) + b₁) + b₂)

    Shapes: x (N, T, E) -> y (N, T, E); the MLP's hidden width is ``mlp_ratio · E``.
    ``activation``: ``"gelu"`` (exact, with erf, as PyTorch's default) or ``"gelu_tanh"`` (the
    tanh approximation, as GPT-2; about 10x cheaper on NumPy, whose erf comes from SciPy).
    δ rule: each residual branch gives ``dx = dy + branch.backprop(dy)`` (see
    :class:`~gradflow.containers.Residual`), the MLP branch first, then the attention branch.
    ``key_padding_mask`` (N, T) bool, True = padded, reaches the attention through the containers.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        causal: bool = False,
        activation: str = "gelu",
        eps: float = 1e-5,
        seed: int | None = None,
        rng: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        hidden = int(round(mlp_ratio * embed_dim))
        if hidden <= 0:
            raise ValueError(f"TransformerEncoderBlock: mlp_ratio * embed_dim must be >= 1, got {mlp_ratio} * {embed_dim}")
        if activation not in ("gelu", "gelu_tanh"):
            raise ValueError(f"TransformerEncoderBlock: activation must be 'gelu' or 'gelu_tanh', got {activation!r}")
        generator = _init.generator(rng)
        where = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.hidden = embed_dim, num_heads, hidden
        self.attention = Residual(Sequential(
            LayerNorm(embed_dim, eps, **where),
            MultiHeadAttention(embed_dim, num_heads, dropout=attention_dropout, causal=causal, seed=_offset(seed, 0), rng=generator, **where),
            Dropout(dropout, seed=_offset(seed, 1)),
        ))
        self.mlp = Residual(Sequential(
            LayerNorm(embed_dim, eps, **where),
            Linear(embed_dim, hidden, rng=generator, **where),
            GELU("tanh" if activation == "gelu_tanh" else "none"),
            Linear(hidden, embed_dim, rng=generator, **where),
            Dropout(dropout, seed=_offset(seed, 2)),
        ))

    def forward(self, x: Array, train: bool, key_padding_mask: Array | None = None) -> tuple[Array, Backprop]:
        check_input(self, x, ndim=3, features=self.embed_dim, like=self.mlp.body[1].weight.value)
        extra = {} if key_padding_mask is None else {"key_padding_mask": key_padding_mask}
        h, attention_backprop = self.attention(x, train, **extra)
        y, mlp_backprop = self.mlp(h, train)
        return y, lambda dy: attention_backprop(mlp_backprop(dy))

    def extra_repr(self) -> str:
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, hidden={self.hidden}"
