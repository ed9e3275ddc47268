"""``cupy.ElementwiseKernel``, simulated: CuPy's argument rules, and the very kernel body run as
C++ compiled by ``g++`` on the NumPy data of the simulated arrays.

The rules, each from cupy/_core/_kernel.pyx (cupy/cupy at 0011c5d; ``ElementwiseKernel``,
``ParameterInfo``, ``_decide_params_type_core``, ``_broadcast``, ``_get_out_args_with_params``,
``_get_elementwise_kernel_code``) and https://docs.cupy.dev/en/stable/reference/generated/cupy.ElementwiseKernel.html:

- Parameters are ``"[raw] type name"`` separated by commas; a one-letter type is a placeholder
  (``T``), anything longer a NumPy dtype name; ``i`` may not be a parameter name; the kernel name
  must be a C identifier (``compiler.is_valid_kernel_name``).
- A call takes either the inputs or the inputs and the outputs (else TypeError "Wrong number of
  arguments"). Every array argument is checked against the *current* device
  (``_check_peer_access``: ValueError without peer access); NumPy arrays are not accepted.
- Non-raw arrays (outputs given included) broadcast together; the loop runs over that shape
  (``i`` the flat index); raw arrays are indexed by hand and do not broadcast. No non-raw array:
  ValueError "Loop size is undecided".
- Placeholders are bound by the dtypes of the array arguments, outputs first; a fixed-type array
  or a second array for the same placeholder must match exactly (TypeError "Type is
  mismatched"). Scalars bind nothing: they are cast to their parameter's type
  (``CScalar.apply_dtype``).
- Outputs not given are allocated (uninitialised; here NaN for floats, so a body that reads an
  output it did not write shows it) on the *current* device, in the broadcast shape; given
  outputs must have exactly that shape (ValueError "Out shape is mismatched") and are updated in
  place. One output is returned as it is, several as a tuple.
- In the body a non-raw input is ``const T &x = _raw_x[_ind.get()]``, an output ``T &y``, a scalar
  a ``const`` value and a raw array an array indexed by the flat C-order index.
- The kernel is compiled at the first call for those argument kinds and types, and cached
  (the class docstring: "The kernel is compiled at an invocation of the __call__ method"): a
  machine that cannot compile fails there (``CompileException``), not at construction.

What differs from a GPU: g++ compiles with ``-ffp-contract=off`` (NVRTC contracts to FMA by
default, https://docs.nvidia.com/cuda/nvrtc/index.html, ``--fmad``), so results round like the
host engine of gradflow/backend/fused.py; the elements run in order, not concurrently (a body
that races with another element's write is not caught).

``launches`` counts the kernels run, by name (never reset: tests compare before/after).
"""

from __future__ import annotations

import collections
import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np

from . import _sim
from ._core import _new, check_devices, ndarray
from .cuda.compiler import CompileException, is_valid_kernel_name

COMPILER: str | None = shutil.which("g++")  # None: every first call fails as without NVRTC
launches: collections.Counter = collections.Counter()

# cupy/_core/_scalar.pyx ``_typenames_base``: the C type of each dtype in the kernel source
_C_TYPES = {np.dtype(np.bool_): "bool", np.dtype(np.float16): "float16", np.dtype(np.int8): "signed char", np.dtype(np.uint8): "unsigned char",
            np.dtype(np.int16): "short", np.dtype(np.uint16): "unsigned short", np.dtype(np.int32): "int",
            np.dtype(np.uint32): "unsigned int", np.dtype(np.int64): "long long",
            np.dtype(np.uint64): "unsigned long long", np.dtype(np.float32): "float", np.dtype(np.float64): "double"}
# cupy/_core/include/cupy/float16.cuh ``class float16``, on g++'s ``_Float16``: implicitly made from
# and converted to float (so arithmetic runs in float and rounds when stored), explicitly from the
# other types, assignable from anything it can be cast from. As with NVRTC, an expression that mixes
# float16 and float in ``c ? a : b`` is ambiguous and does not compile.
_FLOAT16 = """
class float16 {
  _Float16 data_;
 public:
  float16() {}
  float16(float v) : data_((_Float16)v) {}
  explicit float16(bool v) : data_((_Float16)(float)v) {}
  explicit float16(double v) : data_((_Float16)(float)v) {}
  explicit float16(int v) : data_((_Float16)(float)v) {}
  explicit float16(unsigned int v) : data_((_Float16)(float)v) {}
  explicit float16(long long v) : data_((_Float16)(float)v) {}
  explicit float16(unsigned long long v) : data_((_Float16)(float)v) {}
  operator float() const { return (float)data_; }
  float16& operator=(const float16&) = default;
  template <typename T> float16& operator=(const T& rhs) { *this = static_cast<float16>(rhs); return *this; }
  template <typename T> float16& operator+=(const T& rhs) { *this = *this + rhs; return *this; }
  template <typename T> float16& operator-=(const T& rhs) { *this = *this - rhs; return *this; }
  template <typename T> float16& operator*=(const T& rhs) { *this = *this * rhs; return *this; }
  template <typename T> float16& operator/=(const T& rhs) { *this = *this / rhs; return *this; }
};
"""
_LIBRARIES: dict[str, Any] = {}
_LOCK = threading.Lock()


class _Param:
    """``ParameterInfo``: ``[raw] type name``; ``dtype`` None for a placeholder."""

    def __init__(self, text: str, is_const: bool):
        s = text.split()
        if len(s) < 2:
            raise Exception(f"Syntax error: {text}")  # noqa: TRY002 - what ParameterInfo raises
        t, self.name = s[-2:]
        self.raw, self.is_const = False, is_const
        self.dtype = None if len(t) == 1 else np.dtype(t)
        self.ctype = t if self.dtype is None else _C_TYPES[self.dtype]
        for word in s[:-2]:
            if word == "raw":
                self.raw = True
            elif word == "_non_const":
                self.is_const = False
            else:
                raise Exception(f'Unknown keyword "{word}"')  # noqa: TRY002 - as ParameterInfo


def _params(text: str, is_const: bool) -> tuple[_Param, ...]:
    return () if not text.strip() else tuple(_Param(p, is_const) for p in text.strip().split(","))


class ElementwiseKernel:
    """cupy/_core/_kernel.pyx ``ElementwiseKernel`` (see the module docstring for the rules)."""

    def __init__(self, in_params: str, out_params: str, operation: str, name: str = "kernel",
                 reduce_dims: bool = True, preamble: str = "", no_return: bool = False,
                 return_tuple: bool = False, **kwargs: Any):
        if not is_valid_kernel_name(name):
            raise ValueError(f'Invalid kernel name: "{name}"')
        self.in_params, self.out_params = _params(in_params, True), _params(out_params, False)
        self.nin, self.nout = len(self.in_params), len(self.out_params)
        self.nargs = self.nin + self.nout
        if "i" in [p.name for p in self.in_params + self.out_params]:
            raise ValueError("Can not use 'i' as a parameter name")
        self.operation, self.name, self.__name__ = operation, name, name
        self.preamble, self.no_return, self.return_tuple = preamble, no_return, return_tuple
        self._functions: dict[tuple, Any] = {}

    def __call__(self, *args: Any, size: int = -1, stream: Any = None, block_size: int = 128) -> Any:
        if len(args) not in (self.nin, self.nargs):
            raise TypeError(f"Wrong number of arguments for {self.name!r}. It must be either {self.nin} or "
                            f"{self.nargs} (with outputs), but given {len(args)}.")
        params = self.in_params + self.out_params
        for a in args:  # _preprocess_args: arrays on the current device, scalars wrapped
            if isinstance(a, ndarray):
                check_devices((a,))
            elif not isinstance(a, (bool, int, float, np.generic)):
                raise TypeError(f"Unsupported type {type(a)}")  # cupy/_core/_scalar.pyx
        in_args, out_args = list(args[:self.nin]), list(args[self.nin:])
        shape = self._shape(args, size)
        in_types, out_types, type_map = self._types(in_args, out_args)
        if out_args:
            for p, a in zip(self.out_params, out_args):
                if not isinstance(a, ndarray):
                    raise TypeError("Output arguments type must be cupy.ndarray")
                if not p.raw and a.shape != shape:
                    raise ValueError("Out shape is mismatched")
        else:
            if any(p.raw for p in self.out_params) and size == -1:
                raise ValueError("Output array size is Undecided")
            out_args = [_new(_uninitialised(shape, t), _sim.current()) for t in out_types]
        result = None if self.no_return else (
            out_args[0] if self.nout == 1 and not self.return_tuple else tuple(out_args))
        n = int(np.prod(shape, dtype=np.int64))
        if n == 0:
            return result
        self._run(params, in_args + out_args, in_types + out_types, type_map, shape, n)
        launches[self.name] += 1
        return result

    def _shape(self, args: tuple, size: int) -> tuple[int, ...]:
        """``_broadcast``: the loop shape of the non-raw arrays (outputs given included)."""
        arrays = [a for p, a in zip(self.in_params + self.out_params, args) if not p.raw and isinstance(a, ndarray)]
        if size != -1:
            if arrays:
                raise ValueError("Specified 'size' can be used only if all of the ndarray are 'raw'.")
            return (size,)
        if not arrays:
            raise ValueError("Loop size is undecided.")
        return np.broadcast_shapes(*(a.shape for a in arrays))

    def _types(self, in_args: list, out_args: list) -> tuple[tuple, tuple, tuple]:
        """``_decide_params_type_core``: outputs bind placeholders first, then input arrays."""
        bound: dict[str, np.dtype] = {}
        for p, a in list(zip(self.out_params, out_args)) + list(zip(self.in_params, in_args)):
            if not isinstance(a, ndarray):
                if p in self.out_params:
                    raise TypeError("Output arguments must be cupy.ndarray")
                continue  # a scalar binds nothing
            if p.dtype is not None:
                if a.dtype != p.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype} {p.dtype}")
            elif p.ctype in bound:
                if bound[p.ctype] != a.dtype:
                    raise TypeError(f"Type is mismatched. {p.name} {a.dtype} {bound[p.ctype]} {p.ctype}")
            else:
                bound[p.ctype] = a.dtype
        # a placeholder bound by no array: KeyError in CuPy too (``type_dict[p.ctype]``)
        in_types = tuple(bound[p.ctype] if p.dtype is None else p.dtype for p in self.in_params)
        out_types = tuple(bound[p.ctype] if p.dtype is None else p.dtype for p in self.out_params)
        return in_types, out_types, tuple(sorted(bound.items()))

    def _run(self, params: tuple, args: list, types: tuple, type_map: tuple, shape: tuple, n: int) -> None:
        kinds = tuple("array" if isinstance(a, ndarray) else "scalar" for a in args)
        function = self._function(params, kinds, types, type_map)
        values, keep, write_back = [], [], []
        for p, a, t, kind in zip(params, args, types, kinds):
            if kind == "scalar":  # CScalar.apply_dtype; passed by address, read into a const value
                buffer = np.array(a, dtype=t)
                keep.append(buffer)
                values.append(ctypes.c_void_p(buffer.ctypes.data))
                continue
            data = a._a
            if p.raw:
                buffer = np.ascontiguousarray(data)  # CArray[flat index]: C order over its strides
            elif p in self.out_params:
                buffer = data if data.flags.c_contiguous else np.ascontiguousarray(data)
            else:
                buffer = np.ascontiguousarray(np.broadcast_to(data, shape))
            if p in self.out_params and buffer is not data:
                write_back.append((data, buffer))
            keep.append(buffer)
            values.append(ctypes.c_void_p(buffer.ctypes.data))
        function(ctypes.c_longlong(n), *values)
        for data, buffer in write_back:
            data[...] = buffer

    def _function(self, params: tuple, kinds: tuple, types: tuple, type_map: tuple) -> Any:
        key = (kinds, types, type_map)
        function = self._functions.get(key)
        if function is None:
            source = self._source(params, kinds, types, type_map)
            function = getattr(_library(source), self.name)
            function.restype = None
            function.argtypes = [ctypes.c_longlong] + [ctypes.c_void_p] * len(kinds)
            self._functions[key] = function
        return function

    def _source(self, params: tuple, kinds: tuple, types: tuple, type_map: tuple) -> str:
        """``_get_elementwise_kernel_code`` as host C++: typedefs of the placeholders, the
        per-element references, the operation in a loop over ``i``."""
        signature, refs, scalars = ["long long _n"], [], []
        for p, kind in zip(params, kinds):
            const = "const " if p.is_const else ""
            if kind == "scalar":  # CuPy's parameter ``const T name``, by value
                signature.append(f"const {p.ctype}* _scalar_{p.name}")
                scalars.append(f"const {p.ctype} {p.name} = *_scalar_{p.name};")
            elif p.raw:
                signature.append(f"{const}{p.ctype}* {p.name}")
            else:
                signature.append(f"{const}{p.ctype}* _raw_{p.name}")
                refs.append(f"{const}{p.ctype} &{p.name} = _raw_{p.name}[i];")
        typedefs = "".join(f"typedef {_C_TYPES[t]} {c};\n" for c, t in type_map)
        half = any(dtype == np.float16 for dtype in types)
        return ("#include <cmath>\nusing namespace std;\n" + (_FLOAT16 if half else "") +
                "struct _Indexer { long long n; long long size() const { return n; } };\n"
                f"{typedefs}{self.preamble}\n"
                f'extern "C" void {self.name}({", ".join(signature)}) {{\n'
                "  const _Indexer _ind = {_n};\n"
                f"  {' '.join(scalars)}\n"
                "  for (long long i = 0; i < _ind.size(); ++i) {\n"
                f"    {' '.join(refs)}\n"
                f"    {self.operation};\n"
                "  }\n}\n")


def _uninitialised(shape: tuple, dtype: np.dtype) -> np.ndarray:
    out = np.empty(shape, dtype=dtype)
    if out.dtype.kind == "f":
        out.fill(np.nan)
    return out


def _library(source: str) -> Any:
    """Compile ``source`` with g++ (once: cached in memory and on disk by its hash)."""
    with _LOCK:
        library = _LIBRARIES.get(source)
        if library is not None:
            return library
        if COMPILER is None:
            raise CompileException("simulated CUDA: g++ is not installed, so no kernel can be compiled "
                                   "(as a CuPy whose NVRTC cannot compile)")
        digest = hashlib.sha256(source.encode()).hexdigest()[:20]
        folder = Path(tempfile.gettempdir()) / f"simcuda-kernels-{os.getuid() if hasattr(os, 'getuid') else 0}"
        folder.mkdir(exist_ok=True)
        path = folder / f"k_{digest}.so"
        if not path.exists():
            cpp = folder / f"k_{digest}.{os.getpid()}.cpp"
            cpp.write_text(source)
            partial = folder / f"k_{digest}.{os.getpid()}.so"
            done = subprocess.run([COMPILER, "-O2", "-ffp-contract=off", "-shared", "-fPIC", str(cpp), "-o",
                                   str(partial)], check=False, capture_output=True, text=True)
            cpp.unlink()
            if done.returncode != 0:
                raise CompileException(done.stderr)
            os.replace(partial, path)
        library = _LIBRARIES[source] = ctypes.CDLL(str(path))
        return library
