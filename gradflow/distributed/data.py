"""Batches for data-parallel training: each rank iterates over its own shard of the data.

Every rank draws the same permutation of the whole dataset each epoch (same seed) and keeps
every ``size``-th index starting at its rank. So rank r's batch i and the other ranks' batch i
together are exactly batch i of a single-process ``BatchIterator`` with the global batch size
``batch_size * size`` and the same seed: ``size`` ranks with batch b train on the same global
batches as one process with batch ``b * size``.

Every rank gets the same number of steps. Global batches are full except perhaps the last;
that one is split too (ranks may then hold batches differing by one sample, which
``DataParallel(average="samples")`` weighs exactly), unless it has fewer samples than there are
ranks or ``drop_last`` is set, in which case it is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np  # host index arithmetic, as in gradflow.data

from ..backend import Device
from ..data import BatchIterator
from .communicator import Communicator


class DistributedBatchIterator(BatchIterator):
    """A :class:`~gradflow.data.BatchIterator` over this rank's shard.

    batch_size is per rank (the global batch is ``batch_size * size``). Give ``comm``, or
    ``rank`` and ``size`` directly. The other arguments are BatchIterator's; ``seed`` must be
    the same on every rank.
    """

    def __init__(self, x: Any, y: Any = None, batch_size: int = 32, *, comm: Communicator | None = None,
                 rank: int | None = None, size: int | None = None, shuffle: bool = True, drop_last: bool = False,
                 seed: int = 0, device: "str | Device" = "cpu", dtype: str = "float32"):
        super().__init__(x, y, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed, device=device, dtype=dtype)
        if comm is not None:
            if rank is not None or size is not None:
                raise ValueError("DistributedBatchIterator: give comm or rank and size, not both")
            rank, size = comm.rank, comm.size
        rank = 0 if rank is None else rank
        size = 1 if size is None else size
        if isinstance(size, bool) or not isinstance(size, int) or size < 1 or not 0 <= rank < size:
            raise ValueError(f"DistributedBatchIterator: need 0 <= rank < size, got rank={rank!r}, size={size!r}")
        self.rank, self.size = rank, size
        self.global_batch_size = self.batch_size * size
        full, tail = divmod(len(self.x), self.global_batch_size)
        self._used = full * self.global_batch_size + (0 if drop_last or tail < size else tail)
        if self._used == 0:
            raise ValueError(
                f"DistributedBatchIterator: {len(self.x)} samples give no step with {size} ranks "
                f"of batch {self.batch_size}{' and drop_last' if drop_last else ''}"
            )

    def __len__(self) -> int:
        """Steps per epoch, the same on every rank."""
        return -(-self._used // self.global_batch_size)

    @property
    def shard_size(self) -> int:
        """Samples this rank sees per epoch."""
        return len(range(self.rank, self._used, self.size))

    def host_batches(self) -> Iterator[Any]:
        """This rank's batches as host arrays (iteration sends them; see BatchIterator)."""
        n = len(self.x)
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        shard = order[:self._used][self.rank::self.size]
        for start in range(0, len(shard), self.batch_size):
            index = shard[start:start + self.batch_size]
            yield self.x[index], (None if self.y is None else self.y[index])
