"""DataParallel: a model whose backprop also averages its gradients over all ranks.

    comm = gfd.init()
    model = gfd.DataParallel(build_model(), comm)        # broadcasts rank 0's parameters
    optimizer = Adam(model, lr=1e-3)
    model.use_optimizer_buffers(optimizer)               # reduce the optimizer's flat gradients
    for xb, yb in gfd.DistributedBatchIterator(x, y, batch_size=32, comm=comm):
        output, backprop = model(xb, train=True)
        value, delta = loss(output, yb)
        optimizer.zero_grad()
        backprop(delta)                                   # gradients, then all-reduce
        optimizer.step()                                  # the same step on every rank

It is a layer that delegates to the wrapped model (same parameters, same ``state_dict`` keys),
so ``gradflow.train.fit`` and optimizers take it as they are.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from ..backend import Array
from ..core import Backprop, Layer, Parameter, add_call_hook
from .communicator import Communicator
from .gradients import GradientReducer, broadcast_parameters

AVERAGES = ("samples", "ranks", "sum")


class DataParallel(Layer):
    """Wrap ``model`` for data-parallel training over ``comm`` (default: :func:`init` on the model's device).

    average: ``"samples"`` (default) weighs each rank by its batch size (axis 0 of the input), so
    gradients are the mean over the global batch even when ranks hold unequal batches;
    ``"ranks"`` is the plain mean over ranks; ``"sum"`` leaves the sum. bucket_bytes: see
    :class:`GradientReducer`. broadcast: copy rank 0's parameters and buffers to every rank now.
    Gradients are reduced during each backprop, except inside :meth:`no_sync` (gradient
    accumulation): the samples seen there are counted into the next reduction.

    overlap (default True): each bucket is all-reduced, non-blocking (``MPI_Iallreduce``; NCCL
    on a side stream), as soon as the gradients in it are final, while backprop goes on through
    the earlier layers; backprop waits for the collectives only at its end. A parameter's
    gradient counts as final when every call of the layers that own it (hold it as an
    attribute) has backpropagated, so a layer must not add gradient to a parameter owned by a
    layer called *later* in the forward pass (weight tying the other way round, with the owner
    first, is fine); use ``overlap=False`` (one reduction after backprop) for such models.
    Pick ``bucket_bytes`` (e.g. 1-25 MB) for overlap to pay: with one bucket nothing overlaps.

    optimizer: a gradflow optimizer of exactly the model's parameters (or call
    :meth:`use_optimizer_buffers` once it exists): its flat gradient arrays are all-reduced in
    place instead of a copy packed by the reducer, so its step finds the gradients packed
    (bit-identical results; see :mod:`gradflow.distributed.gradients`).
    """

    def __init__(self, model: Layer, comm: Communicator | None = None, *, average: str = "samples",
                 bucket_bytes: int | None = None, broadcast: bool = True, overlap: bool = True,
                 optimizer: Any = None):
        if not isinstance(model, Layer):
            raise TypeError(f"DataParallel: expected a Layer, got {type(model).__name__}")
        if average not in AVERAGES:
            raise ValueError(f"DataParallel: average must be one of {AVERAGES}, got {average!r}")
        if comm is None:
            from .launch import init

            comm = init(device=model.device)
        self.module = model
        self.comm = comm
        self.average = average
        self.reducer = GradientReducer(model, comm, bucket_bytes, optimizer=optimizer)
        self.overlap = bool(overlap)
        index = {id(p): i for i, p in enumerate(self.reducer.order)}
        # the reducer's indices of the parameters each layer owns, by layer id
        self._owned = {id(layer): [index[id(p)] for p in vars(layer).values() if isinstance(p, Parameter)
                                   and id(p) in index] for _, layer in model.sublayers()}
        self._owned = {k: v for k, v in self._owned.items() if v}
        self._sync = True
        self._pending_samples = 0
        if broadcast:
            broadcast_parameters(model, comm)

    # -- delegation: the wrapper owns nothing, the model owns everything ---------------------
    def named_children(self):
        """The wrapped model's children (the wrapper owns nothing)."""
        return self.module.named_children()

    def _named_own(self, kind: type):
        return self.module._named_own(kind)

    def sublayers(self):
        """The wrapped model's sublayers."""
        return self.module.sublayers()

    @property
    def training(self) -> bool:  # type: ignore[override]
        """The wrapped model's training mode."""
        return self.module.training

    @training.setter
    def training(self, mode: bool) -> None:
        self.module.training = mode

    def predict(self, x: Array, **kwargs: Any) -> Array:
        """The wrapped model's prediction for ``x`` (no communication)."""
        return self.module.predict(x, **kwargs)

    def extra_repr(self) -> str:
        """The communicator, ``average`` and the number of gradient buckets."""
        return f"{self.comm!r}, average={self.average!r}, buckets={len(self.reducer.buckets)}"

    def __repr__(self) -> str:
        inner = repr(self.module).replace("\n", "\n  ")
        return f"DataParallel({self.extra_repr()},\n  {inner}\n)"

    # -- training -----------------------------------------------------------------------------
    def forward(self, x: Array, train: bool, **kwargs: Any) -> tuple[Array, Backprop]:
        overlap = self.overlap and self._sync and train and self.comm.size > 1 and len(self.reducer.buckets) > 1
        calls: dict[int, int] = {}
        if overlap:
            remove = add_call_hook(self._hook(calls))
            try:
                y, module_backprop = self.module(x, train, **kwargs)
            finally:
                remove()
        else:
            y, module_backprop = self.module(x, train, **kwargs)
        samples = int(x.shape[0]) if x.ndim else 1

        def backprop(dy: Array) -> Array:
            self._pending_samples += samples
            if overlap and self._sync:
                weight = self._pending_samples if self.average == "samples" else None
                self._pending_samples = 0
                self.reducer.begin(samples=weight)
                dx = module_backprop(dy)
                self.reducer.finish(average=self.average != "sum")
                return dx
            dx = module_backprop(dy)
            if self._sync:
                self.allreduce_gradients()
            return dx

        return y, backprop

    def _hook(self, calls: dict[int, int]) -> Any:
        """A call hook counting, per parameter, the calls of its owning layers in this forward,
        and wrapping their backprops to report the parameter ready after the last one."""
        owned, reducer = self._owned, self.reducer

        def hook(layer: Layer, x: Array, y: Any, backprop: Backprop) -> Backprop:
            indices = owned.get(id(layer))
            if not indices:
                return backprop
            for i in indices:
                calls[i] = calls.get(i, 0) + 1

            def counted(dy: Any) -> Any:
                dx = backprop(dy)
                for i in indices:
                    calls[i] -= 1
                    if calls[i] == 0:
                        reducer.ready(i)
                return dx

            return counted

        return hook

    def allreduce_gradients(self) -> None:
        """Reduce the gradients now (done by backprop unless inside :meth:`no_sync`)."""
        samples = self._pending_samples if self.average == "samples" else None
        self._pending_samples = 0
        self.reducer.reduce(samples=samples, average=self.average != "sum")

    def use_optimizer_buffers(self, optimizer: Any) -> None:
        """All-reduce ``optimizer``'s flat gradient arrays in place from now on (see the class
        docstring); it must hold exactly the model's parameters."""
        self.reducer.use_optimizer_buffers(optimizer)

    @contextmanager
    def no_sync(self) -> Iterator[None]:
        """Backprops inside only accumulate locally; the first backprop after it reduces everything."""
        previous, self._sync = self._sync, False
        try:
            yield
        finally:
            self._sync = previous


def reduce_metrics(metrics: Mapping[str, float], comm: Communicator, weight: float = 1.0) -> dict[str, float]:
    """The weighted mean of each metric over all ranks (e.g. ``weight`` = samples seen by this rank).

    Every rank must pass the same names. The result is identical on every rank.
    """
    names = sorted(metrics)
    summed = comm.allreduce_floats([float(metrics[name]) * weight for name in names] + [float(weight)])
    total = summed[-1]
    if total == 0:
        raise ValueError("reduce_metrics: the weights sum to zero over all ranks")
    return {name: value / total for name, value in zip(names, summed[:-1])}
