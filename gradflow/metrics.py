"""Metrics accumulated on the device and fetched once: accuracy, top-k accuracy, macro
precision / recall / F1, MSE, MAE and R².

    metric = get("f1")
    for output, target in batches:
        metric.update(output, target)      # device arithmetic only: no host sync
    metric.result()                        # one transfer

Each metric keeps a few running totals as device arrays (counts, sums); :func:`fetch` gathers
the totals of several metrics into one array and moves it to the host in a single transfer,
which is what ``fit`` does once per epoch.

Classification targets (``output`` is the model output, classes on the last axis):

- integer labels of shape ``output.shape[:-1]``: the prediction is ``argmax(output)``;
- one-hot or soft labels of ``output``'s shape (last axis > 1): the true class is ``argmax(target)``;
- a single logit per item (``output`` of shape (N,) or (N, 1), ``target`` 0/1 of the same
  shape): the prediction is ``output > threshold`` (0 for logits; 0.5 after a Sigmoid).

Leading axes beyond the first (e.g. time steps) are flattened: every position is an item.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from . import backend
from .backend import Array


class Metric:
    """Base class. Subclasses implement ``_update(output, target) -> (device totals, items)``
    (device arithmetic only; ``items`` is a host count known from shapes) and
    ``compute(host totals, items) -> float``."""

    name = "metric"
    #: "max" when larger is better (accuracy), "min" when smaller is (errors); used by callbacks.
    mode = "max"

    def __init__(self) -> None:
        self._totals: list[Array] | None = None
        self.items = 0

    def reset(self) -> None:
        """Forget the accumulated totals (a new epoch)."""
        self._totals = None
        self.items = 0

    def update(self, output: Array, target: Array) -> None:
        """Add one batch. Only device arithmetic: nothing is moved to the host."""
        with backend.device_context(output):  # CuPy: the totals live on the output's GPU
            fresh, items = self._update(output, target)
            if self._totals is None:
                self._totals = fresh
            else:
                self._totals = self._merge(self._totals, fresh, self.items, items)
        self.items += items

    def _update(self, output: Array, target: Array) -> tuple[list[Array], int]:
        raise NotImplementedError

    def _merge(self, totals: list[Array], fresh: list[Array], items: int, fresh_items: int) -> list[Array]:
        return [a + b for a, b in zip(totals, fresh)]

    def totals(self) -> list[Array]:
        """The running totals (device arrays); empty before the first update."""
        return [] if self._totals is None else list(self._totals)

    def compute(self, totals: Sequence[np.ndarray], items: int) -> float:
        """The metric from host copies of :meth:`totals` and the number of items seen."""
        raise NotImplementedError

    def result(self) -> float:
        """Fetch the totals (one transfer per total) and compute; NaN before any update."""
        return fetch([self])[self.name]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


def fetch(metrics: Iterable[Metric], extra: Sequence[Array] = ()) -> dict[str, Any]:
    """Every metric's result (by name) with ONE device-to-host transfer.

    ``extra`` device scalars (e.g. a loss total) ride along; their host values come back
    under the key ``"extra"`` as a list of floats.

    Args:
        metrics: the metrics whose results are wanted.
        extra: device scalars fetched in the same transfer.
    """
    metrics = list(metrics)
    pieces: list[Array] = []
    sizes: list[list[tuple[int, tuple[int, ...]]]] = []
    for metric in metrics:
        shapes = []
        for total in metric.totals():
            pieces.append(total)
            shapes.append((_size(total), tuple(total.shape)))
        sizes.append(shapes)
    extra_shapes = [(_size(e), tuple(e.shape)) for e in extra]
    pieces += list(extra)
    host = _gather(pieces)
    results: dict[str, Any] = {}
    offset = 0
    for metric, shapes in zip(metrics, sizes):
        values = []
        for size, shape in shapes:
            values.append(host[offset:offset + size].reshape(shape))
            offset += size
        results[metric.name] = metric.compute(values, metric.items) if values else math.nan
    extras = []
    for size, shape in extra_shapes:
        extras.append(float(host[offset]) if size == 1 else host[offset:offset + size].reshape(shape))
        offset += size
    results["extra"] = extras
    return results


def _gather(pieces: list[Array]) -> np.ndarray:
    """Concatenate device arrays (as float64) and copy them to the host in one transfer."""
    if not pieces:
        return np.zeros(0)
    xp = backend.namespace(pieces[0])
    with backend.device_context(pieces[0]):  # CuPy: cast and concatenate on the pieces' GPU
        flat = [xp.reshape(xp.astype(p, xp.float64), (-1,)) for p in pieces]
        joined = xp.concat(flat) if len(flat) > 1 else flat[0]
    return np.asarray(backend.to_numpy(joined), dtype=np.float64)


def _size(x: Array) -> int:
    return math.prod(x.shape)


# --------------------------------------------------------------------------------------------
# Classification
# --------------------------------------------------------------------------------------------


def class_predictions(output: Array, target: Array, threshold: float = 0.0) -> tuple[Array, Array, int]:
    """``(predicted, true, num_classes)``: flat integer label arrays on the output's device.

    Args:
        output: model outputs, (N, classes) scores or (N,) single scores.
        target: integer labels (N,) or binary targets.
        threshold: for single scores, the cut between class 0 and 1.
    """
    xp = backend.namespace(output)
    if output.ndim == target.ndim + 1:
        if not xp.isdtype(target.dtype, "integral"):
            raise TypeError(f"metrics: integer class labels expected, got dtype {backend.dtype_name(target.dtype)}")
        classes = output.shape[-1]
        predicted = xp.argmax(xp.reshape(output, (-1, classes)), axis=-1)
        true = xp.astype(xp.reshape(target, (-1,)), predicted.dtype)
        return predicted, true, classes
    if tuple(output.shape) != tuple(target.shape):
        raise ValueError(
            f"metrics: output of shape {tuple(output.shape)} does not fit target of shape {tuple(target.shape)}; "
            "expected labels of shape output.shape[:-1], or a target of the output's shape"
        )
    if output.ndim >= 2 and output.shape[-1] > 1:
        classes = output.shape[-1]
        predicted = xp.argmax(xp.reshape(output, (-1, classes)), axis=-1)
        true = xp.argmax(xp.reshape(xp.astype(target, output.dtype), (-1, classes)), axis=-1)
        return predicted, true, classes
    predicted = xp.astype(xp.reshape(output, (-1,)) > threshold, xp.int64)
    true = xp.astype(xp.reshape(xp.astype(target, output.dtype), (-1,)) > 0.5, xp.int64)
    return predicted, true, 2


class Accuracy(Metric):
    """Fraction of items whose predicted class is the true class.

    threshold: for a single score per item (binary), the score above which class 1 is
    predicted (0.0 for logits; 0.5 for probabilities).
    """

    name = "accuracy"

    def __init__(self, threshold: float = 0.0):
        super().__init__()
        self.threshold = float(threshold)

    def _update(self, output, target):
        predicted, true, _ = class_predictions(output, target, self.threshold)
        xp = backend.namespace(predicted)
        return [xp.sum(xp.astype(predicted == true, xp.int64))], predicted.shape[0]

    def compute(self, totals, items):
        return float(totals[0]) / items if items else math.nan


class TopKAccuracy(Metric):
    """Fraction of items whose true class is among the ``k`` highest outputs.

    Rank of the true class = number of classes with a strictly higher output, so ties count in
    the true class's favour (as scikit-learn's ``top_k_accuracy_score`` does).
    """

    def __init__(self, k: int = 5):
        super().__init__()
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"TopKAccuracy: k must be a positive int, got {k!r}")
        self.k = k
        self.name = f"top{k}_accuracy"

    def _update(self, output, target):
        xp = backend.namespace(output)
        if output.ndim != target.ndim + 1:
            raise ValueError(
                f"{self.name}: expected integer labels of shape output.shape[:-1], got output "
                f"{tuple(output.shape)} and target {tuple(target.shape)}"
            )
        classes = output.shape[-1]
        scores = xp.reshape(output, (-1, classes))
        labels = xp.reshape(target, (-1, 1))
        is_true = labels == xp.arange(classes, dtype=target.dtype, device=target.device)
        zero = xp.zeros_like(scores)
        true_score = xp.sum(xp.where(is_true, scores, zero), axis=-1, keepdims=True)
        rank = xp.sum(xp.astype(scores > true_score, xp.int64), axis=-1)
        return [xp.sum(xp.astype(rank < self.k, xp.int64))], scores.shape[0]

    def compute(self, totals, items):
        return float(totals[0]) / items if items else math.nan

    def __repr__(self) -> str:
        return f"TopKAccuracy(k={self.k})"


class _PerClass(Metric):
    """Per-class counts (true positives, predicted, actual) for macro-averaged scores.

    Macro average over the classes that occur in the targets or the predictions (as
    scikit-learn does when ``labels`` is not given); an undefined per-class score is 0.
    """

    def __init__(self, threshold: float = 0.0):
        super().__init__()
        self.threshold = float(threshold)

    def _update(self, output, target):
        predicted, true, classes = class_predictions(output, target, self.threshold)
        xp = backend.namespace(predicted)
        index = xp.arange(classes, dtype=predicted.dtype, device=predicted.device)
        one_hot_predicted = xp.astype(predicted[:, None] == index, xp.int64)
        one_hot_true = xp.astype(true[:, None] == index, xp.int64)
        tp = xp.sum(one_hot_predicted * one_hot_true, axis=0)
        return [tp, xp.sum(one_hot_predicted, axis=0), xp.sum(one_hot_true, axis=0)], predicted.shape[0]

    def compute(self, totals, items):
        tp, predicted, actual = (np.asarray(t, dtype=np.float64) for t in totals)
        present = (predicted + actual) > 0
        if not present.any():
            return math.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = self._per_class(tp, predicted, actual)
        return float(np.mean(np.nan_to_num(scores[present], nan=0.0)))

    def _per_class(self, tp, predicted, actual):
        raise NotImplementedError


class Precision(_PerClass):
    """Macro precision: mean over classes of TP / predicted."""

    name = "precision"

    def _per_class(self, tp, predicted, actual):
        return tp / predicted


class Recall(_PerClass):
    """Macro recall: mean over classes of TP / actual."""

    name = "recall"

    def _per_class(self, tp, predicted, actual):
        return tp / actual


class F1(_PerClass):
    """Macro F1: mean over classes of 2 TP / (predicted + actual)."""

    name = "f1"

    def _per_class(self, tp, predicted, actual):
        return 2.0 * tp / (predicted + actual)


# --------------------------------------------------------------------------------------------
# Regression
# --------------------------------------------------------------------------------------------


def _check_regression(name: str, output: Array, target: Array) -> Any:
    if tuple(output.shape) != tuple(target.shape):
        raise ValueError(f"{name}: expected target of shape {tuple(output.shape)} (the output's), got {tuple(target.shape)}")
    return backend.namespace(output)


class MeanSquaredError(Metric):
    """Mean of ``(output − target)²`` over every element."""

    name = "mse"
    mode = "min"

    def _update(self, output, target):
        xp = _check_regression(self.name, output, target)
        r = xp.astype(output, xp.float64) - xp.astype(target, xp.float64)
        return [xp.sum(r * r)], _size(r)

    def compute(self, totals, items):
        return float(totals[0]) / items if items else math.nan


class MeanAbsoluteError(MeanSquaredError):
    """Mean of ``|output − target|`` over every element."""

    name = "mae"

    def _update(self, output, target):
        xp = _check_regression(self.name, output, target)
        r = xp.astype(output, xp.float64) - xp.astype(target, xp.float64)
        return [xp.sum(xp.abs(r))], _size(r)


class R2(Metric):
    """Coefficient of determination ``1 − SS_res / SS_tot`` per output column (last axis; a 1-D
    target is one column), averaged uniformly over columns. A constant column scores 1 when
    predicted exactly, else 0 (scikit-learn's ``r2_score`` with ``force_finite=True``).

    The target mean and SS_tot are merged batch by batch (Chan et al.'s parallel variance), in
    float64, so no pass over the data is needed first and large means do not cancel.
    """

    name = "r2"

    def _update(self, output, target):
        xp = _check_regression(self.name, output, target)
        columns = 1 if target.ndim == 1 else target.shape[-1]
        y = xp.reshape(xp.astype(target, xp.float64), (-1, columns))
        r = xp.reshape(xp.astype(output, xp.float64), (-1, columns)) - y
        mean = xp.mean(y, axis=0)
        centred = y - mean
        return [mean, xp.sum(centred * centred, axis=0), xp.sum(r * r, axis=0)], y.shape[0]

    def _merge(self, totals, fresh, items, fresh_items):
        mean_a, m2_a, sse_a = totals
        mean_b, m2_b, sse_b = fresh
        n = float(items + fresh_items)
        delta = mean_b - mean_a
        mean = mean_a + delta * (fresh_items / n)
        m2 = m2_a + m2_b + delta * delta * (items * fresh_items / n)
        return [mean, m2, sse_a + sse_b]

    def compute(self, totals, items):
        if not items:
            return math.nan
        _, ss_tot, ss_res = (np.asarray(t, dtype=np.float64) for t in totals)
        with np.errstate(divide="ignore", invalid="ignore"):
            scores = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
        return float(np.mean(scores))


_NAMES = {
    "accuracy": Accuracy, "acc": Accuracy,
    "precision": Precision, "recall": Recall, "f1": F1,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "r2": R2,
}


def get(metric: "str | Metric") -> Metric:
    """A fresh metric from a name (``"accuracy"``, ``"top5_accuracy"``, ``"top_k_accuracy"`` (k=5),
    ``"precision"``, ``"recall"``, ``"f1"``, ``"mse"``, ``"mae"``, ``"r2"``) or the metric itself."""
    if isinstance(metric, Metric):
        return metric
    if not isinstance(metric, str):
        raise TypeError(f"metrics: expected a name or a Metric, got {type(metric).__name__}")
    key = metric.strip().lower()
    if key in _NAMES:
        return _NAMES[key]()
    if key == "top_k_accuracy":
        return TopKAccuracy(5)
    if key.startswith("top") and key.endswith("_accuracy") and key[3:-9].isdigit():
        return TopKAccuracy(int(key[3:-9]))
    known = sorted(set(_NAMES) | {"topK_accuracy", "top_k_accuracy"})
    raise ValueError(f"metrics: unknown metric {metric!r}; known: {', '.join(known)}")


def mode_of(name: str) -> str:
    """"min" or "max": which direction is better for a history key such as ``"val_accuracy"``.

    Args:
        name: a log name; "loss", "mse", "mae" are minimised, the rest maximised.
    """
    base = name[4:] if name.startswith("val_") else name
    if "loss" in base:
        return "min"
    try:
        return get(base).mode
    except ValueError:
        return "min"


__all__ = ["Metric", "Accuracy", "TopKAccuracy", "Precision", "Recall", "F1", "MeanSquaredError",
           "MeanAbsoluteError", "R2", "fetch", "get", "mode_of", "class_predictions"]
