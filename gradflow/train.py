"""fit / evaluate / predict.

    history = fit(model, SoftmaxCrossEntropy(), Adam(model, lr=1e-3), (x_train, y_train),
                  epochs=10, batch_size=64, validation=(x_test, y_test),
                  metrics=["accuracy", "f1"], callbacks=[EarlyStopping(patience=3)])
    history["val_accuracy"][-1]

A training step is forward, loss value and δ, zero the gradients, backprop, optimizer step. It
has no device-to-host synchronisation of its own: the loss and the metrics are summed on the
device and fetched together once per epoch (one transfer). Only what you ask for syncs inside an
epoch: a callback that reads the loss per step (TerminateOnNaN, the progress bar's refresh every
half second), or anomaly mode.

Before anything trains, ``fit`` checks every label of the training and validation data on the
host (``Loss.check_host_target``: integer labels in [0, C), BCE targets in [0, 1], finite
targets), where that costs no device sync: the training labels right after the first step's
forward (whose output gives the class count; that step is rolled back if they are refused),
the validation data after one inference forward of its first batch (eval mode: nothing moves),
before epoch 1; ``evaluate`` does the same after its first batch. The loss's device
checks (finite output) run on the first batch of every ``fit`` and ``evaluate`` call; later
batches skip them, because each costs a sync. A NaN loss is caught at the end of the epoch
(training stops with a warning); add ``TerminateOnNaN()`` to stop at the exact step, and use
:func:`gradflow.diagnostics.detect_anomaly` to find the layer.

A step that raises in its forward or loss (a refused batch) leaves the model as it was: running
statistics and dropout generators moved by that forward are restored
(:class:`gradflow.core.rollback_on_error`), and no gradient or weight has been touched yet.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from . import backend
from . import metrics as _metrics
from .backend import Array, Device
from .callbacks import Callback, History, TrainingState
from .core import Layer, rollback_on_error
from .data import BatchIterator
from .losses import Loss
from .progress import Progress, resolve_verbose

__all__ = ["fit", "evaluate", "predict", "History"]

_HOOKS = ("on_train_begin", "on_epoch_begin", "on_batch_begin", "on_after_backward", "on_batch_end",
          "on_epoch_end", "on_train_end")


def _batches(data: Any, batch_size: int, model: Layer, shuffle: bool, seed: int) -> BatchIterator:
    """``data`` as batches on the model's device, float inputs in the model's dtype."""
    device = _model_device(model)
    if isinstance(data, BatchIterator):
        return data.to(device)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return BatchIterator(data[0], data[1], batch_size, shuffle=shuffle, seed=seed, device=device,
                             dtype=_model_dtype(model))
    raise TypeError(f"data must be a BatchIterator or an (x, y) pair of host arrays, got {type(data).__name__}")


def _check_labels(model: Layer, loss: Loss | None, batches: BatchIterator, what: str,
                  output_shape: tuple[int, ...] | None = None) -> None:
    """Check every target of ``batches`` on the host before any of it trains or is scored.

    The output's shape comes from ``output_shape`` or from an inference forward of one sample
    (``predict``: eval mode, nothing moves). A BatchIterator subclass that makes its own
    batches (overrides ``__iter__``) is left to the loss's device checks, every batch."""
    y = batches.y
    if y is None or type(batches).__iter__ is not BatchIterator.__iter__:
        return
    if output_shape is None:
        output_shape = tuple(model.predict(batches.send(batches.x[:batches.batch_size])).shape)
    full_shape = (len(y),) + tuple(output_shape[1:])
    try:
        if loss is not None:
            loss.check_host_target(y, full_shape)
        elif y.dtype.kind in "iu" and len(full_shape) == y.ndim + 1:  # labels scored by metrics
            classes = full_shape[-1]
            if y.size and (y.min() < 0 or y.max() >= classes):
                raise ValueError(f"labels must lie in [0, {classes - 1}] for {classes} classes, "
                                 f"got values in [{y.min()}, {y.max()}]")
    except ValueError as error:
        raise ValueError(f"{what}: {error}") from None


def _check_not_empty(batches: BatchIterator, what: str) -> None:
    if len(batches) == 0:
        raise ValueError(f"{what} yields no batch: {batches.num_samples} samples, batch_size "
                         f"{batches.batch_size}, drop_last={batches.drop_last}")


def _model_device(model: Layer) -> Device:
    dev = model.device
    return dev if dev is not None else backend.device("cpu")


def _model_dtype(model: Layer) -> str:
    dtype = model.dtype
    return backend.dtype_name(dtype) if dtype is not None else backend.DEFAULT_DTYPE


def _unchecked(loss: Loss) -> Loss:
    """The same loss without its per-call host checks (each is a device-to-host sync)."""
    if getattr(loss, "validate", False):
        fast = copy.copy(loss)
        fast.validate = False
        return fast
    return loss


def _fresh(metric: "str | _metrics.Metric") -> _metrics.Metric:
    """A separate instance for validation, so training and validation totals never mix."""
    return copy.deepcopy(metric) if isinstance(metric, _metrics.Metric) else _metrics.get(metric)


def _split(data: Any, validation_split: float) -> tuple[Any, Any]:
    """The last ``validation_split`` of an (x, y) pair, taken before any shuffling (as Keras does)."""
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("fit: validation_split needs data as an (x, y) pair of host arrays, not a BatchIterator")
    x, y = data
    n = len(x)
    cut = int(n * (1.0 - validation_split))
    if cut <= 0 or cut >= n:
        raise ValueError(f"fit: validation_split={validation_split} leaves no training or no validation samples ({n} in all)")
    return (x[:cut], y[:cut]), (x[cut:], y[cut:])


class _Dispatch:
    """Calls a hook on the callbacks that override it (the others cost nothing per step)."""

    def __init__(self, callbacks: Sequence[Callback]):
        for callback in callbacks:
            if not isinstance(callback, Callback):
                raise TypeError(f"fit: callbacks must be Callback instances, got {type(callback).__name__}")
        self.by_hook = {
            hook: [getattr(cb, hook) for cb in callbacks if getattr(type(cb), hook) is not getattr(Callback, hook)]
            for hook in _HOOKS
        }

    def __call__(self, hook: str, *args: Any) -> None:
        for method in self.by_hook[hook]:
            method(*args)


def fit(
    model: Layer,
    loss: Loss,
    optimizer: Any,
    data: Any,
    epochs: int = 1,
    *,
    batch_size: int = 32,
    validation: Any = None,
    validation_split: float = 0.0,
    validation_batch_size: int | None = None,
    metrics: Sequence["str | _metrics.Metric"] | None = None,
    callbacks: Sequence[Callback] | None = None,
    seed: int = 0,
    shuffle: bool = True,
    verbose: Any = "auto",
    initial_epoch: int = 0,
    resume: "str | os.PathLike | None" = None,
    before_step: Callable[[], None] | None = None,
    precision: str = "float32",
) -> History:
    """Train ``model`` until epoch ``epochs`` on ``data`` (an (x, y) pair or a BatchIterator).

    validation: an (x, y) pair or BatchIterator evaluated after every epoch (``val_*`` logs), or
    ``validation_split`` (a fraction of an (x, y) pair, the last samples, taken before shuffling).
    metrics: names or :class:`gradflow.metrics.Metric` objects, computed on the training batches
    and on the validation data (default: validation accuracy when the labels are integers).
    callbacks: see :mod:`gradflow.callbacks`. verbose: 0, 1, 2 or "auto" (see
    :mod:`gradflow.progress`). resume: a checkpoint written by ``ModelCheckpoint`` or
    :func:`gradflow.save` with ``data``; model, optimizer, data order, RNG states, history and
    callback states are restored and training continues after the saved epoch, giving the same
    weights as an uninterrupted run. initial_epoch: the epoch to start at without a checkpoint.
    before_step: called between backprop and the optimizer step (e.g.
    ``lambda: allreduce_gradients(model, comm)`` for data-parallel training).
    precision: ``"float32"`` (default), or ``"float16"``/``"bfloat16"`` for mixed precision
    (:class:`gradflow.precision.MixedPrecision`: float32 master weights, the forward and backward
    in the compute dtype, float16 with dynamic loss scaling, BatchNorm statistics in float32);
    bfloat16 needs a device that has it (NumPy has not: a DeviceError says so).

    Returns the :class:`History`: one value per epoch for "loss", each metric, "val_*", and "lr"
    (the learning rate of the epoch's last step).

    batch_size: samples per training step. validation_batch_size: samples per forward pass of the
    validation (default: max(batch_size, 256)). seed: the shuffling seed of the batches built from an
    (x, y) pair. shuffle: reshuffle every epoch (False: the order given).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"fit: validation_split must be in [0, 1), got {validation_split!r}")
    if validation_split and validation is not None:
        raise ValueError("fit: give validation data or validation_split, not both")
    if validation_split:
        data, validation = _split(data, validation_split)
    device = _model_device(model)
    batches = _batches(data, batch_size, model, shuffle=shuffle, seed=seed)
    _check_not_empty(batches, "fit: data")
    eval_size = validation_batch_size or max(batch_size, 256)
    val_batches = None
    if validation is not None:
        val_batches = _batches(validation, eval_size, model, shuffle=False, seed=0)
        _check_not_empty(val_batches, "fit: validation")
    schedule = getattr(optimizer, "schedule", None)
    observer = schedule if callable(getattr(schedule, "observe", None)) else None
    monitor = getattr(observer, "monitor", "val_loss") if observer is not None else None
    if monitor is None:  # e.g. LinearWarmup after a plain schedule: nothing to observe
        observer = None
    elif val_batches is None and monitor.startswith("val_"):
        raise ValueError(f"fit: the optimizer's schedule monitors {monitor!r}, which needs validation data; "
                         "give validation= or validation_split=, or change the schedule's monitor")
    # Validation data: shapes through the model (one inference forward: nothing moves) and every
    # label on the host, before anything trains. The training labels are checked in the first
    # step, between its forward and its loss, where that step's rollback covers them.
    if val_batches is not None:
        _check_labels(model, loss, val_batches, "fit: validation")
    callbacks = list(callbacks or [])
    level = resolve_verbose(verbose)
    display = [Progress(level)] if level else []
    dispatch = _Dispatch(callbacks + display)
    train_metrics = [_metrics.get(m) for m in metrics] if metrics is not None else []
    history = History()
    step = 0
    if resume is not None:
        from .checkpoint import load

        checkpoint = load(resume, model, optimizer, data=batches, callbacks=callbacks)
        if checkpoint.metadata["rng"].get("data") is None:
            warnings.warn(f"fit: {resume} holds no data-iterator state; the shuffling order will differ "
                          "from an uninterrupted run", RuntimeWarning, stacklevel=2)
        history = checkpoint.history
        initial_epoch = int(checkpoint.epoch or 0)
        step = int(checkpoint.step or 0)
    state = TrainingState(model=model, optimizer=optimizer, loss=loss, data=batches, history=history,
                          epochs=epochs, steps_per_epoch=len(batches), epoch=initial_epoch, step=step,
                          first_step=step, callbacks=callbacks, train_metrics=train_metrics,
                          before_step=before_step)
    mixed = None
    if precision != "float32":
        from .precision import COMPUTE_DTYPES, MixedPrecision

        if precision not in COMPUTE_DTYPES:
            raise ValueError(f"fit: precision must be one of {COMPUTE_DTYPES}, got {precision!r}")
        mixed = MixedPrecision(model, loss, optimizer, precision)
    schedule = getattr(optimizer, "schedule", None)
    # A composite (LinearWarmup, SequentialLR) has observe() but monitor None when nothing in it
    # watches a metric: it is not an observer then (it used to demand val_loss and crash).
    watches = not hasattr(schedule, "monitor") or getattr(schedule, "monitor") is not None
    observer = schedule if callable(getattr(schedule, "observe", None)) and watches else None
    eval_size = validation_batch_size or max(batch_size, 256)
    try:
        dispatch("on_train_begin", state)
        for epoch in range(initial_epoch, epochs):
            state.epoch, state.batch = epoch, 0
            model.train()
            for metric in train_metrics:
                metric.reset()
            dispatch("on_epoch_begin", state)
            total, seen = _train_epoch(state, device, dispatch, mixed, check_labels=epoch == initial_epoch)
            lr = _last_lr(optimizer)
            fetched = _metrics.fetch(train_metrics, extra=[total] if total is not None else [])
            logs = {"loss": fetched.pop("extra")[0] / seen if seen else math.nan}
            logs.update(fetched)
            if val_batches is not None:
                results = evaluate(model, loss, val_batches, batch_size=eval_size,
                                   metrics=[_fresh(m) for m in metrics] if metrics is not None else None)
                logs.update({f"val_{name}": value for name, value in results.items()})
            logs["lr"] = lr
            if not math.isfinite(logs["loss"]) and not state.stop_training:
                reason = (f"fit: the training loss of epoch {epoch + 1} is {logs['loss']}; training stopped. Add "
                          "callbacks=[TerminateOnNaN()] to stop at the first bad step, and run a step under "
                          "gradflow.diagnostics.detect_anomaly(model) to find the layer")
                warnings.warn(reason, RuntimeWarning, stacklevel=2)
                state.stop(reason)
            if observer is not None:
                if monitor not in logs:
                    raise KeyError(f"fit: the optimizer's schedule monitors {monitor!r}, which is not among the logs "
                                   f"({', '.join(sorted(logs))}); give validation data or change its monitor")
                observer.observe(logs[monitor])
            history.append(epoch + 1, logs)
            dispatch("on_epoch_end", state, logs)
            if state.stop_training:
                break
        history.stop_reason = state.stop_reason
        dispatch("on_train_end", state)
    finally:
        for callback in callbacks + display:
            callback.close()
    model.eval()
    return history


def _last_lr(optimizer: Any) -> float:
    """The learning rate of the optimizer's most recent step (its current lr before any step)."""
    schedule = getattr(optimizer, "schedule", None)
    if schedule is not None and optimizer.step_count > 0:
        return float(schedule(optimizer.step_count - 1))
    return float(optimizer.lr)


def _train_epoch(state: TrainingState, device: Device, dispatch: _Dispatch,
                 mixed: Any = None, check_labels: bool = False) -> tuple[Array | None, int]:
    """One pass over the batches; returns the loss summed over samples (on the device) and the
    number of samples. Nothing is fetched here. ``mixed``: a MixedPrecision trainer doing the
    steps (fit's ``precision``). ``check_labels``: check every label of the data on the host
    after the first forward (its output gives the class count), before that step's loss."""
    model, loss, optimizer = state.model, state.loss, state.optimizer
    # Labels were checked on the host before training; a BatchIterator that makes its own batches
    # keeps the loss's device checks on every batch instead.
    own_batches = type(state.data).__iter__ is not BatchIterator.__iter__
    fast_loss = loss if own_batches else _unchecked(loss)
    step_loss = loss if state.step == state.first_step else fast_loss
    total: Array | None = None
    seen = 0
    with device:
        for batch, (xb, yb) in enumerate(state.data):
            state.batch = batch
            try:
                dispatch("on_batch_begin", state)
                if check_labels:  # the first step: every label on the host, once the class count is known
                    first_loss = step_loss

                    def step_loss(out: Array, target: Array, _loss: Loss = first_loss) -> Any:
                        _check_labels(model, loss, state.data, "fit: data", tuple(out.shape))
                        return _loss(out, target)

                    check_labels = False
                if mixed is not None:
                    with rollback_on_error():
                        value, output = mixed.train_step(xb, yb, step_loss, lambda: _before_update(state, dispatch))
                else:
                    with rollback_on_error():  # a refused batch leaves statistics and generators as they were
                        output, backprop = model(xb, train=True, input_grad=False)  # xb is data: no δ for it
                        value, delta = step_loss(output, yb)
                    optimizer.zero_grad()
                    backprop(delta)
                    _before_update(state, dispatch)
                    optimizer.step()
                step_loss = fast_loss
            except Exception as error:
                if hasattr(error, "add_note"):
                    error.add_note(f"(in fit: epoch {state.epoch + 1}, batch {batch + 1}, step {state.step})")
                raise
            weighted = value * xb.shape[0]
            total = weighted if total is None else total + weighted
            seen += xb.shape[0]
            for metric in state.train_metrics:
                metric.update(output, yb)
            dispatch("on_batch_end", state, value)
            state.step += 1
            if state.stop_training:
                break
    return total, seen


def _before_update(state: TrainingState, dispatch: _Dispatch) -> None:
    dispatch("on_after_backward", state)
    if state.before_step is not None:
        state.before_step()


def evaluate(
    model: Layer,
    loss: Loss | None = None,
    data: Any = None,
    *,
    batch_size: int = 256,
    metrics: Sequence["str | _metrics.Metric"] | None = None,
) -> dict[str, float]:
    """Mean loss (when ``loss`` is given) and metrics over ``data``, fetched in one transfer.

    ``evaluate(model, loss, data)`` or, for metrics only, ``evaluate(model, data, metrics=[...])``
    (or ``loss=None``): the loss is optional, as in Keras.

    Args:
        model: the model, evaluated in inference mode (``model.predict``).
        loss: a loss from :mod:`gradflow.losses`, or None for no ``"loss"`` entry.
        data: an (x, y) pair of host arrays (float inputs are cast to the model's dtype and sent
            to its device) or a :class:`gradflow.data.BatchIterator`.
        batch_size: samples per forward pass (the result does not depend on it, up to rounding).
        metrics: names (``"accuracy"``, ``"f1"``, ``"top5_accuracy"``, ``"mse"``...) or
            :class:`gradflow.metrics.Metric` objects. Default: accuracy when the labels are
            integers and the output has a class axis, else none.

    Returns:
        ``{"loss": mean loss, metric name: value, ...}`` as Python floats.
    """
    if data is None and loss is not None and not isinstance(loss, Loss):
        loss, data = None, loss  # evaluate(model, data, metrics=...)
    if data is None:
        raise TypeError("evaluate: missing data: evaluate(model, loss, (x, y)) or evaluate(model, (x, y), metrics=[...])")
    device = _model_device(model)
    batches = _batches(data, batch_size, model, shuffle=False, seed=0)
    _check_not_empty(batches, "evaluate: data")
    own_batches = type(batches).__iter__ is not BatchIterator.__iter__
    chosen = [_metrics.get(m) for m in metrics] if metrics is not None else None
    for metric in chosen or []:
        metric.reset()
    total_loss: Array | None = None
    seen = 0
    checked = loss
    with device:
        for batch, (xb, yb) in enumerate(batches):
            output = model.predict(xb)
            if batch == 0:  # every label, on the host, before anything is scored
                _check_labels(model, loss, batches, "evaluate: data", tuple(output.shape))
            if chosen is None:
                xp = backend.namespace(output)
                is_labels = xp.isdtype(yb.dtype, "integral") and output.ndim == yb.ndim + 1
                chosen = [_metrics.Accuracy()] if is_labels else []
            if checked is not None:
                weighted = checked.value(output, yb) * xb.shape[0]
                total_loss = weighted if total_loss is None else total_loss + weighted
                checked = loss if own_batches else _unchecked(loss)
            for metric in chosen:
                metric.update(output, yb)
            seen += xb.shape[0]
    fetched = _metrics.fetch(chosen or [], extra=[total_loss] if total_loss is not None else [])
    extra = fetched.pop("extra")
    results: dict[str, float] = {}
    if extra:
        results["loss"] = extra[0] / max(seen, 1)
    results.update(fetched)
    return results


def predict(model: Layer, x: Any, *, batch_size: int = 256) -> np.ndarray:
    """Model outputs for host inputs ``x``, batched, returned as a host NumPy array.

    Args:
        model: the model, run in inference mode.
        x: host inputs (N, ...); float inputs are cast to the model's dtype.
        batch_size: samples per forward pass.
    """
    device = _model_device(model)
    batches = BatchIterator(x, None, batch_size, shuffle=False, device=device, dtype=_model_dtype(model))
    with device:
        outputs = [backend.to_numpy(model.predict(xb)) for xb in batches]
    return np.concatenate(outputs, axis=0)
