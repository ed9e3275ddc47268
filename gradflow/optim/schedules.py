"""Learning-rate schedules: callables ``schedule(step) -> lr`` that every optimizer accepts.

    from gradflow.optim import Adam, CosineAnnealing, LinearWarmup
    optimizer = Adam(model, lr=LinearWarmup(CosineAnnealing(1e-3, total_steps=10_000), warmup_steps=500))

``step`` counts optimizer steps (batches), starting at 0; the optimizer calls its schedule with
its own step counter, which checkpoints save, so a resumed run continues the schedule exactly.
For a schedule in epochs, give the sizes in steps (``step_size=10 * len(batches)``) or hand the
schedule to :class:`gradflow.callbacks.LearningRateScheduler`, which calls it once per epoch
with the epoch number.

Composition: :class:`LinearWarmup` wraps any schedule (or a constant) and hands it
``step − warmup_steps`` after the warm-up, so the wrapped schedule starts at its own step 0.

:class:`ReduceLROnPlateau` depends on a monitored metric, not only on the step. We made it a
schedule with an ``observe(value)`` method (rather than a callback): it plugs into any optimizer
like the others, composes with :class:`LinearWarmup`, and its state is saved with the optimizer.
``fit`` calls ``observe`` once per epoch with the metric it names (``monitor``, default
``"val_loss"``); in a loop of your own, call ``schedule.observe(value)`` yourself.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..validation import CheckedArguments


def _positive(owner: str, name: str, value: Any, integer: bool = False, allow_zero: bool = False) -> Any:
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or value != value:
        raise TypeError(f"{owner}: {name} must be {'an int' if integer else 'a number'}, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise ValueError(f"{owner}: {name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return value if integer else float(value)


def _fraction(owner: str, name: str, value: Any, high_inclusive: bool = False) -> float:
    value = _positive(owner, name, value)
    if value > 1 or (value == 1 and not high_inclusive):
        raise ValueError(f"{owner}: {name} must be in (0, 1{']' if high_inclusive else ')'}, got {value!r}")
    return value


class Schedule(CheckedArguments):
    """Base class: ``schedule(step) -> lr``, plus ``state_dict``/``load_state_dict`` for the few
    schedules that keep state (saved in checkpoints with the optimizer)."""

    def __call__(self, step: int) -> float:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"{type(self).__name__}: step must be a non-negative int, got {step!r}")
        return float(self._lr(step))

    def _lr(self, step: int) -> float:
        raise NotImplementedError

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def _fields(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if not k.startswith("_")}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v!r}" for k, v in self._fields().items())
        return f"{type(self).__name__}({inner})"


class StepLR(Schedule):
    """``lr · gamma^floor(step / step_size)``: multiply by ``gamma`` every ``step_size`` steps."""

    def __init__(self, lr: float, step_size: int, gamma: float = 0.1):
        self.lr = _positive("StepLR", "lr", lr)
        self.step_size = _positive("StepLR", "step_size", step_size, integer=True)
        self.gamma = _fraction("StepLR", "gamma", gamma, high_inclusive=True)

    def _lr(self, step):
        return self.lr * self.gamma ** (step // self.step_size)


class ExponentialLR(Schedule):
    """``lr · gamma^step``."""

    def __init__(self, lr: float, gamma: float):
        self.lr = _positive("ExponentialLR", "lr", lr)
        self.gamma = _fraction("ExponentialLR", "gamma", gamma, high_inclusive=True)

    def _lr(self, step):
        return self.lr * self.gamma**step


class CosineAnnealing(Schedule):
    """Half a cosine from ``lr`` down to ``min_lr`` over ``total_steps``, then ``min_lr``:
    ``min_lr + (lr − min_lr) · (1 + cos(π · step / total_steps)) / 2``."""

    def __init__(self, lr: float, total_steps: int, min_lr: float = 0.0):
        self.lr = _positive("CosineAnnealing", "lr", lr)
        self.total_steps = _positive("CosineAnnealing", "total_steps", total_steps, integer=True)
        self.min_lr = float(_positive("CosineAnnealing", "min_lr", min_lr, allow_zero=True))
        if self.min_lr > self.lr:
            raise ValueError(f"CosineAnnealing: min_lr ({min_lr}) must not exceed lr ({lr})")

    def _lr(self, step):
        if step >= self.total_steps:
            return self.min_lr
        return self.min_lr + (self.lr - self.min_lr) * 0.5 * (1.0 + math.cos(math.pi * step / self.total_steps))


class LinearWarmup(Schedule):
    """Ramp linearly from ``start_factor · target(0)`` to ``target(0)`` over ``warmup_steps``,
    then follow ``after`` (a schedule, shifted to start at its own step 0, or a constant lr).

    ``lr(step) = target(0) · (start_factor + (1 − start_factor) · step / warmup_steps)`` for
    step < warmup_steps, else ``after(step − warmup_steps)``.
    """

    def __init__(self, after: "float | Callable[[int], float]", warmup_steps: int, start_factor: float = 0.0):
        if callable(after):
            self.after = after
        else:
            self.after = _positive("LinearWarmup", "after (a constant lr)", after)
        self.warmup_steps = _positive("LinearWarmup", "warmup_steps", warmup_steps, integer=True)
        self.start_factor = float(_positive("LinearWarmup", "start_factor", start_factor, allow_zero=True))
        if self.start_factor > 1:
            raise ValueError(f"LinearWarmup: start_factor must be in [0, 1], got {start_factor}")

    def _target(self, step: int) -> float:
        return float(self.after(step)) if callable(self.after) else self.after

    def _lr(self, step):
        if step < self.warmup_steps:
            fraction = self.start_factor + (1.0 - self.start_factor) * step / self.warmup_steps
            return self._target(0) * fraction
        return self._target(step - self.warmup_steps)

    # Delegate the stateful parts, so LinearWarmup(ReduceLROnPlateau(...)) works in fit.
    @property
    def monitor(self) -> str | None:
        return getattr(self.after, "monitor", None)

    def observe(self, value: float) -> None:
        if hasattr(self.after, "observe"):
            self.after.observe(value)

    def state_dict(self) -> dict[str, Any]:
        inner = getattr(self.after, "state_dict", None)
        return {"after": inner()} if callable(inner) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "after" in state and hasattr(self.after, "load_state_dict"):
            self.after.load_state_dict(state["after"])


class OneCycle(Schedule):
    """The 1cycle policy (Smith & Topin 2019): cosine warm-up from ``max_lr / div_factor`` to
    ``max_lr`` over the first ``pct_start · total_steps`` steps, then cosine annealing down to
    ``max_lr / (div_factor · final_div_factor)`` at ``total_steps``; constant after that."""

    def __init__(self, max_lr: float, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4):
        self.max_lr = _positive("OneCycle", "max_lr", max_lr)
        self.total_steps = _positive("OneCycle", "total_steps", total_steps, integer=True)
        self.pct_start = _fraction("OneCycle", "pct_start", pct_start)
        self.div_factor = _positive("OneCycle", "div_factor", div_factor)
        self.final_div_factor = _positive("OneCycle", "final_div_factor", final_div_factor)

    def _lr(self, step):
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        peak = max(1, round(self.pct_start * self.total_steps))
        if step < peak:
            return _cosine(initial, self.max_lr, step / peak)
        tail = max(1, self.total_steps - peak)
        return _cosine(self.max_lr, final, min(1.0, (step - peak) / tail))


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * fraction))


def _mode_for(name: str) -> str:
    """"max" for scores (accuracy, precision, recall, f1, r2), "min" for losses and errors."""
    base = name[4:] if name.startswith("val_") else name
    return "max" if any(word in base for word in ("acc", "precision", "recall", "f1", "r2")) else "min"


class ReduceLROnPlateau(Schedule):
    """Multiply the lr by ``factor`` once ``monitor`` has not improved for ``patience`` epochs in a row.

    An improvement is ``value < best − min_delta`` (``mode="min"``) or ``value > best + min_delta``
    (``"max"``); ``patience=0`` reduces at the first epoch without one (Keras's convention). After a
    reduction, the next ``cooldown`` observations are ignored; the lr never goes below ``min_lr``. The step argument is ignored: the lr changes only through :meth:`observe`, which
    ``fit`` calls at the end of every epoch with ``logs[monitor]``.
    """

    def __init__(self, lr: float, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, mode: str = "auto", cooldown: int = 0, min_lr: float = 0.0):
        self.lr = _positive("ReduceLROnPlateau", "lr", lr)
        self.monitor = monitor
        self.factor = _fraction("ReduceLROnPlateau", "factor", factor)
        self.patience = _positive("ReduceLROnPlateau", "patience", patience, integer=True, allow_zero=True)
        self.min_delta = float(_positive("ReduceLROnPlateau", "min_delta", min_delta, allow_zero=True))
        if mode == "auto":
            mode = _mode_for(monitor)
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceLROnPlateau: mode must be 'min', 'max' or 'auto', got {mode!r}")
        self.mode = mode
        self.cooldown = _positive("ReduceLROnPlateau", "cooldown", cooldown, integer=True, allow_zero=True)
        self.min_lr = float(_positive("ReduceLROnPlateau", "min_lr", min_lr, allow_zero=True))
        self._current = self.lr
        self._best: float | None = None
        self._wait = 0
        self._cooldown_left = 0
        self._reductions = 0

    @property
    def reductions(self) -> int:
        """How many times the lr has been reduced."""
        return self._reductions

    def _lr(self, step):
        return self._current

    def observe(self, value: float) -> None:
        """Record one value of the monitored metric (once per epoch)."""
        value = float(value)
        if value != value:
            return  # NaN never counts as an improvement, nor as a patience tick
        improved = self._best is None or (
            value < self._best - self.min_delta if self.mode == "min" else value > self._best + self.min_delta
        )
        if improved:
            self._best = value
        if self._cooldown_left > 0:  # the epochs right after a reduction are ignored
            self._cooldown_left -= 1
            self._wait = 0
            return
        if improved:
            self._wait = 0
            return
        self._wait += 1
        if self._wait >= self.patience:
            reduced = max(self._current * self.factor, self.min_lr)
            if reduced < self._current:
                self._current = reduced
                self._reductions += 1
            self._wait = 0
            self._cooldown_left = self.cooldown

    def state_dict(self) -> dict[str, Any]:
        return {"current": self._current, "best": self._best, "wait": self._wait,
                "cooldown_left": self._cooldown_left, "reductions": self._reductions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._current = float(state["current"])
        self._best = None if state["best"] is None else float(state["best"])
        self._wait = int(state["wait"])
        self._cooldown_left = int(state["cooldown_left"])
        self._reductions = int(state.get("reductions", 0))


__all__ = ["Schedule", "StepLR", "ExponentialLR", "CosineAnnealing", "LinearWarmup", "OneCycle", "ReduceLROnPlateau"]
