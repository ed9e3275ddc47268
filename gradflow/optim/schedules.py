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

import bisect
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
        """JSON-serialisable state to resume with (empty for stateless schedules)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`."""
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
    ``min_lr + (lr − min_lr) · (1 + cos(π · step / total_steps)) / 2``.

    Equal to ``torch.optim.lr_scheduler.CosineAnnealingLR(T_max=total_steps, eta_min=min_lr)``
    for ``step ≤ total_steps``; after that PyTorch's cosine rises again, ours stays at ``min_lr``
    (use :class:`CosineAnnealingWarmRestarts` for restarts). The tests check both."""

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
        """The metric the wrapped schedule watches (None if it watches none)."""
        return getattr(self.after, "monitor", None)

    def observe(self, value: float) -> None:
        """Pass the monitored ``value`` on to the wrapped schedule (if it observes)."""
        if hasattr(self.after, "observe"):
            self.after.observe(value)

    def state_dict(self) -> dict[str, Any]:
        """``{"after": ...}``: the wrapped schedule's state."""
        inner = getattr(self.after, "state_dict", None)
        return {"after": inner()} if callable(inner) else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the wrapped schedule's state."""
        if "after" in state and hasattr(self.after, "load_state_dict"):
            self.after.load_state_dict(state["after"])


class OneCycle(Schedule):
    """The 1cycle policy (Smith & Topin 2019), step for step as ``torch.optim.lr_scheduler.OneCycleLR``.

    Two phases (three with ``three_phase``), each annealing (cosine, or linear with
    ``anneal_strategy="linear"``) between its start and end lr over ``[start, end]`` steps:
    ``initial = max_lr / div_factor``, ``final = initial / final_div_factor``, ``p = pct_start ·
    total_steps``. Two phases: initial → max_lr over [0, p − 1], then max_lr → final over
    [p − 1, total_steps − 1]. Three phases: initial → max_lr over [0, p − 1], max_lr → initial
    over [p − 1, 2p − 2], initial → final over [2p − 2, total_steps − 1]. The lr at step
    ``total_steps − 1`` is ``final``; later steps stay there (PyTorch raises instead).
    Cosine annealing from a to b at fraction f: ``b + (a − b)(1 + cos πf)/2``; linear:
    ``a + (b − a) f``.

    (Before this release gradflow's curve was PyTorch's shifted by one step, so the final lr was
    never used.)
    """

    def __init__(self, max_lr: float, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, anneal_strategy: str = "cos", three_phase: bool = False):
        self.max_lr = _positive("OneCycle", "max_lr", max_lr)
        self.total_steps = _positive("OneCycle", "total_steps", total_steps, integer=True)
        self.pct_start = _fraction("OneCycle", "pct_start", pct_start)
        self.div_factor = _positive("OneCycle", "div_factor", div_factor)
        self.final_div_factor = _positive("OneCycle", "final_div_factor", final_div_factor)
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycle: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        self.anneal_strategy = anneal_strategy
        if not isinstance(three_phase, bool):
            raise TypeError(f"OneCycle: three_phase must be True or False, got {three_phase!r}")
        self.three_phase = three_phase

    def _phases(self) -> list[tuple[float, float, float]]:
        """[(end step, start lr, end lr)] in PyTorch's layout."""
        initial = self.max_lr / self.div_factor
        final = initial / self.final_div_factor
        peak = float(self.pct_start * self.total_steps) - 1
        if self.three_phase:
            return [(peak, initial, self.max_lr), (2 * peak, self.max_lr, initial),
                    (self.total_steps - 1, initial, final)]
        return [(peak, initial, self.max_lr), (self.total_steps - 1, self.max_lr, final)]

    def _lr(self, step):
        step = min(step, self.total_steps - 1)
        start = 0.0
        anneal = _cosine if self.anneal_strategy == "cos" else _linear
        phases = self._phases()
        for i, (end, low, high) in enumerate(phases):
            if step <= end or i == len(phases) - 1:
                fraction = (step - start) / (end - start) if end != start else 1.0
                return anneal(low, high, fraction)
            start = end
        raise AssertionError("unreachable")


def _linear(start: float, end: float, fraction: float) -> float:
    return (end - start) * fraction + start


def _cosine(start: float, end: float, fraction: float) -> float:
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * fraction))


def _mode_for(name: str) -> str:
    """"max" for scores (accuracy, precision, recall, f1, r2), "min" for losses and errors."""
    base = name[4:] if name.startswith("val_") else name
    return "max" if any(word in base for word in ("acc", "precision", "recall", "f1", "r2")) else "min"


class ReduceLROnPlateau(Schedule):
    """Multiply the lr by ``factor`` once ``monitor`` has not improved for ``patience`` epochs in a row.

    An improvement is ``value < best − min_delta`` (``mode="min"``) or ``value > best + min_delta``
    (``"max"``) with ``threshold_mode="abs"`` (the default); with ``"rel"`` it is
    ``value < best · (1 − min_delta)`` or ``value > best · (1 + min_delta)`` (PyTorch's default
    mode, where ``min_delta`` is its ``threshold``). After a reduction, the next ``cooldown``
    observations are ignored; the lr never goes below ``min_lr``. The step argument is ignored:
    the lr changes only through :meth:`observe`, which ``fit`` calls at the end of every epoch
    with ``logs[monitor]``.

    **Patience differs from PyTorch by one** (deliberately, Keras's convention): the lr drops at
    the ``patience``-th epoch in a row without improvement, so ``patience=0`` reduces at the first
    such epoch; PyTorch's ``ReduceLROnPlateau(patience=p)`` drops after ``p + 1`` such epochs.
    ``ReduceLROnPlateau(patience=p + 1, threshold_mode="rel")`` here gives PyTorch's
    ``patience=p`` sequence (the tests compare them).
    """

    def __init__(self, lr: float, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10,
                 min_delta: float = 1e-4, mode: str = "auto", cooldown: int = 0, min_lr: float = 0.0,
                 threshold_mode: str = "abs"):
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
        if threshold_mode not in ("abs", "rel"):
            raise ValueError(f"ReduceLROnPlateau: threshold_mode must be 'abs' or 'rel', got {threshold_mode!r}")
        self.threshold_mode = threshold_mode
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
        improved = self._best is None or self._improves(value, self._best)
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

    def _improves(self, value: float, best: float) -> bool:
        if self.threshold_mode == "rel":
            if self.mode == "min":
                return value < best * (1.0 - self.min_delta)
            return value > best * (1.0 + self.min_delta)
        return value < best - self.min_delta if self.mode == "min" else value > best + self.min_delta

    def state_dict(self) -> dict[str, Any]:
        """The current lr, best value, wait, cooldown and number of reductions."""
        return {"current": self._current, "best": self._best, "wait": self._wait,
                "cooldown_left": self._cooldown_left, "reductions": self._reductions}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`."""
        self._current = float(state["current"])
        self._best = None if state["best"] is None else float(state["best"])
        self._wait = int(state["wait"])
        self._cooldown_left = int(state["cooldown_left"])
        self._reductions = int(state.get("reductions", 0))


class MultiStepLR(Schedule):
    """``lr · gamma^k`` with k the number of ``milestones`` ≤ step (as PyTorch's MultiStepLR).

    lr: > 0. milestones: increasing steps (ints ≥ 1). gamma: in (0, 1].
    """

    def __init__(self, lr: float, milestones: "list[int] | tuple[int, ...]", gamma: float = 0.1):
        self.lr = _positive("MultiStepLR", "lr", lr)
        if not isinstance(milestones, (list, tuple)) or not milestones:
            raise TypeError(f"MultiStepLR: milestones must be a non-empty list of steps, got {milestones!r}")
        for m in milestones:
            _positive("MultiStepLR", "milestones[...]", m, integer=True)
        if list(milestones) != sorted(set(milestones)):
            raise ValueError(f"MultiStepLR: milestones must be strictly increasing, got {list(milestones)}")
        self.milestones = tuple(milestones)
        self.gamma = _fraction("MultiStepLR", "gamma", gamma, high_inclusive=True)

    def _lr(self, step):
        return self.lr * self.gamma ** bisect.bisect_right(self.milestones, step)


class PolynomialLR(Schedule):
    """``lr · (1 − min(step, total_steps) / total_steps)^power`` (as PyTorch's PolynomialLR with
    ``total_iters=total_steps``): 0 from ``total_steps`` on.

    lr: > 0. total_steps: int > 0. power: > 0 (1: linear decay).
    """

    def __init__(self, lr: float, total_steps: int, power: float = 1.0):
        self.lr = _positive("PolynomialLR", "lr", lr)
        self.total_steps = _positive("PolynomialLR", "total_steps", total_steps, integer=True)
        self.power = _positive("PolynomialLR", "power", power)

    def _lr(self, step):
        return self.lr * (1.0 - min(step, self.total_steps) / self.total_steps) ** self.power


class CosineAnnealingWarmRestarts(Schedule):
    """SGDR (Loshchilov & Hutter 2017), as PyTorch's CosineAnnealingWarmRestarts:
    ``min_lr + (lr − min_lr)(1 + cos(π T_cur / T_i)) / 2``, where the i-th cycle lasts
    ``T_i = first_cycle · cycle_mult^i`` steps and ``T_cur`` counts steps since the last restart.

    lr: > 0. first_cycle: T_0, int > 0. cycle_mult: int ≥ 1. min_lr: ≥ 0, ≤ lr.
    """

    def __init__(self, lr: float, first_cycle: int, cycle_mult: int = 1, min_lr: float = 0.0):
        self.lr = _positive("CosineAnnealingWarmRestarts", "lr", lr)
        self.first_cycle = _positive("CosineAnnealingWarmRestarts", "first_cycle", first_cycle, integer=True)
        self.cycle_mult = _positive("CosineAnnealingWarmRestarts", "cycle_mult", cycle_mult, integer=True)
        self.min_lr = float(_positive("CosineAnnealingWarmRestarts", "min_lr", min_lr, allow_zero=True))
        if self.min_lr > self.lr:
            raise ValueError(f"CosineAnnealingWarmRestarts: min_lr ({min_lr}) must not exceed lr ({lr})")

    def _lr(self, step):
        if self.cycle_mult == 1:
            length, position = self.first_cycle, step % self.first_cycle
        else:
            cycle = int(math.log(step / self.first_cycle * (self.cycle_mult - 1) + 1, self.cycle_mult))
            position = step - self.first_cycle * (self.cycle_mult**cycle - 1) / (self.cycle_mult - 1)
            length = self.first_cycle * self.cycle_mult**cycle
        return self.min_lr + (self.lr - self.min_lr) * (1 + math.cos(math.pi * position / length)) / 2


class CyclicLR(Schedule):
    """Cyclical learning rates (Smith 2017), as PyTorch's CyclicLR: triangles between
    ``base_lr`` and ``max_lr``, rising over ``step_size_up`` steps and falling over
    ``step_size_down`` (default: the same).

    ``cycle = ⌊1 + step / (up + down)⌋``, ``x = 1 + step / (up + down) − cycle``;
    ``s = x / r`` if ``x ≤ r`` else ``(x − 1) / (r − 1)`` with ``r = up / (up + down)``;
    ``lr = base_lr + (max_lr − base_lr) · s · scale``, ``scale`` = 1 (``"triangular"``),
    ``1 / 2^(cycle − 1)`` (``"triangular2"``) or ``gamma^step`` (``"exp_range"``).

    base_lr, max_lr: > 0. step_size_up: int > 0. step_size_down: int > 0 or None.
    mode: one of the three above. gamma: in (0, 1], for ``"exp_range"``.
    """

    def __init__(self, base_lr: float, max_lr: float, step_size_up: int = 2000, step_size_down: int | None = None,
                 mode: str = "triangular", gamma: float = 1.0):
        self.base_lr = _positive("CyclicLR", "base_lr", base_lr)
        self.max_lr = _positive("CyclicLR", "max_lr", max_lr)
        self.step_size_up = _positive("CyclicLR", "step_size_up", step_size_up, integer=True)
        self.step_size_down = self.step_size_up if step_size_down is None else _positive(
            "CyclicLR", "step_size_down", step_size_down, integer=True)
        if mode not in ("triangular", "triangular2", "exp_range"):
            raise ValueError(f"CyclicLR: mode must be 'triangular', 'triangular2' or 'exp_range', got {mode!r}")
        self.mode = mode
        self.gamma = _fraction("CyclicLR", "gamma", gamma, high_inclusive=True)

    def _lr(self, step):
        total = float(self.step_size_up + self.step_size_down)
        ratio = self.step_size_up / total
        cycle = math.floor(1 + step / total)
        x = 1.0 + step / total - cycle
        scale_factor = x / ratio if x <= ratio else (x - 1) / (ratio - 1)
        height = (self.max_lr - self.base_lr) * scale_factor
        if self.mode == "triangular":
            return self.base_lr + height
        if self.mode == "triangular2":
            return self.base_lr + height * (1 / (2.0 ** (cycle - 1)))
        return self.base_lr + height * self.gamma**step


class SequentialLR(Schedule):
    """Chain schedules: ``schedules[i]`` runs from ``milestones[i − 1]`` (0 for the first) and is
    handed ``step − milestones[i − 1]``, so each starts at its own step 0 (as PyTorch's
    SequentialLR). A constant lr may stand in for a schedule.

    schedules: callables ``step -> lr`` (or floats > 0), at least two. milestones: strictly
    increasing ints ≥ 1, one fewer than the schedules. ``observe`` and the state of stateful
    schedules (ReduceLROnPlateau) are passed through, so it works with ``fit`` and checkpoints.
    """

    def __init__(self, schedules: list[Any], milestones: "list[int] | tuple[int, ...]"):
        if not isinstance(schedules, (list, tuple)) or len(schedules) < 2:
            raise TypeError(f"SequentialLR: schedules must be a list of at least two schedules, got {schedules!r}")
        for i, schedule in enumerate(schedules):
            if not callable(schedule):
                _positive("SequentialLR", f"schedules[{i}] (a constant lr)", schedule)
        if not isinstance(milestones, (list, tuple)) or len(milestones) != len(schedules) - 1:
            raise ValueError(f"SequentialLR: milestones must be a list of {len(schedules) - 1} steps (one fewer than "
                             f"the schedules), got {milestones!r}")
        for m in milestones:
            _positive("SequentialLR", "milestones[...]", m, integer=True)
        if list(milestones) != sorted(set(milestones)):
            raise ValueError(f"SequentialLR: milestones must be strictly increasing, got {list(milestones)}")
        self.schedules = list(schedules)
        self.milestones = tuple(milestones)

    def _lr(self, step):
        i = bisect.bisect_right(self.milestones, step)
        schedule = self.schedules[i]
        start = self.milestones[i - 1] if i else 0
        return float(schedule(step - start)) if callable(schedule) else schedule

    @property
    def monitor(self) -> str | None:
        """The metric the first monitoring schedule watches (None if none does)."""
        return next((s.monitor for s in self.schedules if getattr(s, "monitor", None)), None)

    def observe(self, value: float) -> None:
        """Pass the monitored ``value`` on to every schedule that observes."""
        for schedule in self.schedules:
            if hasattr(schedule, "observe"):
                schedule.observe(value)

    def state_dict(self) -> dict[str, Any]:
        """``{"schedules": [...]}``: each schedule's state."""
        return {"schedules": [s.state_dict() if callable(getattr(s, "state_dict", None)) else {}
                              for s in self.schedules]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore each schedule's state (the counts must match)."""
        saved = state.get("schedules", [])
        if len(saved) != len(self.schedules):
            raise ValueError(f"SequentialLR.load_state_dict: {len(saved)} saved states for {len(self.schedules)} schedules")
        for schedule, inner in zip(self.schedules, saved):
            if inner and hasattr(schedule, "load_state_dict"):
                schedule.load_state_dict(inner)


__all__ = ["Schedule", "StepLR", "MultiStepLR", "ExponentialLR", "PolynomialLR", "CosineAnnealing",
           "CosineAnnealingWarmRestarts", "CyclicLR", "LinearWarmup", "OneCycle", "ReduceLROnPlateau", "SequentialLR"]
