"""Losses: each returns the value and δ = ∂L/∂output in one call.

    value, delta = loss(output, target)     # value: 0-d array on the output's device

The δ goes straight into the model's backprop. Softmax cross-entropy and BCE-with-logits are
fused with their activation, which is both faster and numerically stable for any logits.

Bad input (wrong shape, labels out of range or of float type, arrays on two devices, NaN or Inf
in the output) raises before anything is returned; ``validate=False`` skips the checks that
need a device-to-host sync (label range and finiteness).
"""

from __future__ import annotations

from typing import Any

import numpy as np  # host-side target checks only (fit/evaluate check each batch before sending it)

from . import backend
from .backend import Array, DeviceError
from .core import _device_name
from .validation import CheckedArguments

REDUCTIONS = ("mean", "sum")


class Loss(CheckedArguments):
    """Base class. Subclasses implement ``_compute(output, target, xp) -> (per_item, delta)``
    where ``per_item`` is the unreduced loss and ``delta`` the gradient of its *sum*."""

    def __init__(self, reduction: str = "mean", validate: bool = True):
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction
        self.validate = validate

    def __call__(self, output: Array, target: Any) -> tuple[Array, Array]:
        xp = self._check(output, target)
        per_item, delta, count = self._compute(output, target, xp)
        value = xp.sum(per_item)
        if self.reduction == "mean":
            scale = 1.0 / max(count, 1)
            value = value * scale
            delta = delta * scale
        if self.validate:
            self._check_finite(value, output, xp, target)
        return value, delta

    def value(self, output: Array, target: Any) -> Array:
        """The loss alone (for evaluation)."""
        return self(output, target)[0]

    def check_host_target(self, target: np.ndarray, output_shape: tuple[int, ...]) -> None:
        """Check a batch's target on the host, before it is sent (no device sync): ``fit`` and
        ``evaluate`` call this for every batch, so one bad label anywhere raises instead of
        training on it. Here: a floating target must be finite. Subclasses add their ranges."""
        if target.dtype.kind == "f" and not np.isfinite(target).all():
            raise ValueError(f"{self._name()}: the target contains NaN or Inf")

    # -- checks ------------------------------------------------------------------------------
    def _name(self) -> str:
        return type(self).__name__

    def _check(self, output: Any, target: Any) -> Any:
        if not backend.is_array(output):
            raise TypeError(f"{self._name()}: expected the model output as an array, got {type(output).__name__}")
        if not backend.is_floating(output.dtype):
            raise TypeError(f"{self._name()}: expected a floating-point output, got {backend.dtype_name(output.dtype)}")
        if not backend.is_array(target):
            raise TypeError(
                f"{self._name()}: expected the target as an array on the output's device, got "
                f"{type(target).__name__}; send it with device.send(...)"
            )
        if not backend.same_device(output, target):
            raise DeviceError(
                f"{self._name()}: output is on {_device_name(output)} but target on {_device_name(target)}"
            )
        if output.ndim == 0:
            raise ValueError(f"{self._name()}: expected an output with a batch axis, got a 0-d array")
        return backend.namespace(output)

    def _check_same_shape(self, output: Array, target: Array) -> Array:
        """The target, checked and cast to the output's dtype (so value and δ keep that dtype)."""
        if tuple(output.shape) != tuple(target.shape):
            raise ValueError(
                f"{self._name()}: expected target of shape {tuple(output.shape)} (the output's), got {tuple(target.shape)}"
            )
        if not backend.is_floating(target.dtype):
            raise TypeError(f"{self._name()}: expected a floating-point target, got {backend.dtype_name(target.dtype)}")
        return target if target.dtype == output.dtype else backend.namespace(target).astype(target, output.dtype)

    def _check_finite(self, value: Array, output: Array, xp: Any, target: Any = None) -> None:
        if not bool(xp.isfinite(value)):
            self._raise_not_finite(output, xp, target)

    def _raise_not_finite(self, output: Array, xp: Any, target: Any = None) -> None:
        """Say why the loss is not finite: the output (where), the target, or an overflow."""
        bad = ~xp.isfinite(output)
        if bool(xp.any(bad)):
            where = backend.to_numpy(xp.astype(bad, xp.uint8)).nonzero()
            first = tuple(int(axis[0]) for axis in where)
            raise FloatingPointError(
                f"{self._name()}: the model output contains NaN or Inf (first at index {first}); "
                "lower the learning rate, clip gradients, or use gradflow's anomaly mode to find the layer"
            )
        if target is not None and backend.is_floating(target.dtype) and not bool(xp.all(xp.isfinite(target))):
            raise FloatingPointError(f"{self._name()}: the loss is not finite although the output is; check the target")
        largest = backend.to_float(xp.max(xp.abs(output)))
        raise FloatingPointError(
            f"{self._name()}: the loss overflowed although the model output is finite (largest |output| {largest:.3g}); "
            "the model is diverging: lower the learning rate or clip gradients"
        )

    def _compute(self, output: Array, target: Array, xp: Any) -> tuple[Array, Array, int]:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{self._name()}(reduction={self.reduction!r})"


class MSE(Loss):
    """Mean squared error ``L = mean((y − t)²)`` over every element; δ = ``2(y − t)/n``."""

    def _compute(self, output, target, xp):
        target = self._check_same_shape(output, target)
        r = output - target
        return r * r, 2.0 * r, _size(output)


class L1(Loss):
    """Mean absolute error ``L = mean|y − t|``; δ = ``sign(y − t)/n`` (0 at y = t)."""

    def _compute(self, output, target, xp):
        target = self._check_same_shape(output, target)
        r = output - target
        return xp.abs(r), xp.sign(r), _size(output)


class Huber(Loss):
    """Huber loss: ``½r²`` for |r| ≤ δ, else ``δ(|r| − ½δ)``, r = y − t; δ-rule ``clip(r, −δ, δ)``."""

    def __init__(self, delta: float = 1.0, reduction: str = "mean", validate: bool = True):
        super().__init__(reduction, validate)
        if not delta > 0:
            raise ValueError(f"Huber: delta must be > 0, got {delta}")
        self.delta = float(delta)

    def _compute(self, output, target, xp):
        target = self._check_same_shape(output, target)
        r = output - target
        a = xp.abs(r)
        quadratic = a <= self.delta
        per_item = xp.where(quadratic, 0.5 * r * r, self.delta * (a - 0.5 * self.delta))
        return per_item, xp.clip(r, -self.delta, self.delta), _size(output)


class BCEWithLogits(Loss):
    """Binary cross-entropy on logits z with targets t in [0, 1], mean over every element.

    ``L = max(z, 0) − z t + log(1 + e^{−|z|})`` (stable for any z); δ = ``σ(z) − t``.
    """

    def _compute(self, output, target, xp):
        target = self._check_same_shape(output, target)
        if self.validate and bool(xp.any((target < 0) | (target > 1))):
            raise ValueError(f"{self._name()}: targets must lie in [0, 1]")
        z = output
        e = xp.exp(-xp.abs(z))
        per_item = xp.maximum(z, 0.0) - z * target + xp.log1p(e)
        sigmoid = xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        return per_item, sigmoid - target, _size(output)

    def check_host_target(self, target: np.ndarray, output_shape: tuple[int, ...]) -> None:
        super().check_host_target(target, output_shape)
        _check_host_probabilities(self, target)


def _check_host_probabilities(loss: Loss, target: np.ndarray) -> None:
    if target.dtype.kind in "fiub" and target.size and not ((target >= 0) & (target <= 1)).all():
        low, high = target.min(), target.max()
        raise ValueError(f"{loss._name()}: targets must lie in [0, 1], got values in [{low}, {high}]")


class _ClassLoss(Loss):
    """Shared label handling: classes on the last axis of the output, shape (..., C)."""

    def __init__(self, reduction: str = "mean", validate: bool = True, ignore_index: int | None = None):
        super().__init__(reduction, validate)
        self.ignore_index = ignore_index

    def _labels(self, output: Array, target: Array, xp: Any) -> tuple[Array, Array | None]:
        """One-hot (or given soft) target distribution q of output's shape, and the kept mask."""
        classes = output.shape[-1]
        if tuple(target.shape) == tuple(output.shape) and backend.is_floating(target.dtype):
            return xp.astype(target, output.dtype), None
        if tuple(target.shape) != tuple(output.shape[:-1]):
            raise ValueError(
                f"{self._name()}: expected integer labels of shape {tuple(output.shape[:-1])} or a "
                f"distribution of shape {tuple(output.shape)}, got target of shape {tuple(target.shape)}"
            )
        if not xp.isdtype(target.dtype, "integral"):
            raise TypeError(
                f"{self._name()}: integer class labels expected, got dtype {backend.dtype_name(target.dtype)} "
                "(soft labels must have the output's shape)"
            )
        kept = None
        if self.ignore_index is not None:
            kept = target != self.ignore_index
            target = xp.where(kept, target, xp.zeros_like(target))
        if self.validate and _size(target) > 0:  # a 0-d label (one unbatched sample) too
            low, high = int(xp.min(target)), int(xp.max(target))
            if low < 0 or high >= classes:
                raise ValueError(
                    f"{self._name()}: labels must lie in [0, {classes - 1}] for {classes} classes, "
                    f"got values in [{low}, {high}]"
                )
        classes_range = xp.arange(classes, dtype=target.dtype, device=target.device)
        one_hot = xp.astype(target[..., None] == classes_range, output.dtype)
        if kept is not None:
            one_hot = one_hot * xp.astype(kept[..., None], output.dtype)
        return one_hot, kept

    def check_host_target(self, target: np.ndarray, output_shape: tuple[int, ...]) -> None:
        """Integer labels must lie in [0, C) (``ignore_index`` aside); soft labels must be finite."""
        super().check_host_target(target, output_shape)
        if target.dtype.kind not in "iub" or not output_shape or target.shape != tuple(output_shape[:-1]):
            return  # soft labels, or a shape the loss itself refuses with its own message
        classes = output_shape[-1]
        bad = (target < 0) | (target >= classes)
        if self.ignore_index is not None:
            bad &= target != self.ignore_index
        if bad.any():
            first = np.unravel_index(int(np.flatnonzero(bad)[0]), bad.shape)
            labels = target
            raise ValueError(
                f"{self._name()}: labels must lie in [0, {classes - 1}] for {classes} classes, "
                f"got {target[first]} at sample {first[0] if len(first) == 1 else first} "
                f"(values in [{labels.min()}, {labels.max()}])"
            )

    def _count(self, output: Array, kept: Array | None, xp: Any) -> Any:
        if kept is None:
            return _size(output) // max(output.shape[-1], 1)
        return int(xp.sum(xp.astype(kept, xp.int32)))


class SoftmaxCrossEntropy(_ClassLoss):
    """Softmax fused with cross-entropy. Output: logits (..., C). Target: integer labels (...),
    one-hot or soft labels (..., C).

    With q the target distribution (smoothed: ``(1 − ε) q + ε / C``) and p = softmax(z):
    ``L = −Σ_c q_c log p_c`` per item, mean over items; δ = ``p Σ_c q_c − q`` (= p − q).
    ``ignore_index`` drops items with that label from the sum and the mean.
    """

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean", validate: bool = True,
                 ignore_index: int | None = None):
        super().__init__(reduction, validate, ignore_index)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"SoftmaxCrossEntropy: label_smoothing must be in [0, 1), got {label_smoothing}")
        self.label_smoothing = float(label_smoothing)

    def __call__(self, output: Array, target: Any) -> tuple[Array, Array]:
        if (self.label_smoothing or self.ignore_index is not None or getattr(output, "ndim", None) != 2
                or getattr(target, "ndim", None) != 1 or not backend.is_integral(target.dtype)):
            return super().__call__(output, target)
        return self._labels_fused(output, target)

    def _labels_fused(self, output: Array, target: Array) -> tuple[Array, Array]:
        """Integer labels (N,) and logits (N, C), the common case: backend.softmax_cross_entropy
        and at most one device-to-host sync (the combined label-range and finiteness check)."""
        xp = self._check(output, target)
        n, classes = output.shape
        if target.shape[0] != n:
            raise ValueError(
                f"{self._name()}: expected integer labels of shape {(n,)} or a distribution of shape "
                f"{tuple(output.shape)}, got target of shape {tuple(target.shape)}"
            )
        scale = 1.0 / max(n, 1) if self.reduction == "mean" else 1.0
        check = self.validate and n > 0
        value, delta, labels_ok = backend.softmax_cross_entropy(output, target, scale, check_labels=check)
        if check:
            if labels_ok is False:  # the NumPy path checked on the host and computed nothing
                self._explain_bad_labels_or_value(output, target, xp)
            # A -inf logit of a class that is not the label leaves the fused value finite, but
            # Inf reaching the loss is an error all the same: check the logits too.
            finite = xp.isfinite(value) & xp.all(xp.isfinite(output))
            if not bool(finite if labels_ok is True else finite & labels_ok):  # one host sync
                self._explain_bad_labels_or_value(output, target, xp)
        return value, delta

    def _explain_bad_labels_or_value(self, output: Array, target: Array, xp: Any) -> None:
        classes = output.shape[-1]
        low, high = int(xp.min(target)), int(xp.max(target))
        if low < 0 or high >= classes:
            raise ValueError(
                f"{self._name()}: labels must lie in [0, {classes - 1}] for {classes} classes, "
                f"got values in [{low}, {high}]"
            )
        self._raise_not_finite(output, xp)

    def _compute(self, output, target, xp):
        q, kept = self._labels(output, target, xp)
        if self.label_smoothing:
            uniform = self.label_smoothing / output.shape[-1]
            smoothed = (1.0 - self.label_smoothing) * q + uniform
            q = smoothed if kept is None else smoothed * xp.astype(kept[..., None], output.dtype)
        shifted = output - xp.max(output, axis=-1, keepdims=True)
        e = xp.exp(shifted)
        total = xp.sum(e, axis=-1, keepdims=True)
        log_p = shifted - xp.log(total)
        per_item = -xp.sum(q * log_p, axis=-1)
        p = e / total
        delta = p * xp.sum(q, axis=-1, keepdims=True) - q
        return per_item, delta, self._count(output, kept, xp)


class NLL(_ClassLoss):
    """Negative log-likelihood on log-probabilities (e.g. after LogSoftmax), classes last.

    ``L = −log_p[label]`` per item, mean over items; δ = ``−onehot(label)``.
    """

    def _compute(self, output, target, xp):
        q, kept = self._labels(output, target, xp)
        return -xp.sum(q * output, axis=-1), -q, self._count(output, kept, xp)


def _size(x: Array) -> int:
    size = 1
    for n in x.shape:
        size *= n
    return size


CrossEntropy = SoftmaxCrossEntropy
MeanSquaredError = MSE
