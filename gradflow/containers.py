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

    δ rule: the δs flow through the layers' backprops in reverse order. With
    ``input_grad=False`` the δ stops at the first layer that has parameters: that layer is told
    it needs no input δ, and the parameter-free layers before it are not backpropagated at all.
    """

    skips_input_grad = True

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

    def forward(self, x: Array, train: bool, input_grad: bool = True) -> tuple[Array, Backprop]:
        backprops = []
        first = 0 if input_grad else self._first_with_parameters()
        for i, layer in enumerate(self.layers):
            if i < first:  # nothing below needs a δ: this layer's backprop is never called
                x = layer(x, train, input_grad=False)[0]
            else:
                x, layer_backprop = layer(x, train, input_grad=input_grad or i > first)
                backprops.append(layer_backprop)

        def backprop(dy: Array) -> Array | None:
            for layer_backprop in reversed(backprops):
                dy = layer_backprop(dy)
            return dy if input_grad else None

        return x, backprop

    def _first_with_parameters(self) -> int:
        """Index of the first layer owning a parameter (len(layers) if none); cached per layer list.

        The cache keeps the layers themselves (not their ids, which a replaced layer's successor
        could reuse), so any change to ``self.layers`` is noticed.
        """
        key = tuple(self.layers)
        cached = self.__dict__.get("_first_trainable")
        if cached is None or len(cached[0]) != len(key) or any(a is not b for a, b in zip(cached[0], key)):
            index = next((i for i, layer in enumerate(self.layers)
                          if next(layer.named_parameters(), None) is not None), len(self.layers))
            cached = self.__dict__["_first_trainable"] = (key, index)
        return cached[1]

    def predict(self, x: Array, **kwargs: Any) -> Array:
        for layer in self.layers:
            x = layer.predict(x)
        return x


class Residual(Layer):
    """``y = x + f(x)``; δ rule: ``dx = dy + f.backprop(dy)``. ``f`` must keep the shape."""

    skips_input_grad = True

    def __init__(self, body: Layer):
        self.body = body

    def forward(self, x: Array, train: bool, input_grad: bool = True, **kwargs: Any) -> tuple[Array, Backprop]:
        fx, body_backprop = self.body(x, train, input_grad=input_grad, **kwargs)
        if tuple(fx.shape) != tuple(x.shape):
            raise ValueError(
                f"Residual: the body {self.body.describe()} changed the shape from {tuple(x.shape)} "
                f"to {tuple(fx.shape)}; a residual connection needs them equal"
            )

        def backprop(dy: Array) -> Array | None:
            dx = body_backprop(dy)
            return dy + dx if input_grad else None

        return x + fx, backprop


class Concat(Layer):
    """Run branches on the same input and concatenate their outputs along ``axis``.

    Shapes: each branch maps (N, ..., D_in) to (N, ..., D_i); the output has sum(D_i) on
    ``axis``. δ rule: split dy along ``axis`` and add the branches' input δs.
    """

    skips_input_grad = True

    def __init__(self, *branches: Layer, axis: int = -1):
        self.branches = list(branches)
        self.axis = axis

    def forward(self, x: Array, train: bool, input_grad: bool = True) -> tuple[Array, Backprop]:
        outputs, backprops = [], []
        for branch in self.branches:
            y, branch_backprop = branch(x, train, input_grad=input_grad)
            outputs.append(y)
            backprops.append(branch_backprop)
        xp = backend.namespace(x)
        sizes = [y.shape[self.axis] for y in outputs]

        def backprop(dy: Array) -> Array | None:
            dx = None
            start = 0
            for size, branch_backprop in zip(sizes, backprops):
                index = [slice(None)] * dy.ndim
                index[self.axis] = slice(start, start + size)
                start += size
                part = branch_backprop(dy[tuple(index)])
                if input_grad:
                    dx = part if dx is None else dx + part
            return dx

        return xp.concat(outputs, axis=self.axis), backprop

    def extra_repr(self) -> str:
        return f"axis={self.axis}"
