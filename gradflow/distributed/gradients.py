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

With :meth:`GradientReducer.use_optimizer_buffers` (``DataParallel(..., optimizer=...)``) there
is no buffer of the reducer's own: the optimizer's flat gradient arrays
(:class:`gradflow.optim.flat.FlatBuffer`, one per parameter group, device and dtype, parameters
in forward order) are all-reduced in place, cut into buckets from their ends (the last layers'
gradients are final first), and the count travels in a one-element array of its own. The step
that follows then finds every gradient already packed: one pass over the gradients fewer (the
optimizer's ``concat``) and no second flat copy in memory.
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

    def __init__(self, params: "Layer | Iterable[Parameter]", comm: Communicator, bucket_bytes: int | None = None,
                 optimizer: Any = None):
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
        self.optimizer: Any = None  # set by use_optimizer_buffers: reduce its flat gradients in place
        self._shared_key: tuple[int, ...] | None = None
        self._shared_buffers: list[Any] = []
        self._count: Array | None = None
        if optimizer is not None:
            self.use_optimizer_buffers(optimizer)

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
        with backend.device_context(self.params[0].value):  # CuPy: pack and unpack on the GPU
            if self.optimizer is not None:
                self._reduce_shared(samples, average)
            else:
                self._reduce(samples, average)

    def _reduce(self, samples: int | None, average: bool) -> None:
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
        if self.optimizer is not None and self.comm.size > 1:
            self._plan_shared()
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
        if self.optimizer is not None:
            self._launch_shared(bucket)
            return
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
        if self.optimizer is not None:
            if average:
                self._average_shared()
            return
        flat = self._buffer()
        xp = backend.namespace(flat)
        if average:
            flat *= 1.0 / flat[0:1]  # on the device: no host sync
        for p, (start, stop) in zip(self.order, self.slices):
            p.grad = xp.reshape(flat[start:stop], p.shape)

    # -- reducing the optimizer's flat gradient arrays in place ---------------------------------
    def use_optimizer_buffers(self, optimizer: Any) -> None:
        """From now on all-reduce ``optimizer``'s flat gradient arrays in place (see the module
        docstring) instead of this reducer's own buffer. The optimizer must hold exactly these
        parameters (checked here, before anything changes); results are bit-identical to the
        reducer's own buffer, blocking or overlapped."""
        flat_buffers = getattr(optimizer, "flat_buffers", None)
        if flat_buffers is None:
            raise TypeError(f"GradientReducer.use_optimizer_buffers: expected a gradflow Optimizer, "
                            f"got {type(optimizer).__name__}")
        mine, theirs = {id(p) for p in self.params}, {id(p) for p in optimizer.params}
        if mine != theirs:
            raise ValueError(f"GradientReducer.use_optimizer_buffers: the optimizer must hold exactly the "
                             f"{len(mine)} parameters reduced here; it holds {len(theirs)}, "
                             f"{len(theirs - mine)} of them not reduced and missing {len(mine - theirs)}")
        self.optimizer = optimizer
        self._shared_key = None
        self._plan_shared()

    def _plan_shared(self) -> None:
        """Cut the optimizer's flat buffers into buckets (again, when it rebuilt them): from the
        end of each buffer, at least ``bucket_bytes`` each, ordered by when their gradients are
        final (the bucket whose last-final gradient comes first goes first)."""
        buffers = self.optimizer.flat_buffers()
        key = tuple(id(b) for b in buffers)
        if key == self._shared_key:
            return
        where = {id(p): i for i, p in enumerate(self.order)}  # backprop order
        units = []
        for buffer in buffers:
            itemsize = backend.namespace(buffer.value).finfo(buffer.dtype).bits // 8
            positions, stop = [], buffer.size
            for j in reversed(range(len(buffer.params))):
                positions.append(j)
                start = buffer.bounds[j][0]
                if self.bucket_bytes is not None and (stop - start) * itemsize >= self.bucket_bytes:
                    units.append((buffer, start, stop, positions))
                    positions, stop = [], start
            if positions:
                units.append((buffer, 0, stop, positions))
        units.sort(key=lambda u: max(where[id(u[0].params[j])] for j in u[3]))
        self.buckets = units  # (flat buffer, start, stop, positions of its parameters in it)
        self.members = [[where[id(buffer.params[j])] for j in positions] for buffer, _, _, positions in units]
        self.bucket_of = [0] * len(self.order)
        for k, members in enumerate(self.members):
            for i in members:
                self.bucket_of[i] = k
        self._shared_key = key
        self._shared_buffers = buffers

    def _count_array(self, weight: float) -> Array:
        value = self.params[0].value
        count = self._count
        if count is None or not backend.same_device(count, value) or count.dtype != value.dtype:
            count = self._count = backend.device_of(value).zeros((1,), value.dtype)
        with backend.device_context(value):
            count[...] = weight
        return count

    def _reduce_shared(self, samples: int | None, average: bool) -> None:
        self._plan_shared()
        weight = 1.0 if samples is None else float(samples)
        for buffer in self._shared_buffers:
            if all(p.grad is not None for p in buffer.params):
                flat = buffer.gather_grads()  # one concat (nothing when already packed)
            else:
                flat = buffer.pack_grads(range(len(buffer.params)))
            if weight != 1.0:
                flat *= weight
        self.comm.allreduce(self._count_array(weight))
        for buffer, start, stop, _ in self.buckets:
            self.comm.allreduce(buffer.grad[start:stop])
        if average:
            self._average_shared()

    def _launch_shared(self, bucket: int) -> None:
        step = self._step
        buffer, start, stop, positions = self.buckets[bucket]
        flat = buffer.pack_grads(positions)
        if step["weight"] != 1.0:
            with buffer.device:
                flat[start:stop] *= step["weight"]
        if bucket == 0:  # the count first, in the same order as the blocking path
            step["requests"].append(self.comm.iallreduce(self._count_array(step["weight"])))
        step["left"][bucket] = 0
        step["launched"] = bucket + 1
        step["requests"].append(self.comm.iallreduce(flat[start:stop]))

    def _average_shared(self) -> None:
        with backend.device_context(self.params[0].value):
            scale = 1.0 / self._count  # on the device: no host sync
        for buffer in self._shared_buffers:
            with buffer.device:
                buffer.grad *= scale


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
                    with backend.device_context(p.value):  # CuPy: *_like allocates on the current GPU
                        p.state[name] = backend.namespace(p.value).zeros_like(p.value)
            arrays += [p.state[name] for name in names]
        optimizer.step_count = int(comm.broadcast_object(optimizer.step_count, root=root))
        if hasattr(optimizer, "param_steps"):  # per-parameter counts (Adam's bias correction)
            optimizer.param_steps = [int(n) for n in comm.broadcast_object(list(optimizer.param_steps), root=root)]
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
        with backend.device_of(members[0]):  # the write-back is a kernel on the arrays' GPU
            for a in members:
                size = 1
                for n in a.shape:
                    size *= n
                a[...] = xp.reshape(flat[offset:offset + size], tuple(a.shape))
                offset += size
