"""Transformer blocks: an encoder block (self-attention, MLP) and a decoder block (causal
self-attention, cross-attention to a memory, MLP), pre-norm or post-norm."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .. import init as _init
from ..backend import Array
from ..containers import Residual, Sequential
from ..core import Backprop, Layer, check_input
from .activations import GELU, ReLU
from .attention import MultiHeadAttention
from .dropout import Dropout
from .layer_norm import LayerNorm
from .linear import Linear

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


def _offset(seed: int | None, k: int) -> int | None:
    """The k-th dropout seed of a block: ``seed + k``, or None (each draws its own)."""
    return None if seed is None else seed + k


def _activation(name: str) -> Layer:
    return ReLU() if name == "relu" else GELU("tanh" if name == "gelu_tanh" else "none")


def _check_options(owner: str, embed_dim: int, mlp_ratio: float, activation: str) -> int:
    hidden = int(round(mlp_ratio * embed_dim))
    if hidden <= 0:
        raise ValueError(f"{owner}: mlp_ratio * embed_dim must be >= 1, got {mlp_ratio} * {embed_dim}")
    if activation not in ACTIVATIONS:
        raise ValueError(f"{owner}: activation must be one of {ACTIVATIONS}, got {activation!r}")
    return hidden


Branch = Callable[[Array], tuple[Array, Callable[[Array], tuple[Array, Any]]]]


def _residual(x: Array, train: bool, norm: Layer, branch: Branch, norm_first: bool) -> tuple[Array, Callable]:
    """One sub-layer with its residual connection and norm.

    pre-norm: ``y = x + f(LN(x))``, δ: ``dx = dy + LNᵀ(fᵀ(dy))``;
    post-norm: ``y = LN(x + f(x))``, δ: ``ds = LNᵀ(dy)``, ``dx = ds + fᵀ(ds)``.
    ``branch(a) -> (f, backprop)`` whose backprop returns ``(da, extra)`` (extra: the δ of a
    memory, or None); the returned backprop gives ``(dx, extra)``.
    """
    if norm_first:
        a, norm_backprop = norm(x, train)
        f, branch_backprop = branch(a)

        def backprop_pre(dy: Array) -> tuple[Array, Any]:
            da, extra = branch_backprop(dy)
            return dy + norm_backprop(da), extra

        return x + f, backprop_pre
    f, branch_backprop = branch(x)
    y, norm_backprop = norm(x + f, train)

    def backprop_post(dy: Array) -> tuple[Array, Any]:
        ds = norm_backprop(dy)
        dx, extra = branch_backprop(ds)
        return ds + dx, extra

    return y, backprop_post


def _attention_branch(attention: Layer, dropout: Layer, train: bool, **call: Any) -> Branch:
    """``a -> Dropout(MHA(a, ...))``; the backprop returns ``(da, d_memory or None)``."""

    def branch(a: Array):
        m, attention_backprop = attention(a, train, **call)
        f, dropout_backprop = dropout(m, train)

        def backprop(df: Array) -> tuple[Array, Any]:
            delta = attention_backprop(dropout_backprop(df))
            return delta if isinstance(delta, tuple) else (delta, None)

        return f, backprop

    return branch


def _mlp_branch(mlp: Sequential, train: bool) -> Branch:
    """``a -> Dropout(act(a W₁ᵀ + b₁) W₂ᵀ + b₂)`` with mlp = [norm, Linear, act, Linear, Dropout]."""

    def branch(a: Array):
        backprops = []
        for layer in mlp.layers[1:]:
            a, layer_backprop = layer(a, train)
            backprops.append(layer_backprop)

        def backprop(df: Array) -> tuple[Array, None]:
            for layer_backprop in reversed(backprops):
                df = layer_backprop(df)
            return df, None

        return a, backprop

    return branch


def _masks(**masks: Any) -> dict[str, Any]:
    return {name: mask for name, mask in masks.items() if mask is not None}


class TransformerEncoderBlock(Layer):
    """Transformer encoder block: self-attention and an MLP, each with a residual connection.

    Pre-norm (``norm_first=True``, the default; GPT-2, Xiong et al. 2020)::

        h = x + Dropout(MHA(LN₁(x)))
        y = h + Dropout(act(LN₂(h) W₁ᵀ + b₁) W₂ᵀ + b₂)

    Post-norm (``norm_first=False``; Vaswani et al. 2017, PyTorch's default)::

        h = LN₁(x + Dropout(MHA(x)))
        y = LN₂(h + Dropout(act(h W₁ᵀ + b₁) W₂ᵀ + b₂))

    Arguments:
        embed_dim: E, the feature size of x and y. num_heads: attention heads (E divisible).
        mlp_ratio: the MLP's hidden width is ``round(mlp_ratio · E)``.
        dropout: on each branch's output (after attention, after the MLP).
        attention_dropout: on the attention weights.
        causal: each step attends only to steps ≤ itself.
        activation: ``"gelu"`` (exact, with erf), ``"gelu_tanh"`` (the tanh approximation, as
            GPT-2; cheaper on NumPy, whose erf comes from SciPy) or ``"relu"``.
        norm_first: pre-norm (True) or post-norm (False), as PyTorch's ``norm_first``.
        eps: the LayerNorms' ε. seed: first dropout seed (the block uses seed, seed+1, seed+2).
        rng: seed or generator for the weights. device, dtype: where the parameters live.

    Call: ``block(x, train, *, key_padding_mask=None, attn_mask=None)``, x (N, T, E) ->
    y (N, T, E); the masks are :class:`MultiHeadAttention`'s (key_padding_mask bool (N, T),
    True = padded; attn_mask (T, T) or (N·heads, T, T), bool True = hidden, or additive float).

    δ rule: through each sub-layer in reverse: pre-norm ``dx = dy + LN₁ᵀ(MHAᵀ(dy))``, post-norm
    ``ds = LN₁ᵀ(dy)``, ``dx = ds + MHAᵀ(ds)`` (likewise for the MLP, which comes first).

    Parameters (the same names for both norm orders): ``attention.body.0`` LN₁,
    ``attention.body.1`` the MultiHeadAttention (``qkv``, ``out``), ``mlp.body.0`` LN₂,
    ``mlp.body.1`` W₁ (hidden, E), ``mlp.body.3`` W₂ (E, hidden), each Linear computing
    ``x Wᵀ + b`` with PyTorch's layout (``linear1.weight`` is ``mlp.body.1.weight``). Unlike
    PyTorch's layer, there is no dropout between the MLP's activation and W₂.
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
        norm_first: bool = True,
        eps: float = 1e-5,
        seed: int | None = None,
        rng: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        hidden = _check_options("TransformerEncoderBlock", embed_dim, mlp_ratio, activation)
        generator = _init.generator(rng)
        where = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.hidden = embed_dim, num_heads, hidden
        self.activation, self.norm_first = activation, bool(norm_first)
        self.attention = Residual(Sequential(
            LayerNorm(embed_dim, eps, **where),
            MultiHeadAttention(embed_dim, num_heads, dropout=attention_dropout, causal=causal, seed=_offset(seed, 0), rng=generator, **where),
            Dropout(dropout, seed=_offset(seed, 1)),
        ))
        self.mlp = Residual(Sequential(
            LayerNorm(embed_dim, eps, **where),
            Linear(embed_dim, hidden, rng=generator, **where),
            _activation(activation),
            Linear(hidden, embed_dim, rng=generator, **where),
            Dropout(dropout, seed=_offset(seed, 2)),
        ))

    def forward(self, x: Array, train: bool, key_padding_mask: Array | None = None,
                attn_mask: Array | None = None) -> tuple[Array, Backprop]:
        check_input(self, x, ndim=3, features=self.embed_dim, like=self.mlp.body[1].weight.value)
        norm1, attention, dropout1 = self.attention.body.layers
        masks = _masks(key_padding_mask=key_padding_mask, attn_mask=attn_mask)
        h, attention_backprop = _residual(x, train, norm1, _attention_branch(attention, dropout1, train, **masks), self.norm_first)
        y, mlp_backprop = _residual(h, train, self.mlp.body.layers[0], _mlp_branch(self.mlp.body, train), self.norm_first)

        def backprop(dy: Array) -> Array:
            return attention_backprop(mlp_backprop(dy)[0])[0]

        return y, backprop

    def extra_repr(self) -> str:
        extra = "" if self.activation == "gelu" else f", activation={self.activation!r}"
        extra += "" if self.norm_first else ", norm_first=False"
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, hidden={self.hidden}{extra}"


class TransformerDecoderBlock(Layer):
    """Transformer decoder block: causal self-attention, cross-attention to a memory (the
    encoder's output), and an MLP, each with a residual connection.

    Pre-norm (``norm_first=True``, the default)::

        h = x + Dropout(SelfMHA(LN₁(x)))                       # causal
        g = h + Dropout(CrossMHA(LN₂(h), key=memory))          # memory is not normalised here
        y = g + Dropout(act(LN₃(g) W₁ᵀ + b₁) W₂ᵀ + b₂)

    Post-norm (``norm_first=False``, as PyTorch's default ``TransformerDecoderLayer``)::

        h = LN₁(x + Dropout(SelfMHA(x)));  g = LN₂(h + Dropout(CrossMHA(h, key=memory)))
        y = LN₃(g + Dropout(act(g W₁ᵀ + b₁) W₂ᵀ + b₂))

    Arguments: as :class:`TransformerEncoderBlock`, plus ``memory_dim``, the memory's feature
    size (the cross-attention's kdim = vdim; default E), and ``causal`` (default True: step t
    of x attends to steps ≤ t; the cross-attention is never causal). Dropout seeds: seed
    (self-attention weights), seed+1, seed+2 (cross-attention weights), seed+3, seed+4.

    Call: ``block(x, train, memory=memory, *, key_padding_mask=None, attn_mask=None,
    memory_key_padding_mask=None, memory_mask=None)``: x (N, T, E), memory (N, S, memory_dim)
    -> y (N, T, E). key_padding_mask (N, T) and attn_mask (T, T) or (N·heads, T, T) go to the
    self-attention (PyTorch's tgt_key_padding_mask, tgt_mask); memory_key_padding_mask (N, S)
    and memory_mask (T, S) or (N·heads, T, S) to the cross-attention. Masks follow
    :class:`MultiHeadAttention`.

    δ rule: through the sub-layers in reverse; ``backprop(dy)`` returns ``(dx, d_memory)``, the
    memory's δ coming from the cross-attention's key/value projections (feed it to the encoder's
    backprop).

    Parameters: ``attention.body.{0: LN₁, 1: self MHA}``, ``cross_attention.body.{0: LN₂,
    1: cross MHA}``, ``mlp.body.{0: LN₃, 1: W₁, 3: W₂}`` (PyTorch's Linear layout). The
    cross MHA packs its projections in ``qkv`` when memory_dim = E, else ``q_proj``/``k_proj``/
    ``v_proj``. No dropout between the MLP's activation and W₂ (PyTorch has one).

    PyTorch twin: ``torch.nn.TransformerDecoderLayer(E, num_heads, dim_feedforward=hidden,
    activation="relu" or "gelu", batch_first=True, norm_first=...)``, its weights mapped by
    :mod:`gradflow.interop` (outputs and gradients agree in inference or without dropout).
    Differences: gradflow's ``causal=True`` builds the self-attention mask that PyTorch takes as
    ``tgt_mask=nn.Transformer.generate_square_subsequent_mask(T)``; PyTorch's cross-attention
    always has kdim = vdim = E (memory_dim ≠ E has no PyTorch twin layer); with dropout > 0
    the random draws and PyTorch's extra MLP dropout differ.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        memory_dim: int | None = None,
        mlp_ratio: float = 4.0,
        dropout: float = 0.0,
        attention_dropout: float = 0.0,
        causal: bool = True,
        activation: str = "gelu",
        norm_first: bool = True,
        eps: float = 1e-5,
        seed: int | None = None,
        rng: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        hidden = _check_options("TransformerDecoderBlock", embed_dim, mlp_ratio, activation)
        memory_dim = embed_dim if memory_dim is None else memory_dim
        generator = _init.generator(rng)
        where = {"device": device, "dtype": dtype}
        self.embed_dim, self.num_heads, self.hidden, self.memory_dim = embed_dim, num_heads, hidden, memory_dim
        self.activation, self.norm_first = activation, bool(norm_first)
        self.attention = Residual(Sequential(
            LayerNorm(embed_dim, eps, **where),
            MultiHeadAttention(embed_dim, num_heads, dropout=attention_dropout, causal=causal, seed=_offset(seed, 0), rng=generator, **where),
            Dropout(dropout, seed=_offset(seed, 1)),
        ))
        self.cross_attention = Residual(Sequential(
            LayerNorm(embed_dim, eps, **where),
            MultiHeadAttention(embed_dim, num_heads, dropout=attention_dropout, kdim=memory_dim, vdim=memory_dim,
                               seed=_offset(seed, 2), rng=generator, **where),
            Dropout(dropout, seed=_offset(seed, 3)),
        ))
        self.mlp = Residual(Sequential(
            LayerNorm(embed_dim, eps, **where),
            Linear(embed_dim, hidden, rng=generator, **where),
            _activation(activation),
            Linear(hidden, embed_dim, rng=generator, **where),
            Dropout(dropout, seed=_offset(seed, 4)),
        ))

    def forward(self, x: Array, train: bool, memory: Array | None = None, *, key_padding_mask: Array | None = None,
                attn_mask: Array | None = None, memory_key_padding_mask: Array | None = None,
                memory_mask: Array | None = None) -> tuple[Array, Backprop]:
        like = self.mlp.body[1].weight.value
        check_input(self, x, ndim=3, features=self.embed_dim, like=like)
        if memory is None:
            raise TypeError(f"{self.describe()}: memory is required (the encoder's output, (N, S, {self.memory_dim}))")
        check_input(self, memory, ndim=3, features=self.memory_dim, like=like, what="memory")
        if memory.shape[0] != x.shape[0]:
            raise ValueError(f"{self.describe()}: memory has batch size {memory.shape[0]} but the input {x.shape[0]}")
        norm1, self_attention, dropout1 = self.attention.body.layers
        norm2, cross_attention, dropout2 = self.cross_attention.body.layers
        # Every argument is checked before any dropout draws (the self-attention checks its own
        # masks before its first draw): a bad call changes no state.
        cross_attention.check_call(x, memory, None, memory_key_padding_mask, memory_mask,
                                   names=("memory_key_padding_mask", "memory_mask"))
        self_masks = _masks(key_padding_mask=key_padding_mask, attn_mask=attn_mask)
        cross_masks = _masks(key_padding_mask=memory_key_padding_mask, attn_mask=memory_mask)
        h, self_backprop = _residual(x, train, norm1, _attention_branch(self_attention, dropout1, train, **self_masks),
                                     self.norm_first)
        g, cross_backprop = _residual(h, train, norm2, _attention_branch(cross_attention, dropout2, train, key=memory,
                                                                         **cross_masks), self.norm_first)
        y, mlp_backprop = _residual(g, train, self.mlp.body.layers[0], _mlp_branch(self.mlp.body, train), self.norm_first)

        def backprop(dy: Array) -> tuple[Array, Array]:
            dg = mlp_backprop(dy)[0]
            dh, d_memory = cross_backprop(dg)
            return self_backprop(dh)[0], d_memory

        return y, backprop

    def extra_repr(self) -> str:
        extra = "" if self.memory_dim == self.embed_dim else f", memory_dim={self.memory_dim}"
        extra += "" if self.activation == "gelu" else f", activation={self.activation!r}"
        extra += "" if self.norm_first else ", norm_first=False"
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, hidden={self.hidden}{extra}"
