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

from . import backend
from .backend import Array, DeviceError, HostArray
from .core import _NO_CONTEXT, _device_name
from .validation import CheckedArguments

REDUCTIONS = ("mean", "sum", "none")


class Loss(CheckedArguments):
    """Base class. Subclasses implement ``_compute(output, target, xp) -> (per_item, delta, count)``
    where ``per_item`` is the unreduced loss, ``delta`` the gradient of its *sum* and ``count``
    what ``"mean"`` divides by (an int, or a 0-d array for weighted means).

    reduction: ``"mean"`` (default), ``"sum"``, or ``"none"``: the value is then the per-item
    losses (the output's shape, less the class axis for class losses) and the δ is the gradient
    of their sum, ready for ``backprop``.
    """

    reductions: tuple[str, ...] = REDUCTIONS

    def __init__(self, reduction: str = "mean", validate: bool = True):
        if reduction not in self.reductions:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {self.reductions}, got {reduction!r}")
        self.reduction = reduction
        self.validate = validate

    def __call__(self, output: Array, target: Any) -> tuple[Array, Array]:
        with backend.device_context(output):  # CuPy: compute on the output's GPU
            return self._reduced(output, target)

    def _reduced(self, output: Array, target: Any) -> tuple[Array, Array]:
        xp = self._check(output, target)
        per_item, delta, count = self._compute(output, target, xp)
        if self.reduction == "none":
            if self.validate:
                self._check_finite(xp.sum(per_item), output, xp, target)
            return per_item, delta
        value = xp.sum(per_item)
        if self.reduction in ("mean", "batchmean"):
            if isinstance(count, (int, float)):
                scale = 1.0 / max(count, 1)
                value = value * scale
                delta = delta * scale
            else:  # a weighted count on the device (class weights): no host sync
                value = value / count
                delta = delta / count
        if self.validate:
            self._check_finite(value, output, xp, target)
        return value, delta

    def value(self, output: Array, target: Any) -> Array:
        """The loss alone (for evaluation)."""
        return self(output, target)[0]

    def check_host_target(self, target: HostArray, output_shape: tuple[int, ...]) -> None:
        """Check a batch's target on the host, before it is sent (no device sync): ``fit`` and
        ``evaluate`` call this for every batch, so one bad label anywhere raises instead of
        training on it. Here: a floating target must be finite. Subclasses add their ranges."""
        if not backend.host_all_finite(target):
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
    ``pos_weight`` p (a number, or one per class on the last axis, as PyTorch's) weighs the
    positive term: ``L = p t softplus(−z) + (1 − t) softplus(z)``, δ = ``σ(z)(p t + 1 − t) − p t``.
    """

    def __init__(self, reduction: str = "mean", validate: bool = True, pos_weight: Any = None):
        super().__init__(reduction, validate)
        self.pos_weight = _host_weights(self._name(), "pos_weight", pos_weight, allow_scalar=True)
        self._sent: dict[Any, Array] = {}

    def _compute(self, output, target, xp):
        target = self._check_same_shape(output, target)
        if self.validate and bool(xp.any((target < 0) | (target > 1))):
            raise ValueError(f"{self._name()}: targets must lie in [0, 1]")
        z = output
        e = xp.exp(-xp.abs(z))
        softplus = xp.maximum(z, 0.0) + xp.log1p(e)  # log(1 + e^z)
        sigmoid = xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))
        if self.pos_weight is None:
            return softplus - z * target, sigmoid - target, _size(output)
        p = _weights_on(self, self.pos_weight, output)
        if p.ndim and output.shape[-1] != p.shape[0]:
            raise ValueError(f"{self._name()}: pos_weight has {p.shape[0]} entries, the output's last axis "
                             f"{output.shape[-1]}")
        positive = p * target
        per_item = positive * (softplus - z) + (1.0 - target) * softplus
        return per_item, sigmoid * (positive + 1.0 - target) - positive, _size(output)

    def check_host_target(self, target: HostArray, output_shape: tuple[int, ...]) -> None:
        super().check_host_target(target, output_shape)
        _check_host_probabilities(self, target)


class BCE(Loss):
    """Binary cross-entropy on probabilities y in [0, 1] (after a Sigmoid), targets t in [0, 1].

    ``L = −(t log y + (1 − t) log(1 − y))`` with each log clamped at −100 (PyTorch's choice, so
    y = 0 or 1 gives a finite loss); δ = ``(y − t) / max(y (1 − y), 1e-12)``. ``BCEWithLogits``
    on the logits is the numerically better choice when you have them.
    """

    def _compute(self, output, target, xp):
        target = self._check_same_shape(output, target)
        if self.validate and bool(xp.any((target < 0) | (target > 1) | (output < 0) | (output > 1))):
            if not bool(xp.all(xp.isfinite(output))):
                self._raise_not_finite(output, xp)
            raise ValueError(f"{self._name()}: outputs and targets must lie in [0, 1] (probabilities)")
        log_y = xp.maximum(xp.log(output), -100.0)
        log_not_y = xp.maximum(xp.log1p(-output), -100.0)
        per_item = -(target * log_y + (1.0 - target) * log_not_y)
        delta = (output - target) / xp.maximum(output * (1.0 - output), 1e-12)
        return per_item, delta, _size(output)

    def check_host_target(self, target: HostArray, output_shape: tuple[int, ...]) -> None:
        super().check_host_target(target, output_shape)
        _check_host_probabilities(self, target)


class KLDivergence(Loss):
    """Kullback-Leibler divergence KL(t ‖ p) with the output as log-probabilities log p (after
    LogSoftmax) and the target as probabilities t (or log-probabilities with ``log_target=True``),
    as ``torch.nn.functional.kl_div``.

    ``L = Σ t (log t − log p)`` (0 where t = 0); δ = ``−t``. reduction: ``"batchmean"`` (default:
    the sum over everything divided by the batch size, the true mean KL per sample), ``"sum"``,
    ``"mean"`` (over every element, PyTorch's default, which it warns is not the KL) or ``"none"``.
    """

    reductions = ("batchmean", "mean", "sum", "none")

    def __init__(self, reduction: str = "batchmean", validate: bool = True, log_target: bool = False):
        super().__init__(reduction, validate)
        if not isinstance(log_target, bool):
            raise TypeError(f"KLDivergence: log_target must be True or False, got {log_target!r}")
        self.log_target = log_target

    def _compute(self, output, target, xp):
        target = self._check_same_shape(output, target)
        if self.log_target:
            t = xp.exp(target)
            per_item = t * (target - output)
        else:
            if self.validate and bool(xp.any(target < 0)):
                raise ValueError(f"{self._name()}: target probabilities must be >= 0 (use log_target=True for log-probabilities)")
            t = target
            positive = t > 0
            safe = xp.where(positive, t, xp.ones_like(t))
            # 0 where t = 0 (the limit of t log t); NaN for a NaN target, which the finiteness check names
            per_item = xp.where(positive, t * (xp.log(safe) - output), xp.where(t == 0, xp.zeros_like(t), t))
        count = output.shape[0] if self.reduction == "batchmean" else _size(output)
        return per_item, -t, count

    def check_host_target(self, target: HostArray, output_shape: tuple[int, ...]) -> None:
        super().check_host_target(target, output_shape)
        if not self.log_target and target.size and (target < 0).any():
            raise ValueError(f"{self._name()}: target probabilities must be >= 0, got {target.min()}")


def _host_weights(owner: str, name: str, value: Any, allow_scalar: bool = False) -> HostArray | None:
    """A weight argument as a finite, non-negative float64 host array (1-D, or 0-d if allowed)."""
    if value is None:
        return None
    host = backend.host_array(value)
    shape = "a number or " if allow_scalar else ""
    if host.dtype.kind not in "biuf":
        raise TypeError(f"{owner}: {name} must be {shape}a 1-D array of numbers, got {value!r}")
    if host.ndim != 1 and not (allow_scalar and host.ndim == 0):
        raise ValueError(f"{owner}: {name} must be {shape}a 1-D array of numbers, got shape {host.shape}")
    host = host.astype("float64")
    if not backend.host_all_finite(host) or (host < 0).any():
        raise ValueError(f"{owner}: {name} must be finite and >= 0, got {value!r}")
    return host


def _weights_on(loss: Any, host: HostArray, output: Array) -> Array:
    """``host`` on the output's device in its dtype (sent once per device and dtype)."""
    key = (backend.device_of(output).name, backend.dtype_name(output.dtype))
    sent = loss._sent.get(key)
    if sent is None:
        sent = loss._sent[key] = backend.device_of(output).send(host, output.dtype)
    return sent

    def check_host_target(self, target: HostArray, output_shape: tuple[int, ...]) -> None:
        super().check_host_target(target, output_shape)
        _check_host_probabilities(self, target)


def _check_host_probabilities(loss: Loss, target: HostArray) -> None:
    if target.dtype.kind in "fiub" and target.size and not ((target >= 0) & (target <= 1)).all():
        low, high = target.min(), target.max()
        raise ValueError(f"{loss._name()}: targets must lie in [0, 1], got values in [{low}, {high}]")


class _ClassLoss(Loss):
    """Shared label handling: classes on the last axis of the output, shape (..., C)."""

    def __init__(self, reduction: str = "mean", validate: bool = True, ignore_index: int | None = None,
                 weight: Any = None):
        super().__init__(reduction, validate)
        self.ignore_index = ignore_index
        self.weight = _host_weights(self._name(), "weight", weight)
        self._sent: dict[Any, Array] = {}

    def _weighted(self, q: Array, output: Array, soft: bool, count: Any, xp: Any) -> tuple[Array, Any]:
        """Class weights w applied to the target distribution q (``w ∘ q``), and the count a
        mean divides by: Σ w[label] over kept items for labels (PyTorch), the items for soft q."""
        if self.weight is None:
            return q, count
        w = _weights_on(self, self.weight, output)
        if w.shape[0] != output.shape[-1]:
            raise ValueError(f"{self._name()}: weight has {w.shape[0]} entries for {output.shape[-1]} classes")
        qw = q * w
        return qw, (count if soft else xp.sum(qw))

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

    def check_host_target(self, target: HostArray, output_shape: tuple[int, ...]) -> None:
        """Integer labels must lie in [0, C) (``ignore_index`` aside); soft labels must be finite."""
        super().check_host_target(target, output_shape)
        if target.dtype.kind not in "iub" or not output_shape or target.shape != tuple(output_shape[:-1]):
            return  # soft labels, or a shape the loss itself refuses with its own message
        classes = output_shape[-1]
        bad = (target < 0) | (target >= classes)
        if self.ignore_index is not None:
            bad &= target != self.ignore_index
        if bad.any():
            first = backend.host_first_true(bad)
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
    ``ignore_index`` drops items with that label from the sum and the mean. ``weight`` (C,)
    weighs class c by w_c: ``L = −Σ_c w_c q_c log p_c``, δ = ``p Σ_c w_c q_c − w ∘ q``; with
    integer labels ``"mean"`` divides by Σ_i w[label_i] (as PyTorch), with soft labels by the item
    count. Not combined with ``label_smoothing``.
    """

    def __init__(self, label_smoothing: float = 0.0, reduction: str = "mean", validate: bool = True,
                 ignore_index: int | None = None, weight: Any = None):
        super().__init__(reduction, validate, ignore_index, weight)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"SoftmaxCrossEntropy: label_smoothing must be in [0, 1), got {label_smoothing}")
        if label_smoothing and weight is not None:
            raise ValueError("SoftmaxCrossEntropy: label_smoothing together with weight is not supported")
        self.label_smoothing = float(label_smoothing)

    def __call__(self, output: Array, target: Any) -> tuple[Array, Array]:
        if (self.label_smoothing or self.ignore_index is not None or self.weight is not None
                or self.reduction == "none" or getattr(output, "ndim", None) != 2
                or getattr(target, "ndim", None) != 1 or not backend.is_integral(target.dtype)):
            return super().__call__(output, target)
        context = backend.device_context(output)
        if context is _NO_CONTEXT:  # host arrays: skip the with statement's two calls
            return self._labels_fused(output, target)
        with context:
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
        value, delta, labels_ok = backend.softmax_cross_entropy(output, target, scale, check_labels=check,
                                                                check_finite=check)
        if check and labels_ok is not True:  # True: the NumPy path checked labels and finiteness on the host
            if labels_ok is False:  # the NumPy path found bad labels (and computed nothing) or a non-finite value
                self._explain_bad_labels_or_value(output, target, xp)
            # A -inf logit of a class that is not the label leaves the fused value finite, but
            # Inf reaching the loss is an error all the same: check the logits too. NaN or +Inf
            # in a row already makes the value NaN (through the row maximum); the smallest logit
            # adds -Inf, and 0·(±Inf or NaN) is NaN: one reduction, no elementwise temporary.
            finite = xp.isfinite(value + xp.min(output) * 0.0)
            if not bool(finite & labels_ok):  # one host sync
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
        q, count = self._weighted(q, output, kept is None and backend.is_floating(target.dtype),
                                  self._count(output, kept, xp), xp)
        shifted = output - xp.max(output, axis=-1, keepdims=True)
        e = xp.exp(shifted)
        total = xp.sum(e, axis=-1, keepdims=True)
        log_p = shifted - xp.log(total)
        per_item = -xp.sum(q * log_p, axis=-1)
        p = e / total
        delta = p * xp.sum(q, axis=-1, keepdims=True) - q
        return per_item, delta, count


class NLL(_ClassLoss):
    """Negative log-likelihood on log-probabilities (e.g. after LogSoftmax), classes last.

    ``L = −log_p[label]`` per item, mean over items; δ = ``−onehot(label)``. ``weight`` (C,):
    ``L = −w[label] log_p[label]``, δ = ``−w[label] onehot(label)``, and ``"mean"`` divides by
    Σ_i w[label_i] (as PyTorch's ``nll_loss``).
    """

    def _compute(self, output, target, xp):
        q, kept = self._labels(output, target, xp)
        q, count = self._weighted(q, output, kept is None and backend.is_floating(target.dtype),
                                  self._count(output, kept, xp), xp)
        return -xp.sum(q * output, axis=-1), -q, count


def _size(x: Array) -> int:
    size = 1
    for n in x.shape:
        size *= n
    return size


CrossEntropy = SoftmaxCrossEntropy
MeanSquaredError = MSE
