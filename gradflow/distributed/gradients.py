"""Gradient all-reduce through one flat buffer, and the start-up broadcast of rank 0's state.

Layout of the flat buffer (one per parameter list, reused every step)::

    [ count | grads of the last parameter | ... | grads of the first parameter ]
      '------------ bucket 0 ------------'  ...  '-------- bucket k --------'

Parameters are laid out in reverse order, the order in which backprop produces their
gradients, and cut into buckets of at least ``bucket_bytes`` (``None``: one bucket). Each
bucket is a contiguous view of the buffer and is all-reduced separately, always in the same
order. The leading ``count`` slot carries each rank's weight, so the mean needs no extra
collective: with ``samples=n`` a rank contributes ``n * grad`` and ``n``, and the sum divided
by the summed count is the mean over every sample of the global batch (exact when ranks hold
unequal batches); without it every rank weighs 1 and the result is the mean over ranks. After
the reduction each ``p.grad`` is a view into the buffer: no copy back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .. import backend
from ..backend import Array
from ..core import Layer, Parameter
from .communicator import Communicator


def _parameter_list(params: "Layer | Iterable[Parameter]") -> list[Parameter]:
    params = params.parameters() if isinstance(params, Layer) else list(params)
    for p in params:
        if not isinstance(p, Parameter):
            raise TypeError(f"expected Parameters (or a Layer), got {type(p).__name__}")
    if not params:
        raise ValueError("got no parameters")
    return params


class GradientReducer:
    """All-reduces the gradients of ``params`` over ``comm`` through one reusable flat buffer.

    bucket_bytes: smallest bucket size in bytes (``None``: the whole buffer in one collective).
    All parameters must share one device and one dtype.
    """

    def __init__(self, params: "Layer | Iterable[Parameter]", comm: Communicator, bucket_bytes: int | None = None):
        self.params = _parameter_list(params)
        first = self.params[0]
        for p in self.params[1:]:
            if not backend.same_device(p.value, first.value) or p.value.dtype != first.value.dtype:
                raise ValueError(
                    "GradientReducer: all parameters must share one device and dtype; got "
                    f"{first.device}/{backend.dtype_name(first.dtype)} and {p.device}/{backend.dtype_name(p.dtype)}"
                )
        if bucket_bytes is not None and (isinstance(bucket_bytes, bool) or bucket_bytes <= 0):
            raise ValueError(f"GradientReducer: bucket_bytes must be a positive int or None, got {bucket_bytes!r}")
        self.comm = comm
        self.bucket_bytes = bucket_bytes
        self.order = list(reversed(self.params))
        self.slices: list[tuple[int, int]] = []
        offset = 1  # slot 0 is the count
        for p in self.order:
            self.slices.append((offset, offset + p.size))
            offset += p.size
        self.length = offset
        self.buckets = self._cut_buckets(backend.namespace(first.value).finfo(first.dtype).bits // 8)
        self._flat: Array | None = None
        # overlap: which bucket each parameter (index into self.order) lies in, and their members
        self.bucket_of = [next(b for b, (start, stop) in enumerate(self.buckets) if start <= lo and hi <= stop)
                          for lo, hi in self.slices]
        self.members = [[i for i, b in enumerate(self.bucket_of) if b == k] for k in range(len(self.buckets))]
        self._step: dict[str, Any] | None = None
        self.last_wait_seconds = 0.0  # time the last finish() spent waiting for collectives

    def _cut_buckets(self, itemsize: int) -> list[tuple[int, int]]:
        if self.bucket_bytes is None:
            return [(0, self.length)]
        buckets, start = [], 0
        for _, stop in self.slices:
            if (stop - start) * itemsize >= self.bucket_bytes:
                buckets.append((start, stop))
                start = stop
        if start < self.length:
            buckets.append((start, self.length))
        return buckets

    def _buffer(self) -> Array:
        value = self.params[0].value
        flat = self._flat
        if flat is None or not backend.same_device(flat, value) or flat.dtype != value.dtype:
            flat = self._flat = backend.device_of(value).zeros((self.length,), value.dtype)
        return flat

    def reduce(self, samples: int | None = None, average: bool = True) -> None:
        """All-reduce every gradient; afterwards each rank holds the same ``p.grad``.

        samples: this rank's number of samples behind its gradients (the mean is then over all
        samples); None weighs every rank equally. average=False leaves the plain sum.
        A parameter without a gradient counts as zero and gets the reduced gradient too. With a
        single rank nothing is done: the gradients already are the mean.
        """
        if samples is not None and (isinstance(samples, bool) or int(samples) != samples or samples < 0):
            raise ValueError(f"GradientReducer.reduce: samples must be a non-negative int, got {samples!r}")
        if self.comm.size == 1:
            return
        flat = self._buffer()
        xp = backend.namespace(flat)
        for p, (start, stop) in zip(self.order, self.slices):
            if p.grad is None:
                flat[start:stop] = 0.0
            else:
                flat[start:stop] = xp.reshape(p.grad, (-1,))
        weight = 1.0 if samples is None else float(samples)
        if weight != 1.0:
            flat *= weight
        flat[0] = weight
        for start, stop in self.buckets:
            self.comm.allreduce(flat[start:stop])
        if average:
            flat *= 1.0 / flat[0:1]  # on the device: no host sync
        for p, (start, stop) in zip(self.order, self.slices):
            p.grad = xp.reshape(flat[start:stop], p.shape)


    # -- overlapping the all-reduce with backprop ------------------------------------------
    def begin(self, samples: int | None = None) -> None:
        """Start a step whose buckets are all-reduced as soon as their gradients are complete:
        call :meth:`ready` for each parameter whose gradient is final (in any order), then
        :meth:`finish`. Buckets start in bucket order (the same on every rank, as the collectives
        require), each as soon as it and every bucket before it are complete."""
        weight = 1.0 if samples is None else float(samples)
        self._step = {"weight": weight, "left": [len(m) for m in self.members], "done": set(),
                      "launched": 0, "requests": []}

    def ready(self, index: int) -> None:
        """The gradient of ``self.order[index]`` is final for this step."""
        step = self._step
        if step is None or index in step["done"] or self.comm.size == 1:
            return
        step["done"].add(index)
        step["left"][self.bucket_of[index]] -= 1
        while step["launched"] < len(self.buckets) and step["left"][step["launched"]] == 0:
            self._launch(step["launched"])
        for request in step["requests"]:  # let started collectives progress (MPI needs the calls)
            request.test()

    def _launch(self, bucket: int) -> None:
        step = self._step
        flat = self._buffer()
        xp = backend.namespace(flat)
        start, stop = self.buckets[bucket]
        for i in self.members[bucket]:
            p, (lo, hi) = self.order[i], self.slices[i]
            if p.grad is None:
                flat[lo:hi] = 0.0
            else:
                flat[lo:hi] = xp.reshape(p.grad, (-1,))
        if step["weight"] != 1.0:
            flat[start:stop] *= step["weight"]
        if start == 0:
            flat[0] = step["weight"]
        step["left"][bucket] = 0
        step["launched"] = bucket + 1
        step["requests"].append(self.comm.iallreduce(flat[start:stop]))

    def finish(self, average: bool = True) -> None:
        """Start the buckets not started yet, wait for every collective, then average and hand
        each parameter its reduced gradient (a view into the buffer), as :meth:`reduce` does."""
        import time

        step, self._step = self._step, None
        if step is None:
            raise RuntimeError("GradientReducer.finish: no step was begun")
        if self.comm.size == 1:
            return
        self._step = step
        try:
            while step["launched"] < len(self.buckets):
                self._launch(step["launched"])
        finally:
            self._step = None
        started = time.perf_counter()
        for request in step["requests"]:
            request.wait()
        self.last_wait_seconds = time.perf_counter() - started
        flat = self._buffer()
        xp = backend.namespace(flat)
        if average:
            flat *= 1.0 / flat[0:1]  # on the device: no host sync
        for p, (start, stop) in zip(self.order, self.slices):
            p.grad = xp.reshape(flat[start:stop], p.shape)


def allreduce_gradients(params: "Layer | Iterable[Parameter]", comm: Communicator, *, samples: int | None = None,
                        average: bool = True, bucket_bytes: int | None = None) -> None:
    """Average the gradients of ``params`` over all ranks; call it between backprop and ``optimizer.step()``.

    The flat buffer is created on the first call and reused (cached on ``comm``). See
    :meth:`GradientReducer.reduce` for ``samples`` and ``average``.
    """
    params = _parameter_list(params)
    key = (tuple(id(p) for p in params), bucket_bytes)
    reducer = comm._reducers.get(key)
    if reducer is None:
        reducer = comm._reducers[key] = GradientReducer(params, comm, bucket_bytes)
    reducer.reduce(samples=samples, average=average)


def broadcast_parameters(model: "Layer | Iterable[Parameter]", comm: Communicator, *, root: int = 0,
                         optimizer: Any = None) -> None:
    """Copy rank ``root``'s parameters (and a Layer's buffers) to every rank, in place.

    With ``optimizer``, its state slots and step count are copied too (slots missing on a rank
    are created), so training resumed from a checkpoint that only rank 0 loaded stays in step.
    """
    params = _parameter_list(model)
    if comm.size == 1:
        return
    arrays = [p.value for p in params]
    if isinstance(model, Layer):
        arrays += [b.value for _, b in model.named_buffers()]
    if optimizer is not None:
        layout = comm.broadcast_object([sorted(p.state) for p in optimizer.params], root=root)
        for p, names in zip(optimizer.params, layout):
            for name in list(p.state):
                if name not in names:
                    del p.state[name]
            for name in names:
                if name not in p.state:
                    p.state[name] = backend.namespace(p.value).zeros_like(p.value)
            arrays += [p.state[name] for name in names]
        optimizer.step_count = int(comm.broadcast_object(optimizer.step_count, root=root))
    _broadcast_arrays(arrays, comm, root)


def _broadcast_arrays(arrays: list[Array], comm: Communicator, root: int) -> None:
    """Broadcast arrays in place, packed into one contiguous buffer per (device, dtype)."""
    groups: dict[tuple[str, str], list[Array]] = {}
    for array in arrays:
        key = (backend.device_of(array).name, backend.dtype_name(array.dtype))
        groups.setdefault(key, []).append(array)
    for key in sorted(groups):
        members = groups[key]
        xp = backend.namespace(members[0])
        with backend.device_of(members[0]):
            flat = xp.concat([xp.reshape(a, (-1,)) for a in members])
        comm.broadcast(flat, root=root)
        offset = 0
        for a in members:
            size = 1
            for n in a.shape:
                size *= n
            a[...] = xp.reshape(flat[offset:offset + size], tuple(a.shape))
            offset += size
