"""Batches: a seeded, resumable iterator that sends each batch to the model's device.

Data stays on the host (NumPy) and each batch is sent as it is needed, so datasets larger than
GPU memory work; shuffling uses a host generator whose state can be saved and restored.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

from . import backend
from .backend import Array, Device
from .validation import checked_arguments


@checked_arguments
class BatchIterator:
    """Iterate over ``(x_batch, y_batch)`` pairs (or ``x_batch`` alone when ``y`` is None).

    x: host array (N, ...); y: host array (N, ...) or None. Float inputs are cast to ``dtype``;
    integer labels keep their dtype. ``seed`` fixes the shuffling order of every epoch.

    batch_size: samples per batch (> 0). shuffle: a new order every epoch (False: the given
    order). drop_last: leave out a last, smaller batch. device: where the batches are sent (a
    :class:`gradflow.Device` or a name). dtype: the floating dtype of the inputs ("float32",
    "float64", "float16", "bfloat16").
    """

    def __init__(
        self,
        x: Any,
        y: Any = None,
        batch_size: int = 32,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        device: "str | Device" = "cpu",
        dtype: str = "float32",
    ):
        x = _host_samples(x, "x")
        if x.ndim == 0 or len(x) == 0:
            raise ValueError(f"BatchIterator: the dataset is empty (x has shape {x.shape})")
        if y is not None:
            y = _host_samples(y, "y")
            if y.ndim == 0 or len(y) != len(x):
                got = len(y) if y.ndim else "none (a 0-d array)"
                raise ValueError(f"BatchIterator: x has {len(x)} samples but y has {got}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size <= 0:
            raise ValueError(f"BatchIterator: batch_size must be a positive int, got {batch_size!r}")
        self.x, self.y = x, y
        self.batch_size = int(batch_size)
        self.shuffle, self.drop_last = shuffle, drop_last
        self.device = backend.device(device)
        if not backend.is_floating(self.device.dtype(dtype)):
            raise ValueError(f"BatchIterator: dtype must be a floating-point dtype, got {dtype!r}")
        self.dtype = dtype
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    @property
    def num_samples(self) -> int:
        """The number of samples (the length of ``x``)."""
        return len(self.x)

    def _send(self, part: np.ndarray) -> Array:
        floating = np.issubdtype(part.dtype, np.floating)
        return self.device.send(part, self.dtype if floating else None)

    def __iter__(self) -> Iterator[Any]:
        for xb, yb in self.host_batches():
            sent = self.send(xb)
            yield sent if yb is None else (sent, self._send(yb))

    def host_batches(self) -> Iterator[tuple[np.ndarray, np.ndarray | None]]:
        """The same batches (and the same shuffling) as iteration, as host arrays not yet sent:
        ``fit`` and ``evaluate`` check each batch's labels here, where that costs no device sync."""
        n = len(self.x)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            index = order[start:start + self.batch_size]
            yield self.x[index], (None if self.y is None else self.y[index])

    def send(self, batch: np.ndarray) -> Array:
        """One host batch of inputs from :meth:`host_batches` on the iterator's device (floats in its
        dtype); value checks (Embedding's id range) then read the host copy instead of syncing."""
        sent = self._send(batch)
        backend.remember_host_copy(sent, batch)
        return sent

    def to(self, device: "str | Device") -> "BatchIterator":
        """This iterator's batches sent to another device (the same data and shuffling state).

        Args:
            device: a :class:`gradflow.Device` or a name.
        """
        self.device = backend.device(device)
        return self

    def get_state(self) -> dict:
        """The shuffling generator's state (JSON-serialisable), for exact resumption."""
        return self._rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        """Restore the shuffling state that ``get_state()`` returned (checkpoints use it).

        Args:
            state: the dict ``get_state()`` returned.
        """
        self._rng.bit_generator.state = state


def _host_samples(data: Any, what: str) -> np.ndarray:
    """``data`` as a host array of numbers (bool, int or float); anything else is a TypeError."""
    host = backend.to_numpy(data) if backend.is_array(data) else np.asarray(data)
    if host.dtype.kind not in "biuf":
        raise TypeError(
            f"BatchIterator: {what} must hold real numbers (bool, int or float), got dtype {host.dtype}"
        )
    return host
