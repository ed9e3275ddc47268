"""Count the array operations a piece of code makes, and check the dtype of every result.

    counter = OperationCounter(gradflow.device("cpu").xp)
    counter.wrap_layer(model)                  # parameters become counting proxies
    x = counter.wrap(x_host_array)
    ...one training step...
    counter.total, counter.by_name             # operations per step (a kernel-launch proxy)
    counter.results_of_dtype("float64")        # which operations produced float64 arrays

Every array the code touches is a thin proxy around an array of the wrapped namespace. Calls
through the proxy namespace (``xp.exp(x)``), array methods (``x.sum()``) and operators
(``x @ w``, ``y += b``, ``x > 0``) are counted and their results wrapped again; views (``.T``,
``reshape``, basic slicing) and dtype queries are not counted, because they launch no kernel on
a GPU. Conversions to Python scalars (``bool(x)``, ``float(x)``) are counted separately as
``syncs``: on a GPU each one waits for the device.

The proxy works over any array-API namespace (NumPy, array-api-strict, torch), so the same check
runs on every device. It is a measuring tool, not a device: nothing here is meant to be fast.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

#: Namespace functions that move no data: metadata, dtype queries and views.
FREE_FUNCTIONS = frozenset({
    "isdtype", "finfo", "iinfo", "result_type", "can_cast", "reshape", "permute_dims",
    "expand_dims", "squeeze", "broadcast_to", "matrix_transpose", "__array_namespace_info__",
    "device", "size",
})
#: Array methods that move no data.
FREE_METHODS = frozenset({"reshape", "view", "ravel", "transpose", "to_device", "__dlpack__",
                          "__dlpack_device__", "item", "tolist", "numel", "dim", "size"})

_BINARY = ("add", "sub", "mul", "truediv", "floordiv", "mod", "pow", "matmul", "and", "or", "xor",
           "lshift", "rshift")
_COMPARE = ("lt", "le", "gt", "ge", "eq", "ne")
_UNARY = ("neg", "pos", "abs", "invert")
_SYNCS = ("bool", "float", "int", "index", "complex")


class OperationCounter:
    """Wraps arrays of ``xp`` in counting proxies and tallies what is done with them.

    by_name: operations by name (``"matmul"``, ``"iadd"``, ``"exp"``, ``"method:sum"``...).
    syncs: conversions to Python scalars. dtypes: result dtypes by name.
    """

    def __init__(self, xp: Any):
        self.base = xp
        self.by_name: Counter[str] = Counter()
        self.dtypes: Counter[str] = Counter()
        self.syncs = 0
        self.trace: list[tuple[str, str]] = []  # (operation, result dtype), in order
        # One proxy class per counter: gradflow caches namespaces by array type, so two counters
        # (say over NumPy and over torch) must not share one.
        self.array_type = type("CountingArray", (CountingArray,), {
            "_counter": self, "gradflow_library": _library_of_namespace(xp)})
        self.namespace = CountingNamespace(self)

    # -- bookkeeping -------------------------------------------------------------------------
    @property
    def total(self) -> int:
        """Array operations counted since the last :meth:`reset` (syncs not included)."""
        return sum(self.by_name.values())

    def reset(self) -> None:
        """Forget every count, dtype, trace entry and sync."""
        self.by_name.clear()
        self.dtypes.clear()
        self.trace.clear()
        self.syncs = 0

    def results_of_dtype(self, dtype_name: str) -> list[str]:
        """The operations (in order) whose result had dtype ``dtype_name``."""
        return [name for name, dtype in self.trace if dtype == dtype_name]

    def _record(self, name: str, result: Any) -> Any:
        wrapped = self.wrap_any(result)
        self.by_name[name] += 1
        dtype = _dtype_of(result)
        if dtype is not None:
            self.dtypes[dtype] += 1
            self.trace.append((name, dtype))
        return wrapped

    # -- wrapping ----------------------------------------------------------------------------
    def is_base_array(self, value: Any) -> bool:
        """Whether ``value`` is an array of the wrapped library.

        Args:
            value: anything.
        """
        import array_api_compat

        return not isinstance(value, CountingArray) and array_api_compat.is_array_api_obj(value)

    def wrap(self, array: Any) -> "CountingArray":
        """A counting proxy for ``array`` (an array of the wrapped namespace)."""
        if isinstance(array, CountingArray):
            return array
        return self.array_type(array)

    def wrap_any(self, value: Any) -> Any:
        """``value`` with its arrays wrapped in counting arrays (other values as they are).

        Args:
            value: an array, a tuple/list of them, or anything else.
        """
        if self.is_base_array(value):
            return self.array_type(value)
        if isinstance(value, tuple):
            return tuple(self.wrap_any(v) for v in value)
        if isinstance(value, list):
            return [self.wrap_any(v) for v in value]
        return value

    def wrap_layer(self, layer: Any) -> None:
        """Replace every parameter value, gradient, optimizer slot and buffer of ``layer``."""
        self._swap_layer(layer, self.wrap_any)

    def unwrap_layer(self, layer: Any) -> None:
        """Undo :meth:`wrap_layer` (arrays created meanwhile are unwrapped too)."""
        self._swap_layer(layer, unwrap)

    @staticmethod
    def _swap_layer(layer: Any, convert: Any) -> None:
        for _, p in layer.named_parameters():
            p.value = convert(p.value)
            if p.grad is not None:
                p.grad = convert(p.grad)
            for slot, array in list(p.state.items()):
                p.state[slot] = convert(array)
        for _, b in layer.named_buffers():
            b.value = convert(b.value)


def _library_of_namespace(xp: Any) -> str:
    """Which of gradflow.backend's fast paths the wrapped arrays take (see backend.library_kind)."""
    import array_api_compat

    if array_api_compat.is_numpy_namespace(xp):
        return "numpy"
    if array_api_compat.is_cupy_namespace(xp):
        return "cupy"
    if array_api_compat.is_torch_namespace(xp):
        return "torch"
    return "other"


def unwrap(value: Any) -> Any:
    """The underlying array of a proxy (recursively inside tuples, lists and dicts).

    Args:
        value: a counting array, a container of them, or anything else.
    """
    if isinstance(value, CountingArray):
        return value._array
    if isinstance(value, tuple):
        return tuple(unwrap(v) for v in value)
    if isinstance(value, list):
        return [unwrap(v) for v in value]
    if isinstance(value, dict):
        return {k: unwrap(v) for k, v in value.items()}
    return value


def _dtype_of(value: Any) -> str | None:
    dtype = getattr(value, "dtype", None)
    if dtype is None or not hasattr(value, "shape"):
        return None
    return str(dtype).rsplit(".", 1)[-1]


def _has_array(key: Any) -> bool:
    if isinstance(key, tuple):
        return any(_has_array(k) for k in key)
    return isinstance(key, CountingArray) or (hasattr(key, "shape") and hasattr(key, "dtype"))


class CountingNamespace:
    """The array namespace of counting proxies: every function of the wrapped namespace, counted.

    counter: the :class:`OperationCounter` that records each call.
    """

    def __init__(self, counter: OperationCounter):
        self._counter = counter

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._counter.base, name)
        if not callable(attribute) or isinstance(attribute, type):  # constants and dtypes
            return attribute
        counter = self._counter
        if name in FREE_FUNCTIONS:
            def free(*args: Any, **kwargs: Any) -> Any:
                return counter.wrap_any(attribute(*unwrap(args), **unwrap(kwargs)))

            return free

        def counted(*args: Any, **kwargs: Any) -> Any:
            return counter._record(name, attribute(*unwrap(args), **unwrap(kwargs)))

        counted.__name__ = name
        return counted

    def __repr__(self) -> str:
        return f"CountingNamespace({getattr(self._counter.base, '__name__', self._counter.base)!r})"


class CountingArray:
    """A proxy array: forwards to ``_array`` and reports each operation to its counter."""

    __slots__ = ("_array",)
    __array_ufunc__ = None  # NumPy defers to our reflected operators instead of looping over us
    _counter: OperationCounter

    def __init__(self, array: Any):
        self._array = array

    def __array_namespace__(self, api_version: str | None = None) -> CountingNamespace:
        return self._counter.namespace

    # -- metadata (free) ---------------------------------------------------------------------
    @property
    def shape(self) -> tuple:
        """The wrapped array's ``shape``."""
        return self._array.shape

    @property
    def dtype(self) -> Any:
        """The wrapped array's ``dtype``."""
        return self._array.dtype

    @property
    def ndim(self) -> int:
        """The wrapped array's ``ndim``."""
        return self._array.ndim

    @property
    def device(self) -> Any:
        """The wrapped array's ``device``."""
        return self._array.device

    @property
    def size(self) -> int:
        """The wrapped array's ``size``."""
        size = 1
        for n in self._array.shape:
            size *= n
        return size

    @property
    def T(self) -> "CountingArray":
        """The wrapped array's ``T``."""
        return self._counter.wrap(self._array.T)

    @property
    def mT(self) -> "CountingArray":
        """The wrapped array's ``mT``."""
        return self._counter.wrap(self._array.mT)

    def __len__(self) -> int:
        return len(self._array)

    def __repr__(self) -> str:
        return f"CountingArray({self._array!r})"

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._array, name)
        if not callable(attribute):
            return self._counter.wrap_any(attribute)
        counter = self._counter
        if name in FREE_METHODS:
            return lambda *a, **k: counter.wrap_any(attribute(*unwrap(a), **unwrap(k)))
        return lambda *a, **k: counter._record(f"method:{name}", attribute(*unwrap(a), **unwrap(k)))

    # -- indexing ----------------------------------------------------------------------------
    def __getitem__(self, key: Any) -> Any:
        result = self._array[unwrap(key)]
        if _has_array(key):  # gather: a kernel
            return self._counter._record("getitem", result)
        return self._counter.wrap_any(result)  # a view

    def __setitem__(self, key: Any, value: Any) -> None:
        self._array[unwrap(key)] = unwrap(value)
        self._counter.by_name["setitem"] += 1

    def __iter__(self):
        return (self._counter.wrap_any(item) for item in self._array)


def _binary(name: str):
    forward, reflected, inplace = f"__{name}__", f"__r{name}__", f"__i{name}__"

    def op(self, other):
        result = getattr(self._array, forward)(unwrap(other))
        return NotImplemented if result is NotImplemented else self._counter._record(name, result)

    def rop(self, other):
        result = getattr(self._array, reflected)(unwrap(other))
        return NotImplemented if result is NotImplemented else self._counter._record(name, result)

    def iop(self, other):
        result = getattr(self._array, inplace)(unwrap(other))
        if result is NotImplemented:
            return NotImplemented
        self._array = result
        self._counter._record(f"i{name}", result)
        return self

    return op, rop, iop


for _name in _BINARY:
    _op, _rop, _iop = _binary(_name)
    setattr(CountingArray, f"__{_name}__", _op)
    setattr(CountingArray, f"__r{_name}__", _rop)
    setattr(CountingArray, f"__i{_name}__", _iop)


def _compare(name: str):
    def op(self, other):
        result = getattr(self._array, f"__{name}__")(unwrap(other))
        return NotImplemented if result is NotImplemented else self._counter._record(name, result)

    return op


for _name in _COMPARE:
    setattr(CountingArray, f"__{_name}__", _compare(_name))
CountingArray.__hash__ = None  # type: ignore[assignment]  # arrays compare elementwise


def _unary(name: str):
    def op(self):
        return self._counter._record(name, getattr(self._array, f"__{name}__")())

    return op


for _name in _UNARY:
    setattr(CountingArray, f"__{_name}__", _unary(_name))


def _sync(name: str):
    def op(self):
        self._counter.syncs += 1
        return getattr(self._array, f"__{name}__")()

    return op


for _name in _SYNCS:
    setattr(CountingArray, f"__{_name}__", _sync(_name))
