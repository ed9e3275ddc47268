"""Embedding: a table look-up whose gradient is a scatter-add."""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from .. import init as _init
from ..backend import Array, DeviceError
from ..core import Backprop, Layer, Parameter, _device_name, check_delta


class Embedding(Layer):
    """Map integer ids to rows of a learned table.

    Shapes: ids (N, *) of an integer dtype -> y (N, *, dim); weight (num_embeddings, dim).

    Forward: ``y[n, ...] = W[ids[n, ...]]`` (a gather).
    Gradient: ``dW[v] = Σ_{positions with id v} dy[position]`` (a scatter-add with duplicates
    summed, :func:`gradflow.backend.scatter_add_rows`); the ``padding_idx`` row, if any, starts
    at zero and never gets a gradient. Ids are not differentiable: ``backprop`` returns ``None``,
    so an Embedding is the first layer of a model.

    Ids are checked to be integers in ``[0, num_embeddings)``; the range check reads two numbers
    back from the device (a sync), which is cheap next to a training step. Ids of any integer
    dtype work (int8/int16/uint8/... are widened to int64 for the gather and the scatter-add).

    Arguments: num_embeddings V and dim D (positive ints); padding_idx (None or an int in
    [−V, V): that row starts at zero and gets no gradient); max_norm (None or a number > 0:
    before each look-up, every row the ids reference whose ``norm_type``-norm exceeds max_norm is
    rescaled in place to ``W[v] ← W[v] · max_norm / (‖W[v]‖ + 1e-7)``, as PyTorch; the rescaling
    is not differentiated, so the gradient stays the scatter-add of dy); norm_type (a number
    > 0 or ``math.inf``, default 2).
    """

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        padding_idx: int | None = None,
        max_norm: "float | None" = None,
        norm_type: float = 2.0,
        *,
        init: "str | _init.Initializer | None" = None,
        rng: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        for name, value in (("num_embeddings", num_embeddings), ("dim", dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"Embedding: {name} must be a positive int, got {value!r}")
        if padding_idx is not None:
            if isinstance(padding_idx, bool) or not isinstance(padding_idx, int) or not -num_embeddings <= padding_idx < num_embeddings:
                raise ValueError(f"Embedding: padding_idx must be an int in [0, {num_embeddings}), got {padding_idx!r}")
            padding_idx %= num_embeddings
        if max_norm is not None and not (isinstance(max_norm, (int, float)) and not isinstance(max_norm, bool)
                                         and math.isfinite(max_norm) and max_norm > 0):
            raise ValueError(f"Embedding: max_norm must be None or a finite number > 0, got {max_norm!r}")
        if not (isinstance(norm_type, (int, float)) and not isinstance(norm_type, bool) and norm_type > 0):
            raise ValueError(f"Embedding: norm_type must be a number > 0 (math.inf for the max norm), got {norm_type!r}")
        self.num_embeddings, self.dim, self.padding_idx = num_embeddings, dim, padding_idx
        self.max_norm = None if max_norm is None else float(max_norm)
        self.norm_type = float(norm_type)
        generator = _init.generator(rng)
        # N(0, 1) rows by default, as in PyTorch: each id starts as a unit-variance vector.
        table = (generator.standard_normal((num_embeddings, dim)) if init is None
                 else _init.get(init)((num_embeddings, dim), num_embeddings, dim, generator))
        if padding_idx is not None:
            table[padding_idx] = 0.0
        self.weight = Parameter(backend.device(device).send(table, dtype))

    def _check(self, ids: Any) -> None:
        W = self.weight.value
        if not backend.is_array(ids):
            raise TypeError(f"{self.describe()}: expected an integer array of ids, got {type(ids).__name__}")
        if not backend.same_device(ids, W):
            raise DeviceError(
                f"{self.describe()}: expected ids on device {backend.device_of(W)} (the layer's), "
                f"got an array on {_device_name(ids)}"
            )
        xp = backend.namespace(ids)
        if not xp.isdtype(ids.dtype, "integral"):
            raise TypeError(
                f"{self.describe()}: expected integer ids, got dtype {backend.dtype_name(ids.dtype)}; "
                "cast them with astype(int64) if they are whole numbers"
            )
        if ids.ndim < 1:
            raise ValueError(f"{self.describe()}: expected ids with a batch axis, got shape {tuple(ids.shape)}")
        if math.prod(ids.shape) > 0:
            wide = ids if ids.dtype in (xp.int32, xp.int64) else xp.astype(ids, xp.int64)  # torch: no min of uint16
            low, high = int(xp.min(wide)), int(xp.max(wide))
            if low < 0 or high >= self.num_embeddings:
                raise ValueError(
                    f"{self.describe()}: ids must lie in [0, {self.num_embeddings - 1}], got values in [{low}, {high}]"
                )

    def forward(self, ids: Array, train: bool) -> tuple[Array, Backprop]:
        self._check(ids)
        xp = backend.namespace(ids)
        W = self.weight.value
        flat = xp.reshape(ids, (-1,))
        if flat.dtype != xp.int64 and flat.dtype != xp.int32:  # torch's index_select takes only these
            flat = xp.astype(flat, xp.int64)
        if self.max_norm is not None:
            self._renormalise(flat)
        out_shape = (*ids.shape, self.dim)
        y = xp.reshape(xp.take(W, flat, axis=0), out_shape)

        def backprop(dy: Array) -> None:
            check_delta(self, dy, out_shape)
            grad = xp.zeros(tuple(W.shape), dtype=dy.dtype, device=dy.device)
            backend.scatter_add_rows(grad, flat, xp.reshape(dy, (-1, self.dim)))
            if self.padding_idx is not None:
                grad[self.padding_idx, :] = 0.0
            self.weight.accumulate(grad)
            return None

        return y, backprop

    def _renormalise(self, flat: Array) -> None:
        """Rescale in place the referenced rows whose norm exceeds max_norm (PyTorch's embedding_renorm_)."""
        W = self.weight.value
        xp = backend.namespace(W)
        a = xp.abs(W)
        p = self.norm_type
        if p == math.inf:
            norms = xp.max(a, axis=1)
        elif p == 2.0:
            norms = xp.sqrt(xp.sum(W * W, axis=1))
        elif p == 1.0:
            norms = xp.sum(a, axis=1)
        else:
            norms = xp.sum(a ** p, axis=1) ** (1.0 / p)
        hits = xp.zeros((self.num_embeddings, 1), dtype=W.dtype, device=W.device)
        backend.scatter_add_rows(hits, flat, xp.ones((flat.shape[0], 1), dtype=W.dtype, device=W.device))
        clip = (xp.reshape(hits, (-1,)) > 0) & (norms > self.max_norm)
        ones = xp.ones_like(norms)
        scale = xp.where(clip, self.max_norm / (norms + 1e-7), ones)
        W[...] = W * xp.reshape(scale, (-1, 1))
        self.weight.mark_modified()

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        if self.max_norm is not None:
            pad += f", max_norm={self.max_norm:g}" + (f", norm_type={self.norm_type:g}" if self.norm_type != 2.0 else "")
        return f"{self.num_embeddings}, {self.dim}{pad}"
