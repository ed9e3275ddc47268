"""Gradient-flow diagnostics and anomaly mode.

Per step and per layer (the model's leaf layers, input to output):

- ``grad_norm``: ‖∇θ‖ over the layer's own parameters, after backprop and before the optimizer
  step (so before any clipping);
- ``delta_norm``: ‖δ‖ of the δ the layer's backprop passes down to the layer below;
- ``update_ratio``: ‖θ_after − θ_before‖ / ‖θ_before‖ for the optimizer step (a common rule of
  thumb: around 1e-3 is healthy; 1e-1 is violent, below 1e-5 the layer barely learns).

In ``fit``::

    monitor = GradientFlowMonitor(every=10)
    fit(model, loss, optimizer, data, epochs=5, callbacks=[monitor])
    print(monitor.record.summary()); gradflow.plot.gradient_flow(monitor.record, "flow.png")

In a loop of your own::

    with GradientFlow(model) as flow:
        y, backprop = model(x, train=True); value, delta = loss(y, t)
        optimizer.zero_grad(); backprop(delta)
        flow.after_backward()
        optimizer.step()
        flow.after_step()
    record = flow.fetch()

The norms are computed on the device and kept there; :meth:`GradientFlow.fetch` moves all
pending steps to the host in one transfer (the monitor does so once per epoch).

Warnings (:class:`GradientWarning`), checked on each fetch, one per layer and kind:

- exploding: a layer's gradient norm above ``exploding`` (default 1e3) or not finite at any step;
- vanishing: a layer's median gradient norm below ``vanishing`` (default 1e-7), or below
  ``vanishing_ratio`` (default 1e-4) times the largest layer median (gradients dying on the
  way down).

Anomaly mode: ``with detect_anomaly(model): ...`` checks every layer's forward output and every
backprop's δ and parameter gradients for NaN/Inf and raises :class:`AnomalyError` naming the
first layer that produced one. It syncs after every layer call: a debugging tool.

Both are built on :func:`gradflow.core.add_call_hook`, which observes every layer call; no layer
is patched.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import backend
from .backend import Array
from .callbacks import Callback, TrainingState
from .core import Layer, Parameter, add_call_hook

EXPLODING = 1e3
VANISHING = 1e-7
VANISHING_RATIO = 1e-4


class GradientWarning(UserWarning):
    """Gradients vanish or explode."""


class AnomalyError(FloatingPointError):
    """Anomaly mode found NaN or Inf; the message names the layer that produced it."""


def leaf_layers(model: Layer) -> list[tuple[str, Layer]]:
    """The layers without sub-layers, in the order they were assigned (input to output for a
    Sequential), with dotted names; a model that is itself a leaf is named ``"model"``."""
    leaves = [(name or "model", layer) for name, layer in model.sublayers() if not list(layer.named_children())]
    return leaves


@dataclass
class FlowRecord:
    """Host arrays of shape (steps, layers); NaN where a value does not apply (no parameters,
    or a layer whose backprop passes no δ)."""

    layers: list[str]
    descriptions: list[str]
    steps: np.ndarray
    grad_norm: np.ndarray
    delta_norm: np.ndarray
    update_ratio: np.ndarray
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.steps)

    def extend(self, other: "FlowRecord") -> None:
        """Append the steps of ``other`` (the same layers) to this record.

        Args:
            other: another FlowRecord of the same model.
        """
        self.steps = np.concatenate([self.steps, other.steps])
        self.grad_norm = np.concatenate([self.grad_norm, other.grad_norm])
        self.delta_norm = np.concatenate([self.delta_norm, other.delta_norm])
        self.update_ratio = np.concatenate([self.update_ratio, other.update_ratio])
        self.problems += other.problems

    def summary(self) -> str:
        """A table: per layer, the median gradient norm, δ norm and update ratio over the steps."""
        lines = [f"{'layer':<12} {'kind':<34} {'|grad|':>10} {'|delta|':>10} {'update/weight':>14}"]
        for i, (name, kind) in enumerate(zip(self.layers, self.descriptions)):
            cells = [_median(column[:, i]) for column in (self.grad_norm, self.delta_norm, self.update_ratio)]
            lines.append(f"{name:<12} {kind[:34]:<34} {cells[0]:>10} {cells[1]:>10} {cells[2]:>14}")
        return "\n".join(lines)

    def check(self, exploding: float = EXPLODING, vanishing: float = VANISHING,
              vanishing_ratio: float = VANISHING_RATIO) -> list[str]:
        """The vanishing/exploding findings for these steps (see the module docstring).

        Args:
            exploding: a gradient norm above this (or not finite) is exploding.
            vanishing: a median gradient norm below this is vanishing.
            vanishing_ratio: a median gradient norm below this fraction of the largest layer's is vanishing.
        """
        if not len(self):
            return []
        found = []
        medians = np.array([np.nanmedian(self.grad_norm[:, i]) if np.any(~np.isnan(self.grad_norm[:, i])) else np.nan
                            for i in range(len(self.layers))])
        largest = np.nanmax(medians) if np.any(np.isfinite(medians)) else np.nan
        for i, name in enumerate(self.layers):
            column = self.grad_norm[:, i]
            if np.all(np.isnan(column)):
                continue
            bad = np.flatnonzero(~np.isfinite(column) | (column > exploding))
            if bad.size:
                first = int(bad[0])
                found.append(f"exploding gradient in layer {name!r} ({self.descriptions[i]}): norm {column[first]:.3g} "
                             f"at step {int(self.steps[first])} (threshold {exploding:g})")
                continue
            median = medians[i]
            if median < vanishing:
                found.append(f"vanishing gradient in layer {name!r} ({self.descriptions[i]}): median norm {median:.3g} "
                             f"< {vanishing:g}")
            elif math.isfinite(largest) and median < vanishing_ratio * largest:
                found.append(f"vanishing gradient in layer {name!r} ({self.descriptions[i]}): median norm {median:.3g} "
                             f"is below {vanishing_ratio:g} x the largest layer's ({largest:.3g})")
        return found


def _median(column: np.ndarray) -> str:
    finite = column[~np.isnan(column)]
    return f"{np.median(finite):.3g}" if finite.size else "-"


class GradientFlow:
    """Records gradient, δ and update norms per leaf layer (see the module docstring).

    every: record one step in ``every`` (the others cost nothing). update_ratio: keep a copy of
    the weights before each recorded step to measure the update (one model-sized copy).
    """

    def __init__(self, model: Layer, every: int = 1, update_ratio: bool = True):
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"GradientFlow: every must be a positive int, got {every!r}")
        self.model = model
        self.every = every
        self.measure_updates = update_ratio
        leaves = leaf_layers(model)
        self.names = [name for name, _ in leaves]
        self.descriptions = [layer.describe() for _, layer in leaves]
        self._index = {id(layer): i for i, (_, layer) in enumerate(leaves)}
        self._params = [layer.parameters() for _, layer in leaves]
        self._remove: Any = None
        self._step = 0
        self._recording = True
        self._delta_sq: list[Array | None] = [None] * len(leaves)
        self._grad_sq: list[Array | None] = []
        self._before: list[list[Array]] = []
        self._rows: list[Array] = []
        self._row_steps: list[int] = []
        self._nan: Array | None = None

    # -- attach ------------------------------------------------------------------------------
    def _device_context(self) -> Any:
        params = self.model.parameters() if hasattr(self, "model") else []
        return backend.device_context(params[0].value if params else None)

    def attach(self) -> "GradientFlow":
        """Start observing the model's layer calls (a call hook); returns self."""
        if self._remove is None:
            self._remove = add_call_hook(self._hook)
        return self

    def detach(self) -> None:
        """Stop observing (remove the call hook)."""
        if self._remove is not None:
            self._remove()
            self._remove = None

    def __enter__(self) -> "GradientFlow":
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _hook(self, layer: Layer, x: Array, y: Any, backprop: Any) -> Any:
        index = self._index.get(id(layer))
        if index is None or not self._recording:
            return backprop

        def observed(dy: Array) -> Array:
            dx = backprop(dy)
            if dx is not None and backend.is_array(dx):
                xp = backend.namespace(dx)
                squared = xp.sum(dx * dx)
                previous = self._delta_sq[index]
                self._delta_sq[index] = squared if previous is None else previous + squared
            return dx

        return observed

    # -- per step ----------------------------------------------------------------------------
    def begin_step(self, step: int | None = None) -> None:
        """Mark the start of a step (``step``: its number); decides whether it is recorded."""
        self._step = self._step if step is None else step
        self._recording = self._step % self.every == 0
        self._delta_sq = [None] * len(self.names)

    def after_backward(self) -> None:
        """Read this step's gradient norms (and copy the weights to measure the update), on the model's device."""
        with self._device_context():  # CuPy: the norms are computed on the model's GPU
            self._after_backward()

    def _after_backward(self) -> None:
        """Read the gradients (and copy the weights) before the optimizer step."""
        if not self._recording:
            return
        self._grad_sq = []
        for params in self._params:
            total = None
            for p in params:
                if p.grad is not None:
                    xp = backend.namespace(p.grad)
                    squared = xp.sum(p.grad * p.grad)
                    total = squared if total is None else total + squared
            self._grad_sq.append(total)
        if self.measure_updates:
            self._before = [[backend.namespace(p.value).asarray(p.value, copy=True) for p in params]
                            for params in self._params]

    def after_step(self) -> None:
        """Measure the update and store this step's row (on the device, no sync)."""
        with self._device_context():  # CuPy: the norms are computed on the model's GPU
            self._after_step()

    def _after_step(self) -> None:
        """Measure the update and store this step's row (on the device)."""
        if self._recording and self._grad_sq:
            values: list[Array | None] = []
            for i, params in enumerate(self._params):
                values.append(self._grad_sq[i])
                values.append(self._delta_sq[i])
                values.append(self._ratio_sq(params, self._before[i]) if self.measure_updates and params else None)
            self._rows.append(self._stack(values))
            self._row_steps.append(self._step)
        self._grad_sq, self._before = [], []
        self._step += 1
        self._recording = self._step % self.every == 0
        self._delta_sq = [None] * len(self.names)

    def _ratio_sq(self, params: list[Parameter], before: list[Array]) -> Array:
        change = weight = None
        for p, old in zip(params, before):
            xp = backend.namespace(old)
            d = p.value - old
            dc, wc = xp.sum(d * d), xp.sum(old * old)
            change = dc if change is None else change + dc
            weight = wc if weight is None else weight + wc
        return change / weight

    def _stack(self, values: list[Array | None]) -> Array:
        present = next(v for v in values if v is not None) if any(v is not None for v in values) else None
        if present is None:
            raise RuntimeError("GradientFlow: nothing was recorded in this step")
        xp = backend.namespace(present)
        if self._nan is None:
            with backend.device_of(present):
                self._nan = xp.full((), math.nan, dtype=xp.float64, device=present.device)
        return xp.stack([self._nan if v is None else xp.astype(xp.reshape(v, ()), xp.float64) for v in values])

    # -- results -----------------------------------------------------------------------------
    def fetch(self) -> FlowRecord:
        """The rows recorded since the last fetch, as a :class:`FlowRecord` (one transfer); clears them."""
        with self._device_context():  # CuPy: the norms are computed on the model's GPU
            return self._fetch()

    def _fetch(self) -> FlowRecord:
        """Move the rows recorded since the last fetch to the host (one transfer) and clear them."""
        layers = len(self.names)
        if self._rows:
            xp = backend.namespace(self._rows[0])
            table = np.sqrt(backend.to_numpy(xp.stack(self._rows)).reshape(len(self._rows), layers, 3))
        else:
            table = np.zeros((0, layers, 3))
        steps = np.asarray(self._row_steps, dtype=np.int64)
        self._rows, self._row_steps = [], []
        return FlowRecord(list(self.names), list(self.descriptions), steps,
                          table[:, :, 0], table[:, :, 1], table[:, :, 2])


class GradientFlowMonitor(Callback):
    """:class:`GradientFlow` inside ``fit``: records every ``every``-th step, fetches once per
    epoch, warns on vanishing or exploding gradients; the whole run is in ``self.record``.

    update_ratio: also record ‖Δθ‖/‖θ‖ per layer (one extra copy of the parameters per recorded
    step). vanishing_ratio: a layer whose median gradient norm is below this fraction of the
    largest layer's is reported as vanishing.
    """

    def __init__(self, every: int = 1, update_ratio: bool = True, warn: bool = True,
                 exploding: float = EXPLODING, vanishing: float = VANISHING, vanishing_ratio: float = VANISHING_RATIO):
        self.every = every
        self.update_ratio = update_ratio
        self.warn = warn
        self.thresholds = {"exploding": exploding, "vanishing": vanishing, "vanishing_ratio": vanishing_ratio}
        self.flow: GradientFlow | None = None
        self.record: FlowRecord | None = None

    def on_train_begin(self, state: TrainingState) -> None:
        """Attach a :class:`GradientFlow` to the model."""
        self.flow = GradientFlow(state.model, every=self.every, update_ratio=self.update_ratio).attach()

    def on_batch_begin(self, state: TrainingState) -> None:
        """Start the step's record."""
        self.flow.begin_step(state.step)

    def on_after_backward(self, state: TrainingState) -> None:
        """Read the step's gradient norms."""
        self.flow.after_backward()

    def on_batch_end(self, state: TrainingState, loss: Array) -> None:
        """Measure the step's update."""
        self.flow.after_step()

    def on_epoch_end(self, state: TrainingState, logs: dict[str, float]) -> None:
        """Fetch the epoch's rows, check them (warning with ``warn``) and add them to ``record``."""
        fresh = self.flow.fetch()
        fresh.problems = fresh.check(**self.thresholds)
        if self.warn:
            for problem in fresh.problems:
                warnings.warn(f"epoch {state.epoch + 1}: {problem}", GradientWarning, stacklevel=2)
        if self.record is None:
            self.record = fresh
        else:
            self.record.extend(fresh)

    def on_train_end(self, state: TrainingState) -> None:
        """Detach the hooks."""
        self.close()

    def close(self) -> None:
        """Detach the hooks (if attached)."""
        if self.flow is not None:
            self.flow.detach()


# --------------------------------------------------------------------------------------------
# Anomaly mode
# --------------------------------------------------------------------------------------------


def _arrays(value: Any) -> list[Array]:
    if backend.is_array(value):
        return [value]
    if isinstance(value, (tuple, list)):
        return [v for v in value if backend.is_array(v)]
    return []


def _first_bad(x: Array) -> tuple[str, tuple[int, ...]] | None:
    """None when every entry is finite, else ("NaN" or "Inf", index of the first bad entry)."""
    xp = backend.namespace(x)
    if not backend.is_floating(x.dtype):
        return None
    with backend.device_context(x):
        if bool(xp.all(xp.isfinite(x))):
            return None
    host = backend.to_numpy(x)
    flat = int(np.flatnonzero(~np.isfinite(host))[0])
    index = tuple(int(i) for i in np.unravel_index(flat, host.shape))
    return ("NaN" if np.isnan(host.flat[flat]) else "Inf"), index


@contextmanager
def detect_anomaly(model: Layer | None = None, check_parameters: bool = True) -> Iterator[None]:
    """Check every layer call's output, δ and parameter gradients for NaN/Inf (see module doc).

    model: used only to name layers by their path (``"2"``, ``"encoder.0"``); without it layers
    are named by their description.

    check_parameters: also check every parameter gradient after each backprop.
    """
    names = {id(layer): name for name, layer in model.sublayers()} if model is not None else {}

    def label(layer: Layer) -> str:
        name = names.get(id(layer))
        if name is None:
            return layer.describe()
        return f"layer {name!r} {layer.describe()}" if name else f"the model {layer.describe()}"

    def hook(layer: Layer, x: Any, y: Any, backprop: Any) -> Any:
        for output in _arrays(y):
            bad = _first_bad(output)
            if bad is None:
                continue
            for given in _arrays(x):
                if _first_bad(given) is not None:
                    raise AnomalyError(f"anomaly mode: the input of {label(layer)} already contains NaN/Inf "
                                       "(check the data, or the layer feeding it)")
            parameters = [n for n, p in layer.named_parameters() if _first_bad(p.value) is not None]
            cause = f"; its parameters are not finite: {', '.join(parameters)}" if parameters else ""
            raise AnomalyError(f"anomaly mode: the forward output of {label(layer)} contains {bad[0]} "
                               f"(first at index {bad[1]}) although its input is finite{cause}")

        def checked(dy: Array) -> Any:
            incoming = _first_bad(dy) if backend.is_array(dy) else None
            if incoming is not None:
                raise AnomalyError(f"anomaly mode: the δ arriving at {label(layer)} contains {incoming[0]} "
                                   f"(first at index {incoming[1]}): it comes from the loss or the layer above")
            dx = backprop(dy)
            for delta in _arrays(dx):
                bad = _first_bad(delta)
                if bad is not None:
                    raise AnomalyError(f"anomaly mode: the backprop of {label(layer)} produced a δ with {bad[0]} "
                                       f"(first at index {bad[1]}) from a finite incoming δ")
            if check_parameters:
                for name, p in layer._named_own(Parameter):
                    if p.grad is not None:
                        bad = _first_bad(p.grad)
                        if bad is not None:
                            raise AnomalyError(f"anomaly mode: the gradient of {name!r} in {label(layer)} contains "
                                               f"{bad[0]} (first at index {bad[1]})")
            return dx

        return checked

    remove = add_call_hook(hook)
    try:
        yield
    finally:
        remove()


__all__ = ["GradientFlow", "GradientFlowMonitor", "FlowRecord", "GradientWarning", "AnomalyError",
           "detect_anomaly", "leaf_layers", "EXPLODING", "VANISHING", "VANISHING_RATIO"]
