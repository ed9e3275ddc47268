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
    back from the device (a sync), which is cheap next to a training step.
    """

    def __init__(
        self,
        num_embeddings: int,
        dim: int,
        padding_idx: int | None = None,
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
        self.num_embeddings, self.dim, self.padding_idx = num_embeddings, dim, padding_idx
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
            low, high = int(xp.min(ids)), int(xp.max(ids))
            if low < 0 or high >= self.num_embeddings:
                raise ValueError(
                    f"{self.describe()}: ids must lie in [0, {self.num_embeddings - 1}], got values in [{low}, {high}]"
                )

    def forward(self, ids: Array, train: bool) -> tuple[Array, Backprop]:
        self._check(ids)
        xp = backend.namespace(ids)
        W = self.weight.value
        flat = xp.reshape(ids, (-1,))
        if flat.dtype != xp.int64 and flat.dtype != xp.int32:  # torch indexes with int32/int64 only
            flat = xp.astype(flat, xp.int64)
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

    def extra_repr(self) -> str:
        pad = "" if self.padding_idx is None else f", padding_idx={self.padding_idx}"
        return f"{self.num_embeddings}, {self.dim}{pad}"
