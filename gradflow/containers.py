"""Layers that hold layers: Sequential, Residual and Concat.

Each is a layer with an explicit δ-backward of its own, so any graph built from them can be
read node by node.
"""

from __future__ import annotations

import inspect
from typing import Any

from . import backend
from .backend import Array
from .core import Backprop, Layer


_FORWARD_KEYWORDS: dict[type, "frozenset[str] | None"] = {}
_NO_KWARGS: dict[str, Any] = {}  # shared and never written: no empty dict per contained call


def _forward_keywords(layer: Layer) -> "frozenset[str] | None":
    """The keyword arguments ``layer.forward`` takes after ``(x, train)``; None for ``**kwargs``."""
    kind = type(layer)
    if kind not in _FORWARD_KEYWORDS:
        params = list(inspect.signature(kind.forward).parameters.values())[3:]  # self, x, train
        if any(p.kind is p.VAR_KEYWORD for p in params):
            _FORWARD_KEYWORDS[kind] = None
        else:
            _FORWARD_KEYWORDS[kind] = frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))
    return _FORWARD_KEYWORDS[kind]


def _route(owner: Layer, layers: list[Layer], kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    """Each layer's share of ``kwargs``: the ones its forward names (all, for ``**kwargs``)."""
    routed, used = [], set()
    for layer in layers:
        names = _forward_keywords(layer)
        mine = dict(kwargs) if names is None else {k: v for k, v in kwargs.items() if k in names}
        used.update(mine)
        routed.append(mine)
    unused = sorted(set(kwargs) - used)
    if unused:
        raise TypeError(f"{type(owner).__name__}: no layer inside takes the keyword argument(s) {unused}")
    return routed


class Sequential(Layer):
    """Apply layers in order: ``y = f_n(...f_2(f_1(x)))``.

    δ rule: the δs flow through the layers' backprops in reverse order.
    Keyword arguments of the call (e.g. an attention mask) go to each layer whose ``forward``
    names them; one that no layer takes is an error. With ``input_grad=False`` the δ stops at
    the first layer that has parameters: that layer is told it needs no input δ, and the
    parameter-free layers before it are not backpropagated at all.
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
        """``(name, layer)`` pairs: ``("0", first), ("1", second), ...``."""
        for i, layer in enumerate(self.layers):
            yield str(i), layer

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, index: int) -> Layer:
        if isinstance(index, bool) or not isinstance(index, (int, slice)):
            raise TypeError(f"Sequential: index must be an int, got {index!r}")
        if isinstance(index, int) and not -len(self.layers) <= index < len(self.layers):
            raise IndexError(f"Sequential: index {index} is out of range for {len(self.layers)} layers")
        return self.layers[index]

    def __iter__(self):
        return iter(self.layers)

    def append(self, layer: Layer) -> "Sequential":
        """Add ``layer`` at the end; returns self.

        Args:
            layer: a :class:`gradflow.Layer`.
        """
        self.layers.append(layer)
        return self

    def forward(self, x: Array, train: bool, input_grad: bool = True, **kwargs: Any) -> tuple[Array, Backprop]:
        backprops = []
        first = 0 if input_grad else self._first_with_parameters()
        routed = _route(self, self.layers, kwargs) if kwargs else None
        for i, layer in enumerate(self.layers):
            mine = routed[i] if routed is not None else _NO_KWARGS
            if i < first:  # nothing below needs a δ: this layer's backprop is never called
                x = layer(x, train, input_grad=False, **mine)[0]
            else:
                x, layer_backprop = layer(x, train, input_grad=input_grad or i > first, **mine)
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
        """The output for ``x`` in inference mode, keeping nothing for a backward pass.

        Args:
            x: the input array, on the model's device.
            kwargs: call arguments routed to the layers whose ``forward`` names them (e.g. ``key_padding_mask``).
        """
        with backend.device_context(x):  # CuPy: new arrays go to x's GPU, not the current one
            if kwargs:
                for layer, mine in zip(self.layers, _route(self, self.layers, kwargs)):
                    x = layer.predict(x, **mine) if mine else layer.predict(x)
                return x
            for layer in self.layers:
                x = layer.predict(x)
            return x


class Residual(Layer):
    """``y = x + f(x)``; δ rule: ``dx = dy + f.backprop(dy)``. ``f`` must keep the shape.

    body: the layer (or Sequential) whose output is added to its input; it must keep the
    input's shape.
    """

    skips_input_grad = True

    def __init__(self, body: Layer):
        if not isinstance(body, Layer):
            raise TypeError(f"Residual: the body is a {type(body).__name__}, not a Layer")
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
        if not branches:
            raise ValueError("Concat: needs at least one branch")
        for i, branch in enumerate(branches):
            if not isinstance(branch, Layer):
                raise TypeError(f"Concat: branch {i} is a {type(branch).__name__}, not a Layer")
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise TypeError(f"Concat: axis must be an int, got {axis!r}")
        self.branches = list(branches)
        self.axis = axis

    def forward(self, x: Array, train: bool, input_grad: bool = True) -> tuple[Array, Backprop]:
        outputs, backprops = [], []
        for branch in self.branches:
            y, branch_backprop = branch(x, train, input_grad=input_grad)
            outputs.append(y)
            backprops.append(branch_backprop)
        xp = backend.namespace(x)
        first = tuple(outputs[0].shape)
        for i, y in enumerate(outputs):
            shape = tuple(y.shape)
            if not -len(first) <= self.axis < len(first) or len(shape) != len(first) or any(
                    a != b for k, (a, b) in enumerate(zip(shape, first)) if k != self.axis % len(first)):
                shapes = ", ".join(str(tuple(o.shape)) for o in outputs)
                raise ValueError(f"{self.describe()}: the branches' outputs ({shapes}) cannot be concatenated on "
                                 f"axis {self.axis}: they need the same number of axes and equal sizes off that axis")
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
        """The axis, for ``repr``."""
        return f"axis={self.axis}"
