"""Layers that hold layers: Sequential, Residual and Concat.

Each is a layer with an explicit δ-backward of its own, so any graph built from them can be
read node by node.
"""

from __future__ import annotations

from typing import Any

from . import backend
from .backend import Array
from .core import Backprop, Layer


class Sequential(Layer):
    """Apply layers in order: ``y = f_n(...f_2(f_1(x)))``.

    δ rule: the δs flow through the layers' backprops in reverse order.
    """

    def __init__(self, *layers: Layer):
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential: item {i} is a {type(layer).__name__}, not a Layer")
        self.layers = list(layers)

    def named_children(self):
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def append(self, layer: Layer) -> "Sequential":
        self.layers.append(layer)
        return self

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        backprops = []
        for layer in self.layers:
            x, layer_backprop = layer(x, train)
            backprops.append(layer_backprop)

        def backprop(dy: Array) -> Array:
            for layer_backprop in reversed(backprops):
                dy = layer_backprop(dy)
            return dy

        return x, backprop

    def predict(self, x: Array, **kwargs: Any) -> Array:
        for layer in self.layers:
            x = layer.predict(x)
        return x


class Residual(Layer):
    """``y = x + f(x)``; δ rule: ``dx = dy + f.backprop(dy)``. ``f`` must keep the shape."""

    def __init__(self, body: Layer):
        if not isinstance(body, Layer):
            raise TypeError(f"Residual: the body is a {type(body).__name__}, not a Layer")
        self.body = body

    def forward(self, x: Array, train: bool, **kwargs: Any) -> tuple[Array, Backprop]:
        fx, body_backprop = self.body(x, train, **kwargs)
        if tuple(fx.shape) != tuple(x.shape):
            raise ValueError(
                f"Residual: the body {self.body.describe()} changed the shape from {tuple(x.shape)} "
                f"to {tuple(fx.shape)}; a residual connection needs them equal"
            )

        def backprop(dy: Array) -> Array:
            return dy + body_backprop(dy)

        return x + fx, backprop


class Concat(Layer):
    """Run branches on the same input and concatenate their outputs along ``axis``.

    Shapes: each branch maps (N, ..., D_in) to (N, ..., D_i); the output has sum(D_i) on
    ``axis``. δ rule: split dy along ``axis`` and add the branches' input δs.
    """

    def __init__(self, *branches: Layer, axis: int = -1):
        if not branches:
            raise ValueError("Concat: needs at least one branch")
        for i, branch in enumerate(branches):
            if not isinstance(branch, Layer):
                raise TypeError(f"Concat: branch {i} is a {type(branch).__name__}, not a Layer")
        self.branches = list(branches)
        self.axis = axis

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        outputs, backprops = [], []
        for branch in self.branches:
            y, branch_backprop = branch(x, train)
            outputs.append(y)
            backprops.append(branch_backprop)
        xp = backend.namespace(x)
        sizes = [y.shape[self.axis] for y in outputs]

        def backprop(dy: Array) -> Array:
            dx = None
            start = 0
            for size, branch_backprop in zip(sizes, backprops):
                index = [slice(None)] * dy.ndim
                index[self.axis] = slice(start, start + size)
                start += size
                part = branch_backprop(dy[tuple(index)])
                dx = part if dx is None else dx + part
            return dx

        return xp.concat(outputs, axis=self.axis), backprop

    def extra_repr(self) -> str:
        return f"axis={self.axis}"
