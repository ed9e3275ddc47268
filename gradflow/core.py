"""Parameters, the layer protocol and the checks every layer runs at its boundary.

The protocol, in one line::

    y, backprop = layer(x, train=True)      # forward; backprop keeps what it needs
    dx = backprop(dy)                         # adds dL/dθ into each parameter's .grad

    y, backprop = model(x, train=True, input_grad=False)   # the caller won't use dx:
    backprop(dy)                                            # layers may skip it (returns None)

``backprop`` is a closure, so a layer called twice (weight tying, an unrolled RNN) gets two
independent closures and its gradients add up. ``layer.predict(x)`` is inference: eval mode and
nothing kept for a backward pass.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from . import backend
from .backend import Array, Device, DeviceError
from .validation import CheckedArguments, state_mismatch_message, state_mismatches

Backprop = Callable[[Array], Array]
CallHook = Callable[["Layer", Array, Any, Backprop], Backprop]

# Observers of every layer call (diagnostics, anomaly mode). Empty in normal use, so a layer
# call costs one extra truthiness check. See :func:`add_call_hook`.
_CALL_HOOKS: list[CallHook] = []

# Counts every Parameter.mark_modified() in the process. A backprop compares it with the value
# it saw at its forward: equal (the common case) means no weight changed, one integer compare;
# different means look at the parameters' own stamps (see Parameter.mark_modified).
_MODIFICATIONS = 0

# Undo records of the outermost layer call (or of a `rollback_on_error()` block) in progress:
# None outside one. Layers that change state in a forward (running statistics, a generator)
# record how to undo it with `record_undo`, so a forward that raises leaves no trace.
_JOURNAL: list[Callable[[], None]] | None = None


def record_undo(undo: Callable[[], None]) -> None:
    """Register ``undo`` to run if the layer call (or ``rollback_on_error`` block) in progress
    raises. Layers call this before changing state in a forward: BatchNorm before moving its
    running statistics, Dropout before drawing a mask. Outside a call it does nothing."""
    if _JOURNAL is not None:
        _JOURNAL.append(undo)


def record_buffer(buffer: "Buffer") -> None:
    """Before assigning ``buffer.value`` in a forward: restore the current array on failure."""
    if _JOURNAL is not None:
        old = buffer.value
        _JOURNAL.append(lambda: setattr(buffer, "value", old))


def record_generator(generator: Any) -> None:
    """Before drawing from ``generator`` (a DeviceRNG) in a forward: restore its state on failure."""
    if _JOURNAL is not None:
        state = generator.get_state()
        _JOURNAL.append(lambda: generator.set_state(state))


class rollback_on_error:
    """``with rollback_on_error(): ...``: if the block raises, every state change recorded with
    :func:`record_undo` inside it (running statistics, dropout generators) is undone, newest
    first, before the error propagates. ``fit`` wraps each step's forward and loss in one, so a
    batch that is refused (bad labels, a shape a later layer rejects) changes nothing. Layer
    calls outside such a block open their own. Nested blocks join the outermost one."""

    __slots__ = ("_owner",)

    def __enter__(self) -> "rollback_on_error":
        global _JOURNAL
        self._owner = _JOURNAL is None
        if self._owner:
            _JOURNAL = []
        return self

    def __exit__(self, kind: Any, error: Any, traceback: Any) -> None:
        global _JOURNAL
        if not self._owner:
            return
        journal, _JOURNAL = _JOURNAL, None
        if kind is not None and journal:
            for undo in reversed(journal):
                undo()


def add_call_hook(hook: CallHook) -> Callable[[], None]:
    """Observe every ``layer(x, train)`` call: ``hook(layer, x, y, backprop) -> backprop``.

    The hook runs after the layer's forward and returns the backprop to hand on (the same one,
    or a wrapper that looks at the δs and gradients). Hooks see every layer, containers
    included, inner layers before the containers that hold them; ``layer.predict`` does not
    go through hooks. Returns a function that removes the hook. Used by
    :mod:`gradflow.diagnostics` (gradient flow, anomaly mode) instead of patching layers.
    """
    _CALL_HOOKS.append(hook)

    def remove() -> None:
        if hook in _CALL_HOOKS:
            _CALL_HOOKS.remove(hook)

    return remove


class Parameter:
    """A trainable array, its gradient and the optimizer's per-parameter state.

    ``grad`` is ``None`` until a backward pass adds to it (and again after ``zero_grad``).
    ``state`` holds optimizer slots (momentum, Adam moments...), so that moving the model moves
    them too. ``version`` counts in-place changes of ``value``: whoever writes into ``value``
    (an optimizer step) calls :meth:`mark_modified`, so a backprop can tell that the weights it
    closed over changed since its forward.
    """

    __slots__ = ("value", "grad", "state", "version", "modified_at")

    def __init__(self, value: Array):
        if not backend.is_floating(value.dtype):
            raise TypeError(f"Parameter: a trainable array must be floating-point, got dtype {backend.dtype_name(value.dtype)}")
        self.value = value
        self.grad: Array | None = None
        self.state: dict[str, Array] = {}
        self.version = 0
        self.modified_at = 0

    def mark_modified(self) -> None:
        """Record that ``value`` was changed in place (optimizers call this after each update).

        A backprop whose forward ran before this call then raises instead of returning gradients
        computed with weights that are no longer the ones it saw."""
        global _MODIFICATIONS
        _MODIFICATIONS += 1
        self.version += 1
        self.modified_at = _MODIFICATIONS

    def accumulate(self, gradient: Array) -> None:
        """Add ``gradient`` into ``.grad``; a fresh array is taken over, not copied."""
        if self.grad is None:
            self.grad = gradient
        else:
            self.grad += gradient

    @property
    def shape(self) -> tuple[int, ...]:
        """The value's shape."""
        return tuple(self.value.shape)

    @property
    def dtype(self) -> Any:
        """The value's dtype."""
        return self.value.dtype

    @property
    def device(self) -> Device:
        """The :class:`Device` holding the value."""
        return backend.device_of(self.value)

    @property
    def size(self) -> int:
        """The number of entries in the value."""
        size = 1
        for n in self.value.shape:
            size *= n
        return size

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={backend.dtype_name(self.dtype)}, device={self.device})"


class Buffer:
    """A non-trainable array a layer keeps between calls (e.g. batch-norm running statistics)."""

    __slots__ = ("value",)

    def __init__(self, value: Array):
        self.value = value

    def __repr__(self) -> str:
        return f"Buffer(shape={tuple(self.value.shape)})"


class Layer(CheckedArguments):
    """Base class of every layer and container.

    Subclasses implement ``forward(x, train) -> (y, backprop)``. Parameters, buffers and
    sub-layers are found by looking at the instance's attributes (also inside lists), in the
    order they were assigned, so ``state_dict`` keys are stable: ``"0.weight"``,
    ``"encoder.layers.1.bias"``.

    Constructor arguments with the common names of :data:`gradflow.validation.CHECKS` (``eps``,
    ``dropout``, ``dtype``, ``bias``...) are checked the same way in every subclass before its
    ``__init__`` runs.
    """

    training: bool = True
    #: True when ``forward`` takes ``input_grad`` and then can skip computing the input's δ.
    skips_input_grad: bool = False
    #: False when ``forward`` never changes state (no buffers, generators or :func:`record_undo`):
    #: a call of such a layer outside a container then skips opening an undo journal.
    forward_changes_state: bool = True

    def forward(self, x: Array, train: bool) -> tuple[Array, Backprop]:
        """``(y, backprop)`` for input ``x`` (``train``: training mode); subclasses implement it."""
        raise NotImplementedError(f"{type(self).__name__} does not implement forward")

    def __call__(self, x: Array, train: bool | None = None, *, input_grad: bool = True,
                 **kwargs: Any) -> tuple[Array, Backprop]:
        """Forward pass: ``(y, backprop)``.

        ``input_grad=False`` is the caller's promise not to use the δ that ``backprop`` returns
        for ``x`` (``x`` is data, not the output of a layer being trained). Layers that declare
        ``skips_input_grad`` then skip that work and their backprop returns ``None``; the others
        ignore the promise. Parameter gradients are computed either way. Hooks registered with
        :func:`add_call_hook` see every call.
        """
        if not input_grad and self.skips_input_grad:
            kwargs["input_grad"] = False
        if train is None:
            train = self.training
        context = _device_context(x)  # CuPy: forward and backprop run on x's GPU
        if context is not _NO_CONTEXT:
            with context:
                y, backprop = self._journaled_forward(x, train, kwargs)
        elif _CALL_HOOKS or (_JOURNAL is None and self.forward_changes_state):
            y, backprop = self._journaled_forward(x, train, kwargs)
        else:
            # The common case, on host arrays: a call inside a container (whose outermost call
            # owns the undo journal), or a layer that changes no state in its forward.
            y, backprop = self.forward(x, train, **kwargs)
        # _MODIFICATIONS is read after the forward: a forward may change its own weights in
        # place (Embedding's max_norm renormalises the rows it reads), and its backprop is for those
        return y, _delta_checked(self, y, backprop, _MODIFICATIONS, context)

    def _journaled_forward(self, x: Array, train: bool, kwargs: dict[str, Any]) -> tuple[Array, Backprop]:
        """The forward and the call hooks; the outermost call undoes what a forward that raises
        changed (running statistics, dropout generators: see :func:`record_buffer`)."""
        global _JOURNAL
        if _JOURNAL is not None:  # inside a container's call: the outermost call owns the undo
            y, backprop = self.forward(x, train, **kwargs)
            if _CALL_HOOKS:
                for hook in tuple(_CALL_HOOKS):
                    backprop = hook(self, x, y, backprop)
            return y, backprop
        journal = _JOURNAL = []
        try:
            y, backprop = self.forward(x, train, **kwargs)
            if _CALL_HOOKS:
                for hook in tuple(_CALL_HOOKS):
                    backprop = hook(self, x, y, backprop)
        except BaseException:
            _JOURNAL = None
            for undo in reversed(journal):
                undo()
            raise
        _JOURNAL = None
        return y, backprop

    def predict(self, x: Array, **kwargs: Any) -> Array:
        """Inference: eval-mode output, nothing kept for backward (run on x's GPU, as a call is)."""
        with backend.device_context(x):
            return self.forward(x, False, **kwargs)[0]

    # -- structure ---------------------------------------------------------------------------
    def named_children(self) -> Iterator[tuple[str, "Layer"]]:
        """``(name, layer)`` for each direct sublayer (attributes, and items of list or tuple attributes)."""
        for name, value in vars(self).items():
            if isinstance(value, Layer):
                yield name, value
            elif isinstance(value, (list, tuple)):
                for i, item in enumerate(value):
                    if isinstance(item, Layer):
                        yield f"{name}.{i}", item

    def _named_own(self, kind: type) -> Iterator[tuple[str, Any]]:
        for name, value in vars(self).items():
            if isinstance(value, kind):
                yield name, value

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Parameter]]:
        """``(dotted name, parameter)`` for every parameter inside, each tied parameter once."""
        seen: set[int] = set()
        for name, item in self._walk(Parameter, prefix):
            if id(item) not in seen:  # a tied parameter is listed once
                seen.add(id(item))
                yield name, item

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, Buffer]]:
        """``(dotted name, buffer)`` for every buffer inside."""
        yield from self._walk(Buffer, prefix)

    def _walk(self, kind: type, prefix: str) -> Iterator[tuple[str, Any]]:
        for name, item in self._named_own(kind):
            yield prefix + name, item
        for name, child in self.named_children():
            yield from child._walk(kind, f"{prefix}{name}.")

    def parameters(self) -> list[Parameter]:
        """Every parameter inside, each tied parameter once."""
        return [p for _, p in self.named_parameters()]

    def sublayers(self) -> Iterator[tuple[str, "Layer"]]:
        """This layer and every layer inside it, depth first, with dotted names."""
        yield "", self
        for name, child in self.named_children():
            for sub, layer in child.sublayers():
                yield (f"{name}.{sub}" if sub else name), layer

    # -- device, dtype and mode --------------------------------------------------------------
    @property
    def device(self) -> Device | None:
        """The device of the layer's parameters (``None`` for a layer with no arrays)."""
        for _, p in self.named_parameters():
            return p.device
        for _, b in self.named_buffers():
            return backend.device_of(b.value)
        return None

    @property
    def dtype(self) -> Any:
        """The dtype of the layer's parameters (``None`` for a layer without parameters)."""
        for _, p in self.named_parameters():
            return p.dtype
        return None

    def to(self, device: "str | Device | None" = None, dtype: str | None = None) -> "Layer":
        """Move (and/or cast) every parameter, gradient, optimizer slot and buffer. Returns self."""
        target = backend.device(device) if device is not None else None
        if dtype is not None and dtype not in backend.DTYPES:
            raise ValueError(f"{type(self).__name__}.to: dtype must be one of {backend.DTYPES}, got {dtype!r}")
        for _, p in self.named_parameters():
            dev = target or p.device
            before = p.value
            p.value = dev.send(p.value, dtype)
            if p.value is not before:  # a backprop of an earlier forward holds the old array
                p.mark_modified()
            if p.grad is not None:
                p.grad = dev.send(p.grad, dtype)
            for slot, array in list(p.state.items()):
                p.state[slot] = dev.send(array, dtype if backend.is_floating(array.dtype) else None)
        for _, b in self.named_buffers():
            dev = target or backend.device_of(b.value)
            b.value = dev.send(b.value, dtype if backend.is_floating(b.value.dtype) else None)
        for _, layer in self.sublayers():
            layer._moved(target, dtype)
        return self

    def _moved(self, device: Device | None, dtype: str | None) -> None:
        """Hook for layers holding other device resources (e.g. a dropout RNG)."""

    def train(self, mode: bool = True) -> "Layer":
        """Set training mode (``mode``) on this layer and every sublayer; returns self."""
        for _, layer in self.sublayers():
            layer.training = mode
        return self

    def eval(self) -> "Layer":
        """Set evaluation mode on this layer and every sublayer; returns self."""
        return self.train(False)

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (``grad = None``)."""
        for p in self.parameters():
            p.grad = None

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Array]:
        """Parameter values and buffers by dotted name (the arrays themselves, not copies)."""
        state = {name: p.value for name, p in self.named_parameters()}
        state.update({name: b.value for name, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict[str, Any], strict: bool = True) -> None:
        """Copy arrays into the model, onto its device and dtype.

        Every key and shape is checked before anything is assigned, so a mismatch leaves the
        model as it was and the error lists every missing, unexpected and mis-shaped key.
        """
        targets: dict[str, Parameter | Buffer] = dict(self.named_parameters())
        targets.update(dict(self.named_buffers()))
        message = state_mismatch_message(f"{type(self).__name__}.load_state_dict: the state does not fit the model",
                                         *state_mismatches({k: t.value for k, t in targets.items()}, state),
                                         strict=strict)
        if message:
            raise ValueError(message)
        for key, target in targets.items():
            if key in state:
                current = target.value
                target.value = backend.device_of(current).send(state[key], current.dtype)
                if target.value is state[key]:
                    with backend.device_context(current):  # CuPy: the copy goes to the current GPU
                        target.value = backend.namespace(current).asarray(target.value, copy=True)
                if isinstance(target, Parameter):
                    target.mark_modified()

    # -- display -----------------------------------------------------------------------------
    def extra_repr(self) -> str:
        """The layer's arguments as shown inside its repr (empty by default)."""
        return ""

    def __repr__(self) -> str:
        children = list(self.named_children())
        head = f"{type(self).__name__}({self.extra_repr()}"
        if not children:
            return head + ")"
        body = "\n".join(f"  ({name}): " + repr(child).replace("\n", "\n  ") for name, child in children)
        return f"{head}\n{body}\n)"

    def describe(self) -> str:
        """A short name for error messages: ``Linear(in_features=4, out_features=3)``."""
        return f"{type(self).__name__}({self.extra_repr()})"


# --------------------------------------------------------------------------------------------
# Boundary checks: cheap, explicit, and before any state changes.
# --------------------------------------------------------------------------------------------


def check_input(
    layer: Layer,
    x: Any,
    *,
    ndim: int | tuple[int, ...] | None = None,
    min_ndim: int | None = None,
    features: int | None = None,
    axis: int = -1,
    like: Array | None = None,
    what: str = "input",
) -> None:
    """Raise a clear error when ``x`` cannot go into ``layer``.

    ndim/min_ndim: allowed number of axes. features: required size of ``axis``.
    like: a parameter array; ``x`` must share its device and dtype.
    """
    # Fast path, taken by every training step: an array of the parameter's own type, dtype and
    # device, or (without ``like``) a floating array of a type and dtype accepted before. Only
    # the shape is left to check. Anything else goes through the full checks and their messages.
    if like is not None:
        fast = (type(x) is type(like) and (x.dtype is like.dtype or x.dtype == like.dtype)
                and backend.same_device(x, like))
    else:
        try:
            fast = (type(x), x.dtype) in _ACCEPTED_FLOATING
        except (AttributeError, TypeError):
            fast = False
    if not fast:
        _check_array(layer, x, like, what)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if x.ndim not in allowed:
            expected = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{layer.describe()}: expected a {expected}-D {what}, got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(
            f"{layer.describe()}: expected {what} with at least {min_ndim} axes, got shape {tuple(x.shape)}"
        )
    if features is not None and x.shape[axis] != features:
        raise ValueError(
            f"{layer.describe()}: expected {what} with {features} features on axis {axis}, "
            f"got shape {tuple(x.shape)}"
        )


# (array type, dtype) pairs that passed the full checks as floating arrays: later inputs of the
# same kind skip the type inspection (a few µs per layer call otherwise).
_ACCEPTED_FLOATING: set[tuple[type, Any]] = set()


def _check_array(layer: Layer, x: Any, like: Array | None, what: str) -> None:
    if not hasattr(x, "shape") or not hasattr(x, "dtype") or not backend.is_array(x):
        raise TypeError(
            f"{layer.describe()}: expected an array as {what}, got {type(x).__name__}; "
            "convert with device.send(...) first"
        )
    if like is not None and not backend.same_device(x, like):
        raise DeviceError(
            f"{layer.describe()}: expected {what} on device {backend.device_of(like)} (the layer's), "
            f"got an array on {_device_name(x)}; move it with device.send(x) or the model with model.to(...)"
        )
    if not backend.is_floating(x.dtype):
        raise TypeError(
            f"{layer.describe()}: expected a floating-point {what}, got dtype {backend.dtype_name(x.dtype)}"
        )
    if like is not None and x.dtype != like.dtype:
        raise TypeError(
            f"{layer.describe()}: expected {what} of dtype {backend.dtype_name(like.dtype)} (the layer's), "
            f"got {backend.dtype_name(x.dtype)}; cast the input (x.astype(np.{backend.dtype_name(like.dtype)}) on the host, "
            f"or device.send(x, {backend.dtype_name(like.dtype)!r})) or the model (model.to(dtype="
            f"{backend.dtype_name(x.dtype)!r})); fit, evaluate and predict cast host inputs for you"
        )
    try:
        _ACCEPTED_FLOATING.add((type(x), x.dtype))
    except TypeError:  # an unhashable dtype: always take the full path
        pass


def check_delta(layer: Layer, dy: Any, expected_shape: tuple) -> None:
    """The δ handed to a backprop must have the forward output's shape (the generic wrapper of
    :meth:`Layer.__call__` checks single-array outputs fully; layers call this for parts)."""
    if dy.shape != expected_shape and tuple(dy.shape) != tuple(expected_shape):
        raise ValueError(
            f"{layer.describe()}: backprop expected a δ of shape {tuple(expected_shape)} "
            f"(the forward output's), got {tuple(dy.shape)}"
        )


def check_delta_like(layer: Layer, dy: Any, like: Array, what: str = "δ") -> None:
    """Raise unless ``dy`` is an array of ``like``'s type, shape, dtype and device.

    For the parts of an output the generic wrapper does not see (the state δs of a recurrent
    layer, the attention weights' δ): ``what`` names the part in the message, e.g.
    ``"δ of the final state h"``. Never broadcasts: a (1, 1, H) δ for an (L, N, H) state fails.
    """
    if (type(dy) is not type(like) or tuple(dy.shape) != tuple(like.shape) or dy.dtype != like.dtype
            or getattr(dy, "device", None) != getattr(like, "device", None)):
        _delta_error(layer, dy, like, what)


_NO_CONTEXT = backend.device_context(None)  # the shared do-nothing context of host arrays
_device_context = backend.device_context


def _delta_checked(layer: Layer, y: Any, backprop: Backprop, seen: int, context: Any = _NO_CONTEXT) -> Backprop:
    """``backprop`` behind the checks every backprop needs, all before any gradient is touched,
    run in the forward's device ``context``:

    - it runs once (a second call would add the gradients twice);
    - no parameter of ``layer`` (sub-layers included) was changed in place since the forward
      (``seen`` is the modification count at the forward; the closures hold the live arrays, so
      the gradients would be those of other weights);
    - the δ has the output's type, shape, dtype and device (never broadcast into a wrong one).
      Outputs that are not single arrays (tuples with states) leave their δ to the layer.
    """
    used = False
    if isinstance(y, tuple) or not hasattr(y, "dtype"):
        def unchecked(dy: Any) -> Any:
            nonlocal used
            if used or _MODIFICATIONS != seen:
                _guard_error(layer, used, seen)
            used = True
            try:
                if context is _NO_CONTEXT:
                    return backprop(dy)
                with context:
                    return backprop(dy)
            except (TypeError, ValueError, DeviceError):  # the layer refused the δs before touching anything
                used = False
                raise

        return unchecked
    shape, dtype, kind = y.shape, y.dtype, type(y)
    if context is _NO_CONTEXT:
        def checked(dy: Array) -> Array:
            nonlocal used
            if used or _MODIFICATIONS != seen:
                _guard_error(layer, used, seen)
            # dtype by identity first (the common δ has the output's own dtype object)
            if (type(dy) is not kind or (dy.dtype is not dtype and dy.dtype != dtype)
                    or (dy.shape != shape and tuple(dy.shape) != tuple(shape))
                    or getattr(dy, "device", None) != getattr(y, "device", None)):
                _delta_error(layer, dy, y)
            used = True
            return backprop(dy)

        return checked

    def checked_in_context(dy: Array) -> Array:
        nonlocal used
        if used or _MODIFICATIONS != seen:
            _guard_error(layer, used, seen)
        if (type(dy) is not kind or dy.dtype != dtype or tuple(dy.shape) != tuple(shape)
                or getattr(dy, "device", None) != getattr(y, "device", None)):
            _delta_error(layer, dy, y)
        used = True
        with context:
            return backprop(dy)

    return checked_in_context


def _guard_error(layer: Layer, used: bool, seen: int) -> None:
    """Raise for a backprop called a second time or after its weights changed (else return)."""
    if used:
        raise RuntimeError(
            f"{layer.describe()}: this backprop was already called; each forward's backprop runs once "
            "(a second call would add the gradients again). Run the forward again for another backward pass"
        )
    changed = [name for name, p in layer.named_parameters() if p.modified_at > seen]
    if changed:
        raise RuntimeError(
            f"{layer.describe()}: parameters {changed} were changed in place (an optimizer step, "
            "load_state_dict) after this forward; its backprop would compute gradients for weights it "
            "did not see. Run the forward again after changing the weights"
        )


def _delta_error(layer: Layer, dy: Any, y: Array, what: str = "δ") -> None:
    if not backend.is_array(dy) or not hasattr(dy, "shape"):
        raise TypeError(f"{layer.describe()}: backprop expected a {what} array, got {type(dy).__name__}")
    if not backend.same_device(dy, y):
        raise DeviceError(
            f"{layer.describe()}: backprop expected a {what} on device {_device_name(y)} (the output's), "
            f"got one on {_device_name(dy)}"
        )
    if tuple(dy.shape) != tuple(y.shape):
        raise ValueError(
            f"{layer.describe()}: backprop expected a {what} of shape {tuple(y.shape)} (the forward output's), "
            f"got {tuple(dy.shape)}"
        )
    if dy.dtype != y.dtype:
        raise TypeError(
            f"{layer.describe()}: backprop expected a {what} of dtype {backend.dtype_name(y.dtype)} (the output's), "
            f"got {backend.dtype_name(dy.dtype)}"
        )
    if isinstance(dy, type(y)):  # a subclass of the output's type (np.memmap): the same library
        return
    raise TypeError(
        f"{layer.describe()}: backprop expected a {what} of type {type(y).__name__} (the output's), "
        f"got {type(dy).__module__}.{type(dy).__name__}"
    )


def _device_name(x: Array) -> str:
    try:
        return str(backend.device_of(x))
    except (TypeError, DeviceError):
        return f"{type(x).__module__}.{type(x).__name__} on {getattr(x, 'device', '?')}"
