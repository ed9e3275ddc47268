"""fit / evaluate / predict.

    history = fit(model, SoftmaxCrossEntropy(), Adam(model, lr=1e-3), (x_train, y_train),
                  epochs=10, batch_size=64, validation=(x_test, y_test))

Losses are summed on the device during an epoch and fetched once at its end, so a training
step has no hidden device-to-host sync.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import numpy as np

from . import backend
from .backend import Array, Device
from .core import Layer
from .data import BatchIterator
from .losses import Loss


class History(dict):
    """Per-epoch values by name: ``history["loss"]``, ``history["val_accuracy"]``..."""

    def last(self, name: str) -> float:
        return self[name][-1]


def _batches(data: Any, batch_size: int, device: Device, shuffle: bool, seed: int) -> BatchIterator:
    if isinstance(data, BatchIterator):
        return data.to(device)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return BatchIterator(data[0], data[1], batch_size, shuffle=shuffle, seed=seed, device=device)
    raise TypeError("data must be a BatchIterator or an (x, y) pair of arrays")


def _model_device(model: Layer) -> Device:
    dev = model.device
    return dev if dev is not None else backend.device("cpu")


def fit(
    model: Layer,
    loss: Loss,
    optimizer: Any,
    data: Any,
    epochs: int = 1,
    *,
    batch_size: int = 32,
    validation: Any = None,
    seed: int = 0,
    verbose: bool = True,
) -> History:
    """Train ``model`` for ``epochs`` on ``data`` (an (x, y) pair or a BatchIterator).

    Each step: forward in train mode, loss value and δ, zero the gradients, backprop, optimizer
    step. Returns the per-epoch history (loss, and val_loss/val_accuracy with ``validation``).
    """
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"fit: epochs must be a non-negative int, got {epochs!r}")
    device = _model_device(model)
    batches = _batches(data, batch_size, device, shuffle=True, seed=seed)
    history = History(loss=[])
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        total: Array | None = None
        seen = 0
        with device:
            for xb, yb in batches:
                output, backprop = model(xb, train=True)
                value, delta = loss(output, yb)
                optimizer.zero_grad()
                backprop(delta)
                optimizer.step()
                weighted = value * xb.shape[0]
                total = weighted if total is None else total + weighted
                seen += xb.shape[0]
        history["loss"].append(backend.to_float(total) / max(seen, 1))
        if validation is not None:
            for name, value in evaluate(model, loss, validation, batch_size=max(batch_size, 256)).items():
                history.setdefault(f"val_{name}", []).append(value)
        if verbose:
            parts = [f"epoch {epoch + 1}/{epochs}"]
            parts += [f"{name} {values[-1]:.4f}" for name, values in history.items()]
            parts.append(f"({time.perf_counter() - started:.2f}s)")
            print("  ".join(parts), file=sys.stdout, flush=True)
    model.eval()
    return history


def evaluate(model: Layer, loss: Loss | None, data: Any, *, batch_size: int = 256) -> dict[str, float]:
    """Mean loss (when ``loss`` is given) and, for integer labels, accuracy over ``data``."""
    device = _model_device(model)
    batches = _batches(data, batch_size, device, shuffle=False, seed=0)
    total_loss: Array | None = None
    correct: Array | None = None
    seen = labelled = 0
    with device:
        for xb, yb in batches:
            output = model.predict(xb)
            xp = backend.namespace(output)
            if loss is not None:
                weighted = loss.value(output, yb) * xb.shape[0]
                total_loss = weighted if total_loss is None else total_loss + weighted
            if xp.isdtype(yb.dtype, "integral") and output.ndim == yb.ndim + 1:
                hits = xp.sum(xp.astype(xp.argmax(output, axis=-1) == yb, xp.int64))
                correct = hits if correct is None else correct + hits
                labelled += math.prod(yb.shape)  # every position of a sequence has a label
            seen += xb.shape[0]
    results = {}
    if total_loss is not None:
        results["loss"] = backend.to_float(total_loss) / max(seen, 1)
    if correct is not None:
        results["accuracy"] = backend.to_float(correct) / max(labelled, 1)
    return results


def predict(model: Layer, x: Any, *, batch_size: int = 256) -> np.ndarray:
    """Model outputs for host inputs ``x``, batched, returned as a host NumPy array."""
    device = _model_device(model)
    batches = BatchIterator(x, None, batch_size, shuffle=False, device=device)
    with device:
        outputs = [backend.to_numpy(model.predict(xb)) for xb in batches]
    return np.concatenate(outputs, axis=0)
