"""Callbacks: code that ``fit`` runs at fixed points of training.

    fit(model, loss, optimizer, data, epochs=50, validation=(x_val, y_val), callbacks=[
        EarlyStopping(monitor="val_loss", patience=5, restore_best_weights=True),
        ModelCheckpoint("best.safetensors", monitor="val_accuracy", save_best_only=True),
        TerminateOnNaN(),
        CSVLogger("history.csv"),
    ])

A callback overrides any of the hooks below; each receives the :class:`TrainingState` (model,
optimizer, history, epoch, step, ...). Set ``state.stop_training = True`` (and
``state.stop_reason``) to end training after the current step.

Hooks, in order::

    on_train_begin
      on_epoch_begin
        on_batch_begin, on_after_backward (gradients filled, before the optimizer step),
        on_batch_end(loss)                 # loss: a 0-d DEVICE array; fetching it is a sync
      on_epoch_end(logs)                   # logs: host floats, "loss", metrics, "val_*", "lr"
    on_train_end

``close()`` is called on every exit from ``fit``, also when training raises.

Training steps have no device-to-host synchronisation of their own; a callback that fetches a
device value in ``on_batch_*`` (TerminateOnNaN, the progress bar) says so in its docstring.
Callbacks with state worth resuming (EarlyStopping) implement ``state_dict``/``load_state_dict``;
:class:`ModelCheckpoint` saves it and ``fit(resume=...)`` restores it.
"""

from __future__ import annotations

import csv
import json
import math
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import backend
from .backend import Array
from .metrics import mode_of
from .validation import CheckedArguments


class History(dict):
    """Per-epoch values by name: ``history["loss"]``, ``history["val_accuracy"]``, ``history["lr"]``.

    ``epochs`` lists the (1-based) epoch numbers the values belong to; ``stop_reason`` says why
    training ended early (``None`` when it ran all its epochs).

    Constructed like a dict (``args``, ``kwargs``: as ``dict(...)``), usually empty.
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.epochs: list[int] = []
        self.stop_reason: str | None = None

    def last(self, name: str) -> float:
        """The last value logged under ``name``.

        Args:
            name: a log name such as "loss" or "val_accuracy".
        """
        return self[name][-1]

    def append(self, epoch: int, logs: dict[str, float]) -> None:
        """Record one epoch's logs; a key that appears late is padded with NaN for earlier epochs."""
        for name, value in logs.items():
            values = self.setdefault(name, [])
            values.extend([math.nan] * (len(self.epochs) - len(values)))
            values.append(float(value))
        self.epochs.append(epoch)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable copy (for checkpoints)."""
        return {"epochs": list(self.epochs), "values": {k: list(v) for k, v in self.items()},
                "stop_reason": self.stop_reason}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "History":
        """The History that :meth:`to_dict` described.

        Args:
            data: the dict :meth:`to_dict` returned.
        """
        history = cls(data.get("values", {}))
        history.epochs = list(data.get("epochs", []))
        history.stop_reason = data.get("stop_reason")
        return history


@dataclass
class TrainingState:
    """What callbacks see. ``epoch`` and ``batch`` (index within the epoch) are 0-based; ``step``
    is the 0-based index of the current optimizer step counted from the start of training
    (resumed runs included), and the number of steps done once an epoch ends; ``first_step`` is
    where this ``fit`` call began."""

    model: Any
    optimizer: Any
    loss: Any
    data: Any  # the BatchIterator
    history: History
    epochs: int
    steps_per_epoch: int
    epoch: int = 0
    batch: int = 0
    step: int = 0
    first_step: int = 0
    stop_training: bool = False
    stop_reason: str | None = None
    callbacks: list["Callback"] = field(default_factory=list)
    train_metrics: list[Any] = field(default_factory=list)
    before_step: Any = None  # fit's hook between backprop and the optimizer step

    def stop(self, reason: str) -> None:
        """Ask ``fit`` to stop after the current step, recording why.

        Ask ``fit`` to stop after the current batch.

        Args:
            reason: why, kept as ``history.stop_reason``.
        """
        self.stop_training = True
        if self.stop_reason is None:
            self.stop_reason = reason


class Callback(CheckedArguments):
    """Base class: every hook does nothing."""

    def on_train_begin(self, state: TrainingState) -> None:
        """Called once before the first epoch."""

    def on_epoch_begin(self, state: TrainingState) -> None:
        """Called at the start of every epoch."""

    def on_batch_begin(self, state: TrainingState) -> None:
        """Called before every training step's forward."""

    def on_after_backward(self, state: TrainingState) -> None:
        """Called after the backward of every step, before the optimizer step."""

    def on_batch_end(self, state: TrainingState, loss: Array) -> None:
        """Called after every optimizer step, with the batch's loss (a device array)."""

    def on_epoch_end(self, state: TrainingState, logs: dict[str, float]) -> None:
        """Called after every epoch with its logs (train and validation values by name)."""

    def on_train_end(self, state: TrainingState) -> None:
        """Called once when training ends (normally or stopped early)."""

    def close(self) -> None:
        """Release what the callback holds (hooks, open bars); ``fit`` calls it on every exit,
        also when training raises."""

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable state to resume with (saved by ModelCheckpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`."""
        pass


def callback_key(index: int, callback: Callback) -> str:
    """How a callback's state is keyed in a checkpoint: ``"2.EarlyStopping"``.

    Args:
        index: the callback's position in the list.
        callback: the callback.
    """
    return f"{index}.{type(callback).__name__}"


def _resolve_mode(owner: str, monitor: str, mode: str) -> str:
    if mode == "auto":
        return mode_of(monitor)
    if mode not in ("min", "max"):
        raise ValueError(f"{owner}: mode must be 'min', 'max' or 'auto', got {mode!r}")
    return mode


def _monitored(owner: str, monitor: str, logs: dict[str, float]) -> float:
    if monitor not in logs:
        raise KeyError(
            f"{owner}: monitor {monitor!r} is not among this epoch's logs ({', '.join(sorted(logs))}); "
            "give validation data for val_* names, or add the metric with fit(metrics=[...])"
        )
    return float(logs[monitor])


class _Improvement:
    """Tracks the best value of a monitored quantity."""

    def __init__(self, mode: str, min_delta: float):
        self.mode = mode
        self.min_delta = abs(float(min_delta))
        self.best: float | None = None

    def improves(self, value: float) -> bool:
        if value != value:
            return False
        if self.best is None:
            return True
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by more than ``min_delta`` for ``patience`` epochs.

    ``restore_best_weights``: at the end of training, put back the weights of the best epoch
    (kept as device copies, no host transfer). ``baseline``: stop unless the monitored value
    beats it within ``patience`` epochs. ``mode="auto"`` minimises losses and errors and
    maximises accuracy, precision, recall, F1 and R².
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0, mode: str = "auto",
                 restore_best_weights: bool = False, baseline: float | None = None, verbose: bool = True):
        """verbose: print a line when training stops or weights are restored."""
        if isinstance(patience, bool) or not isinstance(patience, int) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be a non-negative int, got {patience!r}")
        self.monitor = monitor
        self.patience = patience
        self.mode = _resolve_mode("EarlyStopping", monitor, mode)
        self.restore_best_weights = restore_best_weights
        self.baseline = baseline
        self.verbose = verbose
        self._tracker = _Improvement(self.mode, min_delta)
        self.wait = 0
        self.best_epoch: int | None = None
        self.stopped_epoch: int | None = None
        self._best_weights: dict[str, Array] | None = None
        self._restored = False

    @property
    def best(self) -> float | None:
        """The best monitored value so far (None before the first epoch)."""
        return self._tracker.best

    def on_train_begin(self, state):
        """Reset the best value and patience (kept when a checkpoint's state was just loaded)."""
        if self._restored:  # state loaded from a checkpoint by fit(resume=...): keep it
            self._restored = False
            return
        self._tracker.best = None if self.baseline is None else float(self.baseline)
        self.wait, self.best_epoch, self.stopped_epoch, self._best_weights = 0, None, None, None

    def on_epoch_end(self, state, logs):
        """Track the monitored value; stop training after ``patience`` epochs without improvement."""
        value = _monitored("EarlyStopping", self.monitor, logs)
        if self._tracker.improves(value):
            self._tracker.best = value
            self.best_epoch = state.epoch + 1
            self.wait = 0
            if self.restore_best_weights:
                self._best_weights = _copy_state(state.model)
            return
        self.wait += 1
        if self.wait >= self.patience:
            self.stopped_epoch = state.epoch + 1
            state.stop(f"EarlyStopping: {self.monitor} did not improve for {self.wait} epoch(s) "
                       f"(best {self.best:.6g} at epoch {self.best_epoch})")

    def on_train_end(self, state):
        """Restore the best epoch's weights (with ``restore_best_weights``) unless the last epoch was best."""
        if not self.restore_best_weights or self._best_weights is None:
            return
        last = state.history.epochs[-1] if state.history.epochs else None
        if last == self.best_epoch:
            return
        state.model.load_state_dict(self._best_weights)
        if self.verbose:
            print(f"EarlyStopping: restored the weights of epoch {self.best_epoch} "
                  f"({self.monitor} {self.best:.6g})", file=sys.stdout, flush=True)

    def state_dict(self):
        """``{"best", "wait", "best_epoch"}`` to resume with."""
        return {"best": self.best, "wait": self.wait, "best_epoch": self.best_epoch}

    def load_state_dict(self, state):
        """Restore ``best``, ``wait`` and ``best_epoch``; the next ``on_train_begin`` keeps them."""
        self._tracker.best = state.get("best")
        self.wait = int(state.get("wait", 0))
        self.best_epoch = state.get("best_epoch")
        self._restored = True


def _copy_state(model: Any) -> dict[str, Array]:
    copies = {}
    for name, array in model.state_dict().items():
        copies[name] = backend.namespace(array).asarray(array, copy=True)
    return copies


class ModelCheckpoint(Callback):
    """Save a checkpoint (model, optimizer, data order, RNG states, history; see
    :func:`gradflow.save`) at the end of every epoch, or only when ``monitor`` improves
    (``save_best_only=True``).

    ``path`` may hold ``{epoch}`` and any log name: ``"ckpt-{epoch:03d}-{val_loss:.3f}.safetensors"``.
    ``every``: save every n-th epoch (without ``save_best_only``). ``extra``: a JSON-serialisable
    dict stored in each checkpoint (``load(...).extra``). Every write is atomic, so an
    interrupted save leaves the previous file intact.
    """

    def __init__(self, path: "str | os.PathLike", monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto", every: int = 1, verbose: bool = False, extra: dict[str, Any] | None = None):
        """verbose: print a line for every file written."""
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"ModelCheckpoint: every must be a positive int, got {every!r}")
        self.path = str(path)
        self.monitor = monitor
        self.save_best_only = save_best_only
        self.mode = _resolve_mode("ModelCheckpoint", monitor, mode)
        self.every = every
        self.verbose = verbose
        self.extra = extra
        self._tracker = _Improvement(self.mode, 0.0)
        self._restored = False
        self.saved: list[str] = []

    def on_train_begin(self, state):
        """Forget the best value (kept when a checkpoint's state was just loaded)."""
        if not self._restored:
            self._tracker.best = None
        self._restored = False

    def on_epoch_end(self, state, logs):
        """Save a checkpoint (every ``every`` epochs, or when the monitored value improved)."""
        epoch = state.epoch + 1
        if self.save_best_only:
            value = _monitored("ModelCheckpoint", self.monitor, logs)
            if not self._tracker.improves(value):
                return
            self._tracker.best = value
        elif epoch % self.every:
            return
        from .checkpoint import save

        try:
            target = self.path.format(epoch=epoch, **logs)
        except (KeyError, IndexError, ValueError) as error:
            raise ValueError(f"ModelCheckpoint: cannot fill in the path {self.path!r} ({error}); "
                             f"available names: epoch, {', '.join(sorted(logs))}") from None
        save(target, state.model, state.optimizer, epoch=epoch, step=state.step, data=state.data,
             history=state.history, callbacks=state.callbacks, extra=self.extra)
        self.saved.append(target)
        if self.verbose:
            print(f"ModelCheckpoint: saved {target}", file=sys.stdout, flush=True)

    def state_dict(self):
        """``{"best"}``: the best monitored value so far."""
        return {"best": self._tracker.best}

    def load_state_dict(self, state):
        """Restore the best value; the next ``on_train_begin`` keeps it."""
        self._tracker.best = state.get("best")
        self._restored = True


class TerminateOnNaN(Callback):
    """Stop as soon as the training loss is NaN or Inf, naming the step, epoch and batch.

    Every ``check_every`` steps the losses of those steps are fetched together (one transfer):
    ``check_every=1`` (the default) stops right after the bad step at the price of one sync per
    step; a larger value syncs less and still names the exact step, but may run up to
    ``check_every − 1`` more steps first. Remaining steps are checked at the end of the epoch.
    """

    def __init__(self, check_every: int = 1):
        if isinstance(check_every, bool) or not isinstance(check_every, int) or check_every < 1:
            raise ValueError(f"TerminateOnNaN: check_every must be a positive int, got {check_every!r}")
        self.check_every = check_every
        self._pending: list[tuple[Array, int, int, int]] = []
        self.bad_step: int | None = None

    def on_train_begin(self, state):
        """Forget pending losses and any bad step."""
        self._pending, self.bad_step = [], None

    def on_batch_end(self, state, loss):
        """Keep the loss; check the pending ones every ``check_every`` steps."""
        self._pending.append((loss, state.step, state.epoch, state.batch))
        if len(self._pending) >= self.check_every:
            self._check(state)

    def on_epoch_end(self, state, logs):
        """Check the losses still pending."""
        self._check(state)

    def _check(self, state: TrainingState) -> None:
        if not self._pending or self.bad_step is not None:
            self._pending.clear()
            return
        xp = backend.namespace(self._pending[0][0])
        losses = xp.stack([xp.reshape(item[0], ()) for item in self._pending])
        host = backend.to_numpy(losses)
        pending, self._pending = self._pending, []
        for value, (_, step, epoch, batch) in zip(host.tolist(), pending):
            if not math.isfinite(value):
                self.bad_step = step
                message = (f"TerminateOnNaN: the training loss was {value} at step {step} "
                           f"(epoch {epoch + 1}, batch {batch + 1} of {state.steps_per_epoch}); training stopped")
                print(message, file=sys.stderr, flush=True)
                state.stop(message)
                return


class LearningRateScheduler(Callback):
    """Set the optimizer's lr at the start of every epoch: ``schedule(epoch)`` or
    ``schedule(epoch, lr)`` (epoch 0-based). Any :mod:`gradflow.optim.schedules` schedule
    works here with its steps read as epochs: ``LearningRateScheduler(StepLR(0.1, step_size=30))``.

    This replaces a per-step schedule given to the optimizer; use one or the other.
    """

    def __init__(self, schedule: Callable[..., float], verbose: bool = False):
        """Args:
            schedule: ``f(epoch) -> lr`` or ``f(epoch, lr) -> lr``, called before each epoch.
            verbose: print the learning rate chosen for each epoch.
        """
        if not callable(schedule):
            raise TypeError(f"LearningRateScheduler: schedule must be callable, got {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = verbose
        self._two_arguments = _takes_two(schedule)

    def on_epoch_begin(self, state):
        """Set the optimizer's lr to ``schedule(epoch)`` (or ``schedule(epoch, lr)``)."""
        if self._two_arguments:
            lr = self.schedule(state.epoch, state.optimizer.lr)
        else:
            lr = self.schedule(state.epoch)
        state.optimizer.lr = float(lr)
        if self.verbose:
            print(f"LearningRateScheduler: epoch {state.epoch + 1}: lr {float(lr):.6g}", file=sys.stdout, flush=True)


def _takes_two(function: Callable[..., Any]) -> bool:
    import inspect

    try:
        parameters = inspect.signature(function).parameters.values()
    except (TypeError, ValueError):
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
                  and p.default is p.empty]
    return len(positional) >= 2


class CSVLogger(Callback):
    """Append one row per epoch to a CSV file: ``epoch`` then the logs, columns fixed by the first
    epoch written. ``append=True`` continues an existing file (for resumed runs)."""

    def __init__(self, path: "str | os.PathLike", append: bool = False, separator: str = ","):
        """Args:
            path: the CSV file (one row per epoch, a column per log name).
            append: add to an existing file (its header must match) instead of replacing it.
            separator: the field separator.
        """
        self.path = Path(path)
        self.append = append
        self.separator = separator
        self._columns: list[str] | None = None

    def on_train_begin(self, state):
        """Start the file (or read its columns when appending to an existing one)."""
        self._columns = None
        if self.append and self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, newline="") as handle:
                header = next(csv.reader(handle, delimiter=self.separator), None)
            self._columns = header[1:] if header else None
        elif not self.append or not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def on_epoch_end(self, state, logs):
        """Append the epoch's row (with a header row first in a new file)."""
        new_file = self._columns is None
        if new_file:
            self._columns = list(logs)
        with open(self.path, "a", newline="") as handle:
            writer = csv.writer(handle, delimiter=self.separator)
            if new_file:
                writer.writerow(["epoch", *self._columns])
            writer.writerow([state.epoch + 1, *(_format(logs.get(c, math.nan)) for c in self._columns)])


def _format(value: float) -> str:
    return repr(float(value))


class JSONLogger(Callback):
    """Append one JSON object per epoch (JSON Lines): ``{"epoch": 3, "loss": 0.41, ...}``.
    Non-finite values are written as ``null``. ``append=True`` continues an existing file."""

    def __init__(self, path: "str | os.PathLike", append: bool = False):
        """Args:
            path: the JSON Lines file (one object per epoch).
            append: add to an existing file instead of replacing it.
        """
        self.path = Path(path)
        self.append = append

    def on_train_begin(self, state):
        """Start an empty file (unless appending to an existing one)."""
        if not self.append or not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.write_text("")

    def on_epoch_end(self, state, logs):
        """Append the epoch's logs as one JSON object (non-finite values as ``null``)."""
        record = {"epoch": state.epoch + 1}
        record.update({k: (float(v) if math.isfinite(v) else None) for k, v in logs.items()})
        with open(self.path, "a") as handle:
            handle.write(json.dumps(record) + "\n")


__all__ = ["Callback", "TrainingState", "History", "EarlyStopping", "ModelCheckpoint", "TerminateOnNaN",
           "LearningRateScheduler", "CSVLogger", "JSONLogger"]
