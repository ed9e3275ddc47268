"""Flat buffers: the parameters of one device and dtype as views into one contiguous array.

An optimizer step written parameter by parameter costs a handful of array operations *per
parameter array* (each one a kernel launch on a GPU). A :class:`FlatBuffer` packs the values
of a list of parameters into one 1-D array and hands each parameter a view of its segment::

    flat.value = [ θ₀ (flattened) | θ₁ | ... | θₙ ]      p_i.value  = view of segment i
    flat.grad  = [ ∇θ₀            | ∇θ₁ | ... | ∇θₙ ]     p_i.grad   = view of segment i
    flat.slots["exp_avg"] = [ m₀ | m₁ | ... | mₙ ]        p_i.state["exp_avg"] = view of segment i

so an update is a fixed number of operations on the flat arrays, however many parameters the
model has (PyTorch's foreach/fused optimizers and apex's multi-tensor apply do the same).

The buffer is built lazily by the optimizer at its first step and checked at every step by
identity: whoever replaces ``p.value``, ``p.grad`` or ``p.state[name]`` with another array
(``model.to``, ``load_state_dict``, a checkpoint, the counting proxies of
:mod:`gradflow.testing.counting`) breaks the link, and the optimizer rebuilds the buffer from
the arrays it finds, so nothing the user sees changes meaning. Gradients arrive as separate
arrays from backprop (``Parameter.accumulate`` takes them over); :meth:`FlatBuffer.gather_grads`
packs them with one ``concat`` and rebinds every ``p.grad`` to its view, and a gradient that
already is the buffer's view (accumulated in place, or left from the previous step) costs
nothing.

Slots of a parameter that has never taken a step hold their initial value and are not put in
``p.state`` until its first step, as in ``torch.optim`` (so ``state_dict`` holds exactly the
state of the parameters that moved).

Every array made or combined here is made inside the device's context (``with device:``), so
on CuPy it lands on the parameters' GPU, not on the current one.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import backend
from ..backend import Array
from ..core import Parameter


def device_context(array: Array) -> Any:
    """``with device_context(x):`` enters the context of ``x``'s device (the current CUDA device
    for CuPy). Measuring proxies belong to no device and get a null context."""
    try:
        return backend.device_of(array)
    except TypeError:  # a measuring proxy: the context of the array it wraps, if any
        return backend.device_context(array)


def bucket_key(p: Parameter) -> tuple[str, str]:
    """(device name, dtype name): parameters with the same key can share one flat buffer."""
    value = p.value
    try:
        where = backend.device_of(value).name
    except TypeError:  # a measuring proxy
        where = f"{type(value).__module__}.{type(value).__name__}"
    return where, backend.dtype_name(value.dtype)


#: On the host, a bucket whose parameter arrays hold this many elements or more on average is
#: updated parameter by parameter: packing fresh gradients into the flat array is one more pass
#: over them (~0.2 ms per step for a 784-512-512-10 MLP in float32), while the calls a flat update
#: saves cost a few µs per parameter array there. Measured: that MLP's SGD-momentum step at batch
#: 64 on 2 cores is ~7% faster per parameter; a stack of small layers is faster flat.
HOST_FLAT_MAX_MEAN_SIZE = 16384


class FlatBuffer:
    """The parameters ``params`` (one device, one dtype) as views of flat arrays.

    params: the parameters, in order. slots: optimizer slot names and the value a slot starts
    at (``{"exp_avg": 0.0}``). steps: each parameter's step count (a slot of a parameter with
    step 0 starts at its initial value; see the module docstring). Building copies the current
    values (and any slot arrays already in ``p.state``) into the flat arrays and rebinds
    ``p.value`` (and ``p.state[name]``) to views.
    """

    def __init__(self, params: Sequence[Parameter], slots: dict[str, float], steps: Sequence[int]):
        self.params = list(params)
        first = self.params[0].value
        self.device = device_context(first)
        self.dtype = first.dtype
        self.xp = backend.namespace(first)
        self.shapes = [p.shape for p in self.params]
        self.bounds: list[tuple[int, int]] = []
        offset = 0
        for p in self.params:
            self.bounds.append((offset, offset + p.size))
            offset += p.size
        self.size = offset
        #: whether packing the gradients for one flat update pays (see HOST_FLAT_MAX_MEAN_SIZE)
        #: True when the arrays compute on the host (no device context to enter around updates)
        self.on_host = backend.computes_on_host(first)
        self.flat_pays = not self.on_host or self.size < HOST_FLAT_MAX_MEAN_SIZE * len(self.params)
        #: every position, and each position alone: the members of a flat or per-parameter update
        self.positions = tuple(range(len(self.params)))
        self.singles = [(position,) for position in self.positions]
        with self.device:
            self.value = self.xp.concat([self.xp.reshape(p.value, (-1,)) for p in self.params])
        self.value_views = self._views(self.value)
        for p, view in zip(self.params, self.value_views):
            p.value = view
        self.slots: dict[str, Array] = {}
        self.slot_views: dict[str, list[Array]] = {}
        self._segments: list[tuple[Array, dict[str, Array]]] | None = None
        self.fills: dict[str, float] = {}
        self.ensure_slots(slots, steps)
        self.grad: Array | None = None
        self.grad_views: list[Array] | None = None

    def _views(self, flat: Array) -> list[Array]:
        # a 1-D parameter's view is the slice itself (a reshape call costs ~0.3-2 µs on the host)
        reshape = backend.reshape
        return [flat[start:stop] if len(shape) == 1 else reshape(flat[start:stop], shape)
                for (start, stop), shape in zip(self.bounds, self.shapes)]

    def ensure_slots(self, slots: dict[str, float], steps: Sequence[int]) -> None:
        """Create the flat array of every slot in ``slots`` not built yet, from the arrays in
        ``p.state`` where a parameter has one, else from the slot's initial value."""
        xp = self.xp
        for name, fill in slots.items():
            if name in self.slots:
                continue
            parts = []
            with self.device:
                for p, shape in zip(self.params, self.shapes):
                    existing = p.state.get(name)
                    if existing is not None:
                        if existing.dtype != self.dtype:
                            existing = xp.astype(existing, self.dtype)
                        parts.append(xp.reshape(existing, (-1,)))
                    else:
                        parts.append(xp.full((p.size,), fill, dtype=self.dtype, device=_device(p.value)))
                flat = xp.concat(parts)
            views = self._views(flat)
            for p, view, step in zip(self.params, views, steps):
                if name in p.state or step > 0:
                    p.state[name] = view
            self.slots[name] = flat
            self.slot_views[name] = views
            self._segments = None
            self.fills[name] = fill

    def is_current(self, steps: Sequence[int], indices: Sequence[int] | None = None) -> bool:
        """True while every parameter's value and slots still are this buffer's views.

        steps: each parameter's step count (a slot of a parameter with step 0 may be absent from
        its ``state``); with ``indices``, ``steps`` is indexed by them (the optimizer's list of
        every parameter's count, so that no per-bucket list is built at every step)."""
        params = self.params
        for p, view in zip(params, self.value_views):
            if p.value is not view:
                return False
        for name, views in self.slot_views.items():
            for position, (p, view) in enumerate(zip(params, views)):
                held = p.state.get(name)
                if held is not view:
                    if held is not None:
                        return False
                    step = steps[position] if indices is None else steps[indices[position]]
                    if step != 0:
                        return False
        return True

    def publish(self, index: int) -> None:
        """Put parameter ``index``'s slot views into its ``state`` (after its first step)."""
        p = self.params[index]
        for name, views in self.slot_views.items():
            p.state[name] = views[index]

    def gather_grads(self) -> Array:
        """The flat gradient: the existing one when every ``p.grad`` is still its view, else one
        ``concat`` of the gradients (every ``p.grad`` then becomes its view)."""
        views = self.grad_views
        if views is not None and all(p.grad is view for p, view in zip(self.params, views)):
            return self.grad
        if self.on_host:  # no device to make current
            self.grad = self._packed_grads()
        else:
            with self.device:  # a reshape may copy, and concat allocates: on the parameters' GPU
                self.grad = self._packed_grads()
        self.grad_views = self._views(self.grad)
        for p, view in zip(self.params, self.grad_views):
            p.grad = view
        return self.grad

    def _packed_grads(self) -> Array:
        """Every ``p.grad``, flattened and joined (one ``concat``)."""
        reshape = backend.reshape
        return self.xp.concat([g if g.ndim == 1 else reshape(g, (-1,)) for g in (p.grad for p in self.params)])

    def pack_grads(self, positions: Sequence[int]) -> Array:
        """Copy the gradients of the parameters at ``positions`` into their views of the flat
        gradient (allocated, zeros, when there is none yet; a parameter without a gradient gets
        zeros) and make each ``p.grad`` its view; returns the flat gradient. For data parallel
        training, which all-reduces this array in place (:mod:`gradflow.distributed`), bucket by
        bucket as backprop finishes them."""
        if self.grad is None:
            with self.device:
                self.grad = self.xp.zeros((self.size,), dtype=self.dtype, device=_device(self.value))
            self.grad_views = self._views(self.grad)
        for i in positions:
            p, view = self.params[i], self.grad_views[i]
            if p.grad is not view:
                with self.device:
                    view[...] = 0.0 if p.grad is None else p.grad
                p.grad = view
        return self.grad

    def segment(self, index: int) -> tuple[Array, dict[str, Array]]:
        """Parameter ``index``'s value view and slot views (for per-parameter updates); the same
        pair every step while the slots stay the same (callers only read the dict)."""
        segments = self._segments
        if segments is None:
            segments = self._segments = [
                (value, {name: views[i] for name, views in self.slot_views.items()})
                for i, value in enumerate(self.value_views)]
        return segments[index]

    def __repr__(self) -> str:
        return (f"FlatBuffer({len(self.params)} parameters, {self.size} values, "
                f"dtype={backend.dtype_name(self.dtype)}, slots={sorted(self.slots)})")


def _device(array: Array) -> Any:
    """The ``device=`` argument for creation functions next to ``array``."""
    return getattr(array, "device", None)


__all__ = ["HOST_FLAT_MAX_MEAN_SIZE", "FlatBuffer", "bucket_key", "device_context"]
