"""Linear, Flatten, Reshape and Identity."""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from .. import init as _init
from ..backend import Array
from ..core import Backprop, Layer, Parameter, check_delta, check_input



class Linear(Layer):
    """Affine map over the last axis.

    Shapes: x (N, *, in_features) -> y (N, *, out_features); weight (out_features, in_features),
    PyTorch's layout, so a ``torch.nn.Linear`` state dict loads by name; bias (out_features,).

    Forward: ``y = x Wᵀ + b``.  δ rule: ``dx = dy W``.  Gradients: ``dW = dyᵀ x`` and
    ``db = Σ_N dy`` (summed over every leading axis). Called with ``input_grad=False`` the
    backprop skips ``dx`` (a third of the layer's backward work) and returns ``None``.

    Example::

        layer = Linear(4, 3, rng=0)
        y, backprop = layer(device("cpu").send(np.ones((2, 4)), "float32"), train=True)
        dx = backprop(y)          # dx.shape == (2, 4); layer.weight.grad.shape == (3, 4)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        *,
        init: "str | _init.Initializer" = "glorot_uniform",
        rng: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Linear: {name} must be a positive int, got {value!r}")
        self.in_features, self.out_features = in_features, out_features
        dev = backend.device(device)
        generator = _init.generator(rng)
        # Drawn as (in, out) and stored transposed: the same seed gives the same weights as before
        # the layout became PyTorch's (out, in).
        weight = _init.get(init)((in_features, out_features), in_features, out_features, generator)
        self.weight = Parameter(dev.send(weight.T.copy(), dtype))
        # Zero biases: the usual choice with Glorot/He weights.
        self.bias = Parameter(dev.send(_init.zeros((out_features,)), dtype)) if bias else None

    skips_input_grad = True
    forward_changes_state = False

    def forward(self, x: Array, train: bool, input_grad: bool = True) -> tuple[Array, Backprop]:
        W = self.weight.value
        # the common input (2-D, the weight's type, dtype and device) passes without a call;
        # anything else gets check_input's full checks and messages
        if not (type(x) is type(W) and x.dtype is W.dtype and x.ndim == 2 and x.shape[1] == self.in_features
                and getattr(x, "device", None) == getattr(W, "device", None)):
            check_input(self, x, min_ndim=1, features=self.in_features, like=W)
        in_shape = tuple(x.shape)
        xp = backend.namespace(x)
        if x.ndim != 2:
            # One (N·…, in) GEMM: NumPy's broadcasting matmul of a 3-D x with W is ~6x slower.
            x = xp.reshape(x, (-1, self.in_features))
            y = xp.reshape(x @ W.T, (*in_shape[:-1], self.out_features))
        else:
            y = x @ W.T
        bias = self.bias
        if bias is not None:
            y += bias.value

        def backprop(dy: Array) -> Array | None:
            # dy's shape, dtype and device are checked by Layer.__call__'s wrapper
            dy2 = dy if dy.ndim == 2 else xp.reshape(dy, (-1, self.out_features))
            self.weight.accumulate(dy2.T @ x)
            if bias is not None:
                bias.accumulate(xp.sum(dy2, axis=0))
            if not input_grad:
                return None
            dx = dy2 @ W
            return dx if len(in_shape) == 2 else xp.reshape(dx, in_shape)

        return y, backprop

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"




class Identity(Layer):
    """``y = x``; δ rule: ``dx = dy``."""

    forward_changes_state = False

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        check_input(self, x)
        return x, lambda dy: dy


class Flatten(Layer):
    """Flatten every axis after the first: (N, d1, d2, ...) -> (N, d1*d2*...). δ: reshape back."""

    forward_changes_state = False

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        check_input(self, x, min_ndim=1)
        xp = backend.namespace(x)
        shape = tuple(x.shape)
        y = xp.reshape(x, (shape[0], -1)) if shape[0] else xp.reshape(x, (0, math.prod(shape[1:])))

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, tuple(y.shape))
            return xp.reshape(dy, shape)

        return y, backprop


class Reshape(Layer):
    """Reshape the trailing axes: (N, *in) -> (N, *shape); -1 allowed once. δ: reshape back."""

    def __init__(self, *shape: int):
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        if any(isinstance(s, bool) or not isinstance(s, int) or (s <= 0 and s != -1) for s in shape) or list(shape).count(-1) > 1:
            raise ValueError(f"Reshape: the shape must be positive ints with at most one -1, got {shape!r}")
        self.shape = tuple(shape)

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        check_input(self, x, min_ndim=1)
        xp = backend.namespace(x)
        in_shape = tuple(x.shape)
        try:
            y = xp.reshape(x, (in_shape[0], *self.shape))
        except (ValueError, RuntimeError) as error:
            raise ValueError(f"{self.describe()}: cannot reshape input of shape {in_shape}: {error}") from None
        return y, lambda dy: xp.reshape(dy, in_shape)

    def extra_repr(self) -> str:
        return f"shape={self.shape}"
