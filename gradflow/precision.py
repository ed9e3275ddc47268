"""Mixed precision: compute in float16 or bfloat16, keep float32 master weights.

    policy = Policy("float16")                            # compute dtype; masters stay float32
    trainer = MixedPrecision(model, SoftmaxCrossEntropy(), Adam(model, lr=1e-3), policy)
    for xb, yb in batches:
        value = trainer.step(xb, yb)                      # one training step

One step:
  1. cast the float32 master weights to the compute dtype (the layers see only those copies)
     and run forward on the input cast to the compute dtype;
  2. evaluate the loss in float32 on the output cast back (softmax and log stay accurate);
  3. multiply the loss δ by the loss scale S, cast it to the compute dtype and backpropagate,
     so small gradients do not flush to zero in float16;
  4. restore the masters, cast the gradients to float32 and divide by S;
  5. if every gradient is finite, the optimizer updates the float32 masters and, after
     ``growth_interval`` good steps in a row, S doubles; otherwise the step is skipped and S
     halves (dynamic loss scaling; one device-to-host sync per step).

bfloat16 has float32's exponent range, so its policy scales nothing by default. NumPy has no
bfloat16 (torch and CuPy-with-ml_dtypes-style libraries may): asking for it there raises a clear
error. On NumPy, float16 saves memory but not time (its float16 matmul does not use BLAS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import backend
from .backend import Array, DeviceError
from .core import Buffer, Layer, Parameter
from .validation import checked_arguments

COMPUTE_DTYPES = ("float16", "bfloat16", "float32")


@dataclass(frozen=True)
class Policy:
    """Which dtype computes and which holds the weights.

    compute: ``"float16"``, ``"bfloat16"`` or ``"float32"`` (no mixed precision).
    master: the dtype of the weights the optimizer updates (float32).
    loss_scaling: dynamic loss scaling on or off; default on for float16 only.
    """

    compute: str = "float32"
    master: str = "float32"
    loss_scaling: bool | None = None

    def __post_init__(self) -> None:
        if self.compute not in COMPUTE_DTYPES:
            raise ValueError(f"Policy: compute dtype must be one of {COMPUTE_DTYPES}, got {self.compute!r}")
        if self.master not in ("float32", "float64"):
            raise ValueError(f"Policy: master dtype must be float32 or float64, got {self.master!r}")

    @property
    def scales_loss(self) -> bool:
        """True when the loss is scaled (``loss_scaling``, or by default for float16 compute)."""
        return self.compute == "float16" if self.loss_scaling is None else bool(self.loss_scaling)

    @property
    def is_mixed(self) -> bool:
        """True when the compute dtype differs from the master weights' dtype."""
        return self.compute != self.master


@checked_arguments
class LossScaler:
    """Dynamic loss scale: halves on a non-finite gradient, doubles after ``growth_interval``
    finite steps in a row. A plain Python float, so reading it costs no sync."""

    def __init__(self, initial: float = 2.0**15, growth_factor: float = 2.0, backoff_factor: float = 0.5,
                 growth_interval: int = 2000, minimum: float = 1.0):
        if not initial > 0 or not growth_factor > 1 or not 0 < backoff_factor < 1 or growth_interval < 1:
            raise ValueError("LossScaler: need initial > 0, growth_factor > 1, 0 < backoff_factor < 1, "
                             f"growth_interval >= 1; got {initial}, {growth_factor}, {backoff_factor}, {growth_interval}")
        self.scale = float(initial)
        self.growth_factor, self.backoff_factor = float(growth_factor), float(backoff_factor)
        self.growth_interval, self.minimum = int(growth_interval), float(minimum)
        self.good_steps = 0
        self.skipped_steps = 0

    def update(self, finite: bool) -> None:
        """Halve the scale after a non-finite step; double it after ``growth_interval`` finite ones."""
        if finite:
            self.good_steps += 1
            if self.good_steps >= self.growth_interval:
                self.scale *= self.growth_factor
                self.good_steps = 0
        else:
            self.scale = max(self.scale * self.backoff_factor, self.minimum)
            self.good_steps = 0
            self.skipped_steps += 1

    def state_dict(self) -> dict[str, float | int]:
        """``{"scale", "good_steps", "skipped_steps"}`` to resume with."""
        return {"scale": self.scale, "good_steps": self.good_steps, "skipped_steps": self.skipped_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state saved by :meth:`state_dict`."""
        self.scale = float(state["scale"])
        self.good_steps = int(state["good_steps"])
        self.skipped_steps = int(state.get("skipped_steps", 0))


class MixedPrecision:
    """Training steps under a :class:`Policy` (see the module docstring for the algorithm).

    The model must hold its weights in ``policy.master`` (float32) and the optimizer must have
    been created for it. ``scaler`` defaults to a :class:`LossScaler` when the policy scales.
    """

    def __init__(self, model: Layer, loss: Any, optimizer: Any, policy: Policy | str = "float16",
                 scaler: LossScaler | None = None):
        self.policy = Policy(policy) if isinstance(policy, str) else policy
        self.model, self.loss, self.optimizer = model, loss, optimizer
        self.params: list[Parameter] = model.parameters()
        if not self.params:
            raise ValueError("MixedPrecision: the model has no parameters")
        device = self.params[0].device
        self._master = device.dtype(self.policy.master)
        try:
            self._compute = device.dtype(self.policy.compute)
        except DeviceError as error:
            raise DeviceError(f"MixedPrecision: {error}; choose float16 (or float32) on this device") from None
        for name, p in model.named_parameters():
            if p.dtype != self._master:
                raise TypeError(f"MixedPrecision: parameter {name} is {backend.dtype_name(p.dtype)}, the master "
                                f"dtype is {self.policy.master}; create the model in {self.policy.master}")
        self.scaler = scaler if scaler is not None else (LossScaler() if self.policy.scales_loss else None)
        # layers whose running statistics must stay in the master dtype (BatchNorm and the like)
        self._float32_layers = [layer for _, layer in model.sublayers()
                                if any(True for _ in layer._named_own(Buffer)) and self.policy.is_mixed]

    def step(self, x: Array, target: Any) -> Array:
        """One training step; returns the loss value (a 0-d float32 array on the device)."""
        return self.train_step(x, target)[0]

    def train_step(self, x: Array, target: Any, loss: Any = None,
                   before_update: Any = None) -> tuple[Array, Array]:
        """One training step: ``(loss value, output)``, both in the master dtype.

        loss: the loss to use this step (default the trainer's; fit passes its unchecked copy
        after the first step). before_update: called with no arguments after the gradients
        are unscaled to float32 and before the optimizer updates (fit's callbacks and
        ``before_step``); it does not run on a skipped step (non-finite gradients).

        Layers with running statistics (BatchNorm) keep their weights and buffers in the
        master dtype and compute in it: their input is cast up and their output back down, so
        the statistics never round to float16.
        """
        with backend.device_context(self.params[0].value):  # CuPy: casts and updates on the model's GPU
            return self._train_step(x, target, loss, before_update)

    def _train_step(self, x: Array, target: Any, loss: Any, before_update: Any) -> tuple[Array, Array]:
        params, xp = self.params, backend.namespace(self.params[0].value)
        kept = {id(p) for layer in self._float32_layers for p in layer.parameters()}
        cast = [p for p in params if id(p) not in kept]
        masters = [p.value for p in cast]
        loss = self.loss if loss is None else loss
        try:
            for p in cast:
                p.value = xp.astype(p.value, self._compute)
            for layer in self._float32_layers:
                layer.forward = self._in_master_dtype(layer, xp)
            output, backprop = self.model(xp.astype(x, self._compute), train=True, input_grad=False)
            output = xp.astype(output, self._master)
            value, delta = loss(output, target)
            scale = self.scaler.scale if self.scaler is not None else 1.0
            if scale != 1.0:
                delta = delta * scale
            self.optimizer.zero_grad()
            backprop(xp.astype(delta, self._compute))
        finally:
            for p, master in zip(cast, masters):
                p.value = master
            for layer in self._float32_layers:
                vars(layer).pop("forward", None)
        finite = self._unscale_gradients(xp, 1.0 / scale)
        if self.scaler is not None:
            finite_now = True if finite is None else bool(finite)  # the one sync of the step
            self.scaler.update(finite_now)
            if not finite_now:
                self.optimizer.zero_grad()
                return value, output
        if before_update is not None:
            before_update()
        self.optimizer.step()
        return value, output

    def _in_master_dtype(self, layer: Layer, xp: Any) -> Any:
        """``layer.forward`` computing in the master dtype between casts (see train_step)."""
        forward, master, compute = type(layer).forward, self._master, self._compute

        def run(x: Array, train: bool, *args: Any, **kwargs: Any) -> tuple[Array, Any]:
            y, backprop = forward(layer, xp.astype(x, master), train, *args, **kwargs)

            def back(dy: Array) -> Any:
                dx = backprop(xp.astype(dy, master))
                return None if dx is None else xp.astype(dx, compute)

            return xp.astype(y, compute), back

        return run

    def _unscale_gradients(self, xp: Any, inverse_scale: float) -> Array | None:
        """Cast every gradient to the master dtype, divide by the scale; all-finite flag."""
        finite = None
        for p in self.params:
            if p.grad is None:
                continue
            grad = xp.astype(p.grad, self._master)
            if inverse_scale != 1.0:
                grad = grad * inverse_scale
            p.grad = grad
            if self.scaler is not None:
                ok = xp.all(xp.isfinite(grad))
                finite = ok if finite is None else finite & ok
        return finite
