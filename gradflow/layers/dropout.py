"""Dropout: random zeroing in training, identity at inference."""

from __future__ import annotations

from typing import Any

from .. import backend
from .. import init as _init
from ..backend import Array, DeviceRNG
from ..core import Backprop, Layer, check_delta, check_input, record_generator, record_undo


class Dropout(Layer):
    """Inverted dropout.

    Shapes: x of any shape -> y of the same shape.

    Forward (training): ``y = x ⊙ m / (1 − p)`` with ``m_i ~ Bernoulli(1 − p)`` drawn fresh for
    every call; in eval mode (or ``train=False``) ``y = x``.  δ rule: ``dx = dy ⊙ m / (1 − p)``
    (the same mask).  No parameters.

    The mask is drawn on the input's device from a generator kept per device name and seeded
    with ``seed`` (``backend.device_of(x).rng(seed)``), so no host round trip happens on a GPU.
    Without a ``seed``, one is drawn from gradflow's default host generator (see
    :func:`gradflow.seed`), so two Dropout layers never share a mask stream by accident.
    ``reset_rng()`` restarts every generator (tests do this before each forward so that
    finite differences see the same mask); ``get_state``/``set_state`` give a JSON-serialisable
    snapshot for checkpoints. Generators are created lazily on first use on a device, so
    ``model.to(device)`` has nothing to move (hence no ``_moved`` hook): the new device's stream
    starts from ``seed``, or from the state restored with ``set_state``.
    """

    def __init__(self, p: float = 0.5, *, seed: int | None = None):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be a number in [0, 1), got {p!r}")
        if seed is None:  # distinct per layer, reproducible after gradflow.seed(...)
            seed = int(_init.generator(None).integers(0, 2**31))
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"Dropout: seed must be an int, got {type(seed).__name__}")
        self.p = float(p)
        self.seed = seed
        self._generators: dict[str, DeviceRNG] = {}
        self._pending_states: dict[str, dict] = {}

    # -- random numbers ------------------------------------------------------------------------
    def generator(self, x: Array) -> DeviceRNG:
        """The generator for ``x``'s device (created on first use)."""
        dev = backend.device_of(x)
        rng = self._generators.get(dev.name)
        if rng is None:
            rng = self._generators[dev.name] = dev.rng(self.seed)
            pending = self._pending_states.pop(dev.name, None)
            if pending is not None:
                rng.set_state(pending)
            record_undo(lambda: self._forget_generator(dev.name, pending))  # a refused call creates none
        return rng

    def _forget_generator(self, name: str, pending: dict | None) -> None:
        self._generators.pop(name, None)
        if pending is not None:
            self._pending_states[name] = pending

    def reset_rng(self, seed: int | None = None) -> None:
        """Restart the mask stream on every device (from ``seed`` when given)."""
        if seed is not None:
            self.seed = int(seed)
        self._generators.clear()
        self._pending_states.clear()

    def get_state(self) -> dict[str, Any]:
        """``{"seed": ..., "generators": {device name: generator state}}`` (JSON-serialisable)."""
        states = dict(self._pending_states)
        states.update({name: rng.get_state() for name, rng in self._generators.items()})
        return {"seed": self.seed, "generators": states}

    def set_state(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`get_state` returned; generators not yet created pick theirs up lazily."""
        self.reset_rng(int(state["seed"]))
        self._pending_states = dict(state.get("generators", {}))

    # -- forward and δ ---------------------------------------------------------------------------
    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        check_input(self, x)
        if not train or self.p == 0.0:
            return x, lambda dy: dy
        xp = backend.namespace(x)
        rng = self.generator(x)
        record_generator(rng)  # the draw is undone if a later layer of this call refuses
        keep = rng.random(tuple(x.shape), x.dtype) >= self.p
        mask = xp.astype(keep, x.dtype) * (1.0 / (1.0 - self.p))
        shape = tuple(x.shape)

        def backprop(dy: Array) -> Array:
            check_delta(self, dy, shape)
            return dy * mask

        return x * mask, backprop

    def extra_repr(self) -> str:
        return f"p={self.p}"
