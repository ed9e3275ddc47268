"""Multi-head scaled dot-product attention: self-attention and cross-attention."""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from .. import init as _init
from ..backend import Array, DeviceError
from ..core import Backprop, Layer, _device_name, check_delta, check_delta_like, check_input
from .dropout import Dropout
from .linear import Linear


class MultiHeadAttention(Layer):
    """Multi-head attention (Vaswani et al. 2017), batch first, as ``torch.nn.MultiheadAttention``.

    Arguments:
        embed_dim: E, the size of queries and of the output; ``E = num_heads · d``.
        num_heads: h, the number of heads; each works on d = E / h features.
        dropout: probability of zeroing an attention weight in training (0 = none).
        causal: query t sees only keys s ≤ t (a lower-triangular mask, also for T ≠ S).
        bias: whether the projections have biases.
        kdim: feature size of the key input (default E).
        vdim: feature size of the value input (default E). When kdim and vdim are both E the
            three input projections are packed into one Linear ``qkv`` (E -> 3E, weight (3E, E)
            with rows [queries | keys | values]: PyTorch's ``in_proj_weight``); otherwise they are
            separate Linears ``q_proj`` (E -> E), ``k_proj`` (kdim -> E), ``v_proj`` (vdim -> E).
            ``out`` (E -> E) is the output projection either way.
        seed: seed of the attention-dropout generator. rng: seed or generator for the weights.
        device: where the parameters live.
        dtype: the parameters' dtype.

    Call: ``layer(query, train, key=None, value=None, *, key_padding_mask=None, attn_mask=None,
    need_weights=False, average_weights=True)``.

    - query (N, T, E). Self-attention when ``key`` is None: keys and values come from the query.
    - key (N, S, kdim): cross-attention (e.g. a decoder attending to an encoder's memory).
      value (N, S, vdim) defaults to ``key`` (allowed when vdim == kdim).
    - key_padding_mask: bool (N, S), True marks a padded key that no query may see.
    - attn_mask: (T, S) for every sample and head, or (N·h, T, S) per sample and head (row
      ``n·h + head``, PyTorch's layout). A bool mask hides the keys where it is True; a floating
      mask (the query's dtype) is added to the scores, so ``-inf`` hides a key and finite values
      bias the weights. Masks are on the query's device.
    - need_weights: also return the attention weights P' (after dropout, the ones that multiply
      V): averaged over heads (N, T, S) when ``average_weights``, else per head (N, h, T, S).

    Forward, per head: ``Q = query W_qᵀ + b_q``, ``K = key W_kᵀ + b_k``, ``V = value W_vᵀ + b_v``
    (slices of one packed GEMM where possible); ``S = Q Kᵀ / √d + A`` (N, h, T, S) with A the
    additive mask; hidden keys get weight zero: ``P = softmax_masked(S)`` over the key axis (a
    query that sees no key at all gets all-zero weights instead of NaN, unlike PyTorch);
    ``P' = dropout(P)`` in training; ``O = P' V``; heads are concatenated and ``y = out(O)``.

    δ rule: ``dV = P'ᵀ dO``, ``dP' = dO Vᵀ (+ the weights' δ)``, ``dP = dropout δ(dP')``,
    ``dS = P ⊙ (dP − Σ_keys dP ⊙ P)``, ``dQ = dS K / √d``, ``dK = dSᵀ Q / √d``; then through the
    projections: ``d_query = dQ W_q``, ``d_key = dK W_k``, ``d_value = dV W_v`` (summed into
    one δ for self-attention). Gradients: ``dW_q = dQᵀ query``, ``db_q = Σ dQ`` and likewise for
    K, V and the output projection.

    Returns ``(y, backprop)`` with y (N, T, E), or ``((y, weights), backprop)`` with
    ``need_weights``; that backprop takes ``dy`` or a pair ``(dy, d_weights)`` (either may be
    None). ``backprop`` returns d_query for self-attention, ``(d_query, d_key)`` when called with
    ``key`` only (value = key), and ``(d_query, d_key, d_value)`` when ``value`` is given too.

    Example::

        mha = MultiHeadAttention(8, 2, kdim=6, rng=0)
        y, backprop = mha(query, train=True, key=memory)   # query (N, T, 8), memory (N, S, 6)
        d_query, d_memory = backprop(dy)
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        *,
        dropout: float = 0.0,
        causal: bool = False,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        seed: int | None = None,
        rng: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        kdim = embed_dim if kdim is None else kdim
        vdim = embed_dim if vdim is None else vdim
        for name, value in (("embed_dim", embed_dim), ("num_heads", num_heads), ("kdim", kdim), ("vdim", vdim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"MultiHeadAttention: {name} must be a positive int, got {value!r}")
        if embed_dim % num_heads:
            raise ValueError(f"MultiHeadAttention: embed_dim ({embed_dim}) must be divisible by num_heads ({num_heads})")
        self.embed_dim, self.num_heads = embed_dim, num_heads
        self.head_dim = embed_dim // num_heads
        self.kdim, self.vdim = kdim, vdim
        self.causal = bool(causal)
        self.packed = kdim == embed_dim and vdim == embed_dim
        generator = _init.generator(rng)
        where = {"rng": generator, "device": device, "dtype": dtype}
        if self.packed:
            self.qkv = Linear(embed_dim, 3 * embed_dim, bias, **where)
        else:
            self.q_proj = Linear(embed_dim, embed_dim, bias, **where)
            self.k_proj = Linear(kdim, embed_dim, bias, **where)
            self.v_proj = Linear(vdim, embed_dim, bias, **where)
        self.out = Linear(embed_dim, embed_dim, bias, **where)
        self.attention_dropout = Dropout(dropout, seed=seed) if dropout > 0 else None

    # -- checks ----------------------------------------------------------------------------------
    def _check_inputs(self, query: Any, key: Any, value: Any) -> tuple[Any, Any]:
        like = self.out.weight.value
        check_input(self, query, ndim=3, features=self.embed_dim, like=like, what="query")
        if key is None:
            if value is not None:
                raise ValueError(f"{self.describe()}: got a value but no key; pass key= (value defaults to key)")
            if not self.packed:
                raise ValueError(f"{self.describe()}: kdim/vdim differ from embed_dim, so key= (and value=) are required")
            return None, None
        check_input(self, key, ndim=3, features=self.kdim, like=like, what="key")
        if key.shape[0] != query.shape[0]:
            raise ValueError(f"{self.describe()}: key has batch size {key.shape[0]} but the query {query.shape[0]}")
        if key.shape[1] == 0:
            raise ValueError(f"{self.describe()}: expected a key of at least one step, got shape {tuple(key.shape)}")
        if value is None:
            if self.vdim != self.kdim:
                raise ValueError(f"{self.describe()}: vdim ({self.vdim}) differs from kdim ({self.kdim}), so value= is required")
            return key, None
        check_input(self, value, ndim=3, features=self.vdim, like=like, what="value")
        if tuple(value.shape[:2]) != tuple(key.shape[:2]):
            raise ValueError(f"{self.describe()}: expected value of shape (N, S, vdim) = "
                             f"{(*key.shape[:2], self.vdim)} (the key's N and S), got {tuple(value.shape)}")
        return key, value

    def _check_mask(self, name: str, mask: Any, query: Array, allowed: dict[str, tuple[int, ...]], bool_only: bool) -> None:
        if not backend.is_array(mask) or not hasattr(mask, "dtype"):
            kind = "bool array" if bool_only else "bool or floating array"
            raise TypeError(f"{self.describe()}: expected {name} as a {kind}, got {type(mask).__name__}")
        if not backend.same_device(mask, query):
            raise DeviceError(f"{self.describe()}: {name} is on {_device_name(mask)} but the query on {_device_name(query)}")
        xp = backend.namespace(query)
        if mask.dtype != xp.bool and (bool_only or mask.dtype != query.dtype):
            expected = "bool (True = padded)" if bool_only else f"bool or {backend.dtype_name(query.dtype)} (the query's)"
            raise TypeError(f"{self.describe()}: expected {name} of dtype {expected}, got dtype {backend.dtype_name(mask.dtype)}")
        if tuple(mask.shape) not in allowed.values():
            shapes = " or ".join(f"{label} = {shape}" for label, shape in allowed.items())
            raise ValueError(f"{self.describe()}: expected {name} of shape {shapes}, got {tuple(mask.shape)}")

    def _lower_triangle(self, T: int, S: int, query: Array, xp: Any) -> Array:
        """The causal mask (T, S), True where s ≤ t; made once per shape and device."""
        cache = self.__dict__.setdefault("_causal_masks", {})
        key = (T, S, str(backend.device_of(query)), type(query))
        lower = cache.get(key)
        if lower is None:
            if len(cache) > 8:
                cache.clear()
            lower = xp.arange(T, device=query.device)[:, None] >= xp.arange(S, device=query.device)[None, :]
            cache[key] = lower
        return lower

    def check_call(self, query: Any, key: Any = None, value: Any = None, key_padding_mask: Any = None,
                   attn_mask: Any = None, names: tuple[str, str] = ("key_padding_mask", "attn_mask")) -> tuple[Any, Any]:
        """Raise a clear error for any bad argument of a call (nothing is computed); returns the
        (key, value) the call will use. ``names``: what the caller calls the two masks (a
        decoder block's ``memory_key_padding_mask``, ``memory_mask``), for the messages."""
        key, value = self._check_inputs(query, key, value)
        N, T = query.shape[0], query.shape[1]
        S = T if key is None else key.shape[1]
        if key_padding_mask is not None:
            self._check_mask(names[0], key_padding_mask, query, {"(N, S)": (N, S)}, bool_only=True)
        if attn_mask is not None:
            self._check_mask(names[1], attn_mask, query, {"(T, S)": (T, S), "(N·num_heads, T, S)": (N * self.num_heads, T, S)},
                             bool_only=False)
        return key, value

    # -- projections -----------------------------------------------------------------------------
    def _project(self, query: Array, key: Array | None, value: Array | None, train: bool, xp: Any):
        """Q, K, V as (N, h, L, d) views of the projections, and ``deltas() -> (slots, finish)``:
        ``slots`` are three ``(view, index)`` places where dQ, dK and dV (N, h, L, d) are to be
        written (head-major views of token-major buffers, so the projections' backward reads
        (N·L, ·) matrices without a copy), and ``finish()`` returns ``(d_query, d_key, d_value)``
        from them."""
        N, T, E = query.shape
        h, d = self.num_heads, self.head_dim

        def heads(a: Array, L: int, parts: int) -> Array:  # (N, L, parts·E) -> (parts, N, h, L, d)
            return xp.permute_dims(xp.reshape(a, (N, L, parts, h, d)), (2, 0, 3, 1, 4))

        def buffer(L: int, parts: int) -> tuple[Array, Array]:  # (N, L, parts, h, d) and its (parts, N, h, L, d) view
            merged = xp.empty((N, L, parts, h, d), dtype=query.dtype, device=query.device)
            return merged, xp.permute_dims(merged, (2, 0, 3, 1, 4))

        if key is None:  # self-attention: one GEMM for Q, K and V
            qkv, qkv_backprop = self.qkv(query, train)
            parts = heads(qkv, T, 3)

            def deltas_self():
                merged, view = buffer(T, 3)
                finish = lambda: (qkv_backprop(xp.reshape(merged, (N, T, 3 * E))), None, None)
                return [(view, (i, ...)) for i in range(3)], finish

            return parts[0, ...], parts[1, ...], parts[2, ...], deltas_self

        S = key.shape[1]
        if not self.packed:
            (q, q_back), (k, k_back), (v, v_back) = (
                self.q_proj(query, train), self.k_proj(key, train), self.v_proj(key if value is None else value, train))

            def deltas_separate():
                (mq, vq), (mk, vk), (mv, vv) = buffer(T, 1), buffer(S, 1), buffer(S, 1)

                def finish():
                    d_key = k_back(xp.reshape(mk, (N, S, E)))
                    d_value = v_back(xp.reshape(mv, (N, S, E)))
                    if value is None:  # the key was the value too
                        d_key, d_value = d_key + d_value, None
                    return q_back(xp.reshape(mq, (N, T, E))), d_key, d_value

                return [(vq, (0, ...)), (vk, (0, ...)), (vv, (0, ...))], finish

            return heads(q, T, 1)[0, ...], heads(k, S, 1)[0, ...], heads(v, S, 1)[0, ...], deltas_separate

        # Packed weights (3E, E), separate inputs: the query uses rows [0, E), the key [E, 2E) and
        # the value [2E, 3E); a key that is also the value takes [E, 3E) in one GEMM.
        W = self.qkv.weight.value
        b = None if self.qkv.bias is None else self.qkv.bias.value
        groups = [(query, 0, E), (key, E, 3 * E)] if value is None else [(query, 0, E), (key, E, 2 * E), (value, 2 * E, 3 * E)]
        flats, outputs = [], []
        for x, start, stop in groups:
            flat = xp.reshape(x, (-1, x.shape[-1]))
            y = flat @ W[start:stop, :].T
            if b is not None:
                y = y + b[start:stop]
            flats.append(flat)
            outputs.append(heads(y, x.shape[1], (stop - start) // E))
        q = outputs[0][0, ...]
        k, v = (outputs[1][0, ...], outputs[1][1, ...]) if value is None else (outputs[1][0, ...], outputs[2][0, ...])

        def deltas_packed():
            buffers = [buffer(T, 1)] + ([buffer(S, 2)] if value is None else [buffer(S, 1), buffer(S, 1)])
            views = [view for _, view in buffers]
            slots = [(views[0], (0, ...))] + ([(views[1], (0, ...)), (views[1], (1, ...))] if value is None
                                              else [(views[1], (0, ...)), (views[2], (0, ...))])

            def finish():
                deltas = [xp.reshape(merged, (-1, merged.shape[2] * E)) for merged, _ in buffers]
                self.qkv.weight.accumulate(xp.concat([delta.T @ flat for flat, delta in zip(flats, deltas)], axis=0))
                if b is not None:
                    self.qkv.bias.accumulate(xp.concat([xp.sum(delta, axis=0) for delta in deltas], axis=0))
                results = [xp.reshape(delta @ W[start:stop, :], tuple(x.shape))
                           for delta, (x, start, stop) in zip(deltas, groups)]
                return results[0], results[1], (results[2] if value is not None else None)

            return slots, finish

        return q, k, v, deltas_packed

    def _causal_scores_mask(self, T: int, S: int, query: Array, xp: Any) -> Array:
        """The causal mask as (T, S) additive scores: 0 where s ≤ t, −inf above; made once per
        shape, device and dtype, and added in place (no (N, h, T, S) select on every call)."""
        cache = self.__dict__.setdefault("_causal_additive", {})
        key = (T, S, str(backend.device_of(query)), type(query), str(query.dtype))
        mask = cache.get(key)
        if mask is None:
            if len(cache) > 8:
                cache.clear()
            lower = self._lower_triangle(T, S, query, xp)
            mask = xp.where(lower, xp.zeros((), dtype=query.dtype, device=query.device),
                            xp.full((), -math.inf, dtype=query.dtype, device=query.device))
            cache[key] = mask
        return mask

    # -- forward and δ ---------------------------------------------------------------------------
    def forward(
        self,
        query: Array,
        train: bool,
        key: Array | None = None,
        value: Array | None = None,
        *,
        key_padding_mask: Array | None = None,
        attn_mask: Array | None = None,
        need_weights: bool = False,
        average_weights: bool = True,
    ) -> tuple[Any, Backprop]:
        key, value = self.check_call(query, key, value, key_padding_mask, attn_mask)
        N, T, E = query.shape
        S = T if key is None else key.shape[1]
        h, d = self.num_heads, self.head_dim
        xp = backend.namespace(query)
        scale = 1.0 / math.sqrt(d)

        # Which keys each query may see (bool, broadcastable to (N, h, T, S)) and what is added.
        visible, additive = None, None
        if key_padding_mask is not None:
            visible = xp.logical_not(key_padding_mask)[:, None, None, :]
        if attn_mask is not None:
            mask = attn_mask if attn_mask.ndim == 2 else xp.reshape(attn_mask, (N, h, T, S))
            if mask.dtype == xp.bool:
                allowed = xp.logical_not(mask)
                visible = allowed if visible is None else xp.logical_and(visible, allowed)
            else:
                additive = mask
        causal_additive = None
        if self.causal:
            if visible is None:  # causal alone: added to the scores, in place
                causal_additive = self._causal_scores_mask(T, S, query, xp)
            else:
                visible = xp.logical_and(visible, self._lower_triangle(T, S, query, xp))
        # Only a causal mask (or none) guarantees every query sees a key (itself, or key 0).
        may_hide_all = key_padding_mask is not None or attn_mask is not None

        q, k, v, new_deltas = self._project(query, key, value, train, xp)
        q = q * scale  # scaling Q costs less than scaling S
        scores = q @ xp.matrix_transpose(k)
        # In place where the array is this call's own temporary: the (N, h, T, S) arrays are the
        # largest of the layer, and fresh ones cost page faults on every step.
        if additive is not None:
            scores += additive
        if causal_additive is not None:
            scores += causal_additive
        if visible is not None:
            scores = xp.where(visible, scores, -math.inf)
        weights = backend.primitives.softmax_(scores, empty_rows=may_hide_all)
        dropped, dropout_backprop = (weights, None) if self.attention_dropout is None else self.attention_dropout(weights, train)
        # O = P' V written head by head into a token-major (N, T, h, d) buffer: the output
        # projection reads it as (N, T, E) without a copy.
        merged = xp.empty((N, T, h, d), dtype=query.dtype, device=query.device)
        backend.primitives.matmul_into(xp.permute_dims(merged, (0, 2, 1, 3)), ..., dropped, v)
        y, out_backprop = self.out(xp.reshape(merged, (N, T, E)), train)
        shown = None
        if need_weights:
            shown = xp.mean(dropped, axis=1) if average_weights else dropped

        def backprop_core(dy: Array | None, d_shown: Array | None) -> Any:
            if dy is None:
                dy = xp.zeros_like(y)
            d_out = xp.reshape(out_backprop(dy), (N, T, h, d))
            d_heads = xp.permute_dims(d_out, (0, 2, 1, 3))  # dO (N, h, T, d), a view
            slots, finish = new_deltas()
            backend.primitives.matmul_into(*slots[2], xp.matrix_transpose(dropped), d_heads)  # dV = P'ᵀ dO
            d_weights = d_heads @ xp.matrix_transpose(v)
            if d_shown is not None:
                d_weights += d_shown[:, None, ...] / h if average_weights else d_shown
            if dropout_backprop is not None:
                d_weights = dropout_backprop(d_weights)
            if d_shown is None:
                # Σ_keys dP ⊙ P = Σ_keys dP' ⊙ P' = dO · O per query and head (O = P' V; dropout's
                # mask cancels): a dot over d features instead of a product over S keys.
                row = backend.primitives.row_dot(d_out, xp.reshape(merged, (N, T, h, d)))  # (N, T, h)
                d_weights -= xp.permute_dims(row, (0, 2, 1))[..., None]
            else:
                d_weights -= xp.sum(d_weights * weights, axis=-1, keepdims=True)
            d_weights *= weights  # now dS = P ⊙ (dP − Σ dP ⊙ P), in the buffer of dP
            backend.primitives.matmul_into(*slots[0], d_weights, k, scale)  # dQ = dS K / √d
            backend.primitives.matmul_into(*slots[1], xp.matrix_transpose(d_weights), q)  # dK = dSᵀ Q / √d
            d_query, d_key, d_value = finish()
            if key is None:
                return d_query
            return (d_query, d_key) if value is None else (d_query, d_key, d_value)

        if not need_weights:
            def backprop(dy: Array) -> Any:
                check_delta(self, dy, (N, T, E))
                return backprop_core(dy, None)

            return y, backprop

        def backprop_with_weights(delta: Any) -> Any:
            dy, d_shown = delta if isinstance(delta, (tuple, list)) else (delta, None)
            if dy is None and d_shown is None:
                raise ValueError(f"{self.describe()}: backprop got neither an output δ nor a δ of the weights")
            if dy is not None:
                check_delta_like(self, dy, y)
            if d_shown is not None:
                check_delta_like(self, d_shown, shown, "δ of the attention weights")
            return backprop_core(dy, d_shown)

        return (y, shown), backprop_with_weights

    def extra_repr(self) -> str:
        extra = ", causal=True" if self.causal else ""
        if not self.packed:
            extra += f", kdim={self.kdim}, vdim={self.vdim}"
        if self.attention_dropout is not None:
            extra += f", dropout={self.attention_dropout.p}"
        return f"embed_dim={self.embed_dim}, num_heads={self.num_heads}{extra}"
