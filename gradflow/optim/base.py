"""The optimizer interface: per-parameter state on the parameter's device, in-place updates.

    optimizer = Adam(model, lr=1e-3, weight_decay=1e-4, clip_norm=1.0)
    ...backprop...
    optimizer.step()        # clip (if asked), then update every parameter that has a gradient
    optimizer.zero_grad()

``lr`` is a float or a schedule: any callable ``schedule(step) -> float`` (see
:mod:`gradflow.optim.schedules`). State slots (momentum, moments) live in ``parameter.state``,
so ``model.to(device)`` moves them along with the weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

from .. import backend
from ..backend import Array
from ..core import Layer, Parameter, _device_name as _where
from ..validation import CheckedArguments
from .clip import clip_grad_norm, clip_grad_value

LearningRate = "float | Callable[[int], float]"


def check_hyper(owner: str, name: str, value: float, low: float, high: float | None = None,
                low_inclusive: bool = True, high_inclusive: bool = False) -> float:
    """Validate one finite hyper-parameter against [low, high) (bounds configurable); returns it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    ok_low = value >= low if low_inclusive else value > low
    ok_high = True if high is None else (value <= high if high_inclusive else value < high)
    if not (ok_low and ok_high) or not math.isfinite(value):
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        upper = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{owner}: {name} must be in {left}{low:g}, {upper}{right}, got {value}")
    return value


class Optimizer(CheckedArguments):
    """Base class; subclasses implement ``_update(p, grad, lr, xp)`` (in place on p.value)."""

    def __init__(
        self,
        params: "Layer | Iterable[Parameter]",
        lr: Any,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        clip_value: float | None = None,
    ):
        name = type(self).__name__
        self.params: list[Parameter] = params.parameters() if isinstance(params, Layer) else list(params)
        if not self.params:
            raise ValueError(f"{name}: got no parameters to optimize")
        for p in self.params:
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: expected Parameters (or a Layer), got {type(p).__name__}")
        if callable(lr):
            self.schedule: Callable[[int], float] | None = lr
            # A schedule may start at 0 (warm-up), never below it.
            self.base_lr = check_hyper(name, "lr(0) of the schedule", lr(0), 0.0)
        else:
            self.schedule = None
            self.base_lr = check_hyper(name, "lr", lr, 0.0, low_inclusive=False)
        self.weight_decay = check_hyper(name, "weight_decay", weight_decay, 0.0)
        self.clip_norm = None if clip_norm is None else check_hyper(name, "clip_norm", clip_norm, 0.0, low_inclusive=False)
        self.clip_value = None if clip_value is None else check_hyper(name, "clip_value", clip_value, 0.0, low_inclusive=False)
        self.step_count = 0

    @property
    def lr(self) -> float:
        """The learning rate the next step will use."""
        if self.schedule is not None:
            return float(self.schedule(self.step_count))
        return self.base_lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.schedule = None
        self.base_lr = check_hyper(type(self).__name__, "lr", value, 0.0, low_inclusive=False)

    def step(self) -> None:
        """Clip (when configured) and update every parameter that has a gradient, in place."""
        with_grad = [p for p in self.params if p.grad is not None]
        if not with_grad:
            return
        for p in with_grad:  # all checked before any is updated, so a bad one changes nothing
            g, v = p.grad, p.value
            if (type(g) is not type(v) or g.shape != v.shape or g.dtype != v.dtype
                    or getattr(g, "device", None) != getattr(v, "device", None)):
                self._bad_gradient(p)
        lr = self.lr
        if self.schedule is not None and not 0.0 <= lr < math.inf:
            raise ValueError(
                f"{type(self).__name__}: the lr schedule gave {lr} at step {self.step_count}; "
                "it must be finite and >= 0 (nothing was updated)"
            )
        if self.clip_value is not None:
            clip_grad_value(with_grad, self.clip_value)
        if self.clip_norm is not None:
            clip_grad_norm(with_grad, self.clip_norm)
        self.step_count += 1
        for p in with_grad:
            self._update(p, p.grad, lr, backend.namespace(p.value))

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def _bad_gradient(self, p: Parameter) -> None:
        index = next(i for i, q in enumerate(self.params) if q is p)
        g = p.grad
        got = (f"a {type(g).__name__}" if not backend.is_array(g) else
               f"shape {tuple(g.shape)}, dtype {backend.dtype_name(g.dtype)} on {_where(g)}")
        raise ValueError(
            f"{type(self).__name__}.step: the gradient of parameter {index} has {got}; expected the parameter's "
            f"shape {p.shape}, dtype {backend.dtype_name(p.dtype)} on {_where(p.value)} (nothing was updated)"
        )

    def _update(self, p: Parameter, grad: Array, lr: float, xp: Any) -> None:
        raise NotImplementedError

    def _slot(self, p: Parameter, name: str, xp: Any, fill: float = 0.0) -> Array:
        """The state array ``name`` of ``p``, created on p's device on first use."""
        slot = p.state.get(name)
        if slot is None:
            slot = xp.full_like(p.value, fill)
            p.state[name] = slot
        return slot

    def _decayed(self, p: Parameter, grad: Array) -> Array:
        """Coupled (L2) weight decay: ``g + λ θ``."""
        return grad + self.weight_decay * p.value if self.weight_decay else grad

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"step": int, "slots": {"<param index>.<slot>": array}}`` (arrays as they are)."""
        slots = {f"{i}.{name}": array for i, p in enumerate(self.params) for name, array in p.state.items()}
        return {"step": self.step_count, "slots": slots}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore slots and step; checks every key and shape before changing anything."""
        slots = state.get("slots", {})
        parsed = []
        for key, array in slots.items():
            index, _, name = key.partition(".")
            if not index.isdigit() or int(index) >= len(self.params):
                raise ValueError(f"{type(self).__name__}.load_state_dict: slot {key!r} names no parameter")
            p = self.params[int(index)]
            if tuple(array.shape) != p.shape:
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: slot {key!r} has shape {tuple(array.shape)}, "
                    f"parameter has {p.shape}"
                )
            parsed.append((p, name, array))
        for p in self.params:
            p.state.clear()
        for p, name, array in parsed:
            sent = p.device.send(array, p.value.dtype)
            p.state[name] = sent if sent is not array else backend.namespace(sent).asarray(sent, copy=True)
        self.step_count = int(state.get("step", 0))

    def to(self, device: Any) -> "Optimizer":
        """Move every slot to ``device`` (``model.to`` already does this for its parameters)."""
        target = backend.device(device)
        for p in self.params:
            for name, array in list(p.state.items()):
                p.state[name] = target.send(array)
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr={self.lr:g}, params={len(self.params)})"
