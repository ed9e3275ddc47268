"""Linear, Flatten, Reshape and Identity."""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from .. import init as _init
from ..backend import Array
from ..core import Backprop, Layer, Parameter, check_delta, check_input
from .activations import GELU, ReLU

ACTIVATIONS = (None, "relu", "gelu", "gelu_tanh")
_APPROXIMATE = {"gelu": "none", "gelu_tanh": "tanh"}
_ACTIVATION_LAYERS = {"relu": ReLU(), "gelu": GELU(), "gelu_tanh": GELU("tanh")}  # stateless


class Linear(Layer):
    """Affine map over the last axis.

    Shapes: x (N, *, in_features) -> y (N, *, out_features); weight (out_features, in_features),
    PyTorch's layout, so a ``torch.nn.Linear`` state dict loads by name; bias (out_features,).

    Forward: ``y = x Wᵀ + b``.  δ rule: ``dx = dy W``.  Gradients: ``dW = dyᵀ x`` and
    ``db = Σ_N dy`` (summed over every leading axis). Called with ``input_grad=False`` the
    backprop skips ``dx`` (a third of the layer's backward work) and returns ``None``.

    activation: ``None`` (default), ``"relu"``, ``"gelu"`` or ``"gelu_tanh"``: ``y = f(x Wᵀ + b)``,
    exactly ``Sequential(Linear(...), ReLU())`` (or ``GELU()``, ``GELU("tanh")``) in one layer,
    with the δ rule ``dy ← dy ⊙ f'(x Wᵀ + b)`` applied first. On a GPU the bias and the activation
    are one fused kernel each way (:mod:`gradflow.backend.fused`: ``bias_relu``, ``bias_gelu``)
    instead of two or more launches; elsewhere the layer runs the activation layer's own code
    after its in-place bias add, so the results are the same bit for bit.

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
        activation: str | None = None,
        init: "str | _init.Initializer" = "glorot_uniform",
        rng: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        for name, value in (("in_features", in_features), ("out_features", out_features)):
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"Linear: {name} must be a positive int, got {value!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"Linear: activation must be one of {ACTIVATIONS}, got {activation!r}")
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
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
        bias, activation = self.bias, self.activation
        b = None if bias is None else bias.value
        activation_backprop = None
        if activation is None or not backend.fused.available(y):
            if b is not None:
                y += b
            if activation is not None:  # the activation layer's own code: the same bits, no extra copy
                y, activation_backprop = _ACTIVATION_LAYERS[activation]._forward(y, xp)
        else:  # one kernel each way (CuPy)
            y, activation_backprop = _fused_bias_activation(y, b, activation)

        def backprop(dy: Array) -> Array | None:
            # dy's shape, dtype and device are checked by Layer.__call__'s wrapper
            if activation_backprop is not None:
                dy = activation_backprop(dy)
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
        extra = "" if self.activation is None else f", activation={self.activation!r}"
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{extra}"




def _fused_bias_activation(z: Array, b: Array | None, activation: str) -> tuple[Array, Backprop]:
    """``f(z + b)`` and its δ rule as one fused kernel each; GELU's backward recomputes
    ``gelu'(z + b)`` from the matmul's output ``z`` (as the GELU layer does on a GPU)."""
    if activation == "relu":
        y = backend.fused.bias_relu(z, b)
        return y, lambda dy: backend.fused.relu_backward(dy, y)
    approximate = _APPROXIMATE[activation]
    y = backend.fused.bias_gelu(z, b, approximate)
    return y, lambda dy: backend.fused.gelu_backward(dy, z, approximate, bias=b)


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
