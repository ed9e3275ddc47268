"""Fused elementwise kernels for the hot paths, each beside its portable array-API fallback.

On a GPU every array operation is at least one kernel launch (5-10 µs of launch overhead each
in CuPy), so a small model's step is dominated by launches. The functions here do in one
kernel what the portable code does in several operations:

=========================  ===================================================  ===============
function                   computes                                             portable ops
=========================  ===================================================  ===============
``bias_relu(x, b)``        ``max(x + b, 0)``                                    2
``relu_backward(dy, y)``   ``dy ⊙ [y > 0]``                                     2
``bias_gelu(x, b, a)``     ``gelu(x + b)`` (exact or tanh form)                 5-9
``gelu_backward(dy, u)``   ``dy ⊙ gelu'(u)`` (or at ``u + b``)                  6-13
``layer_norm_affine``      ``x̂ = (x − μ)·r``, ``y = x̂ γ + β``                   4
``layer_norm_backward``    ``r (dy γ − mean(dy γ) − x̂ mean(dy γ x̂))``          5 (+2 means)
``softmax_cross_entropy``  value, δ and label check of the fused loss           ~14 -> 6
``sgd_``                   SGD (momentum, Nesterov, weight decay) in place      1-7
``adam_``                  Adam/AdamW (AMSGrad) moment and parameter update     ~12
``rmsprop_``               RMSprop (centered, momentum) in place                ~8-14
``adagrad_``               Adagrad's accumulator and parameter update           ~6
=========================  ===================================================  ===============

Each kernel is one CUDA C body (:data:`KERNELS`) in the form of ``cupy.ElementwiseKernel``
(inputs and outputs are named per element; ``raw`` arrays are indexed by hand with ``i``, the
flat output index). Which path runs is the backend's choice, from the arrays (layers never ask):

* CuPy arrays on a GPU where the kernel compiles: ``cupy.ElementwiseKernel`` (compiled once per
  dtype by CuPy's NVRTC and cached).
* Everything else (NumPy, array-api-strict, torch, and a simulated CuPy without a compiler or
  device, on which the first compile fails): the portable path. ``GRADFLOW_FUSED=0`` forces it.
* Tests and the benchmark can run the very same kernel bodies on the host
  (:func:`engine` ``("host")``): each body is compiled as C++ by ``g++`` into a small shared
  library called through ctypes on NumPy arrays, which proves the kernels' arithmetic against
  the portable path where no GPU exists (tests/devices/test_fused.py).

Under :class:`gradflow.testing.counting.OperationCounter` a fused call counts as one operation
(``fused:<name>``), so the benchmark can report operations per step for both paths.

The optimizers of :mod:`gradflow.optim` call the optimizer kernels on their flat buffers (one
launch per buffer and step); those functions return False where no kernel runs, and the
optimizer then takes its own portable rule.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import math
import os
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .arrays import library_kind, namespace
from .common import Array

_INV_SQRT_2 = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_SQRT_2_OVER_PI = 0.7978845608028654


@dataclass(frozen=True)
class Kernel:
    """One elementwise kernel: CuPy ``ElementwiseKernel`` parameter lists and body.

    ``inputs``/``outputs``: ``(type, name)`` pairs, type ``"T"`` (the floating dtype of the
    call) or a fixed one (``"int64"``); an input whose type starts with ``"raw "`` is an array
    indexed by hand in the body. Outputs may be read before they are written (in-place updates).
    """

    name: str
    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]
    body: str

    def params(self, which: tuple[tuple[str, str], ...]) -> str:
        """The ``ElementwiseKernel`` parameter list for ``which`` (``"T x, T b"``)."""
        return ", ".join(f"{t} {n}" for t, n in which)


_GELU_BACKWARD = (f"dx = dy * ((T)0.5 * ((T)1 + erf(u * (T){_INV_SQRT_2!r}))"
                  f" + u * (T){_INV_SQRT_2PI!r} * exp((T)-0.5 * u * u));")
_GELU_TANH_BACKWARD = (f"T t = tanh((T){_SQRT_2_OVER_PI!r} * (u + (T)0.044715 * u * u * u));"
                       f" T du = (T){_SQRT_2_OVER_PI!r} * ((T)1 + (T)3 * (T)0.044715 * u * u);"
                       " dx = dy * ((T)0.5 * ((T)1 + t) + (T)0.5 * u * ((T)1 - t * t) * du);")

# The optimizer kernels: one launch updates a whole flat buffer (every parameter of a group,
# device and dtype). ``d`` is the direction the rule uses, ``sign·∇ + λθ`` (sign −1 maximizes;
# λ 0 for no or decoupled weight decay, ``shrink = 1 − ηλ`` for decoupled). Every step is written
# in the order the optimizer's portable rule (gradflow/optim/optimizers.py) rounds it, with
# every scalar (``1 − β``, ``η/(1 − β₁ᵗ)``) computed in Python as there, so on the host engine
# (no FMA contraction) the two paths agree bit for bit. Scalars, flags included (1.0 or 0.0), are
# passed as Python numbers for ``T`` parameters: an ElementwiseKernel takes scalars or arrays for
# its inputs and types them by the placeholder (https://docs.cupy.dev/en/stable/user_guide/kernel.html,
# "Type-generic kernels").
_DIRECTION = "T d = sign * g; if (weight_decay != (T)0) d = d + weight_decay * p;"
_DIRECTION_INPUTS = (("T", "g"), ("T", "sign"), ("T", "weight_decay"))


def _optimizer_kernels() -> list[Kernel]:
    scalars = lambda *names: tuple(("T", n) for n in names)
    out = lambda *names: tuple(("T", n) for n in names)
    adam_body = ("if (shrink != (T)1) p = p * shrink; " + _DIRECTION +
                 " m = beta1 * m + one_minus_beta1 * d; v = beta2 * v + one_minus_beta2 * (d * d);")
    adam_step = " p = p - step_size * m / (sqrt({v}) * inv_root_bias2 + eps);"
    adam_inputs = _DIRECTION_INPUTS + scalars("shrink", "beta1", "one_minus_beta1", "beta2", "one_minus_beta2",
                                              "step_size", "inv_root_bias2", "eps")
    kernels = [
        Kernel("gf_sgd", _DIRECTION_INPUTS + scalars("lr"), out("p"), _DIRECTION + " p = p - lr * d;"),
        Kernel("gf_sgd_momentum", _DIRECTION_INPUTS + scalars("lr", "momentum", "damping", "nesterov", "first"),
               out("p", "buf"),
               _DIRECTION + " if (first != (T)0) buf = d;"
               " else buf = momentum * buf + ((damping != (T)1) ? damping * d : d);"
               " T u = (nesterov != (T)0) ? d + momentum * buf : buf; p = p - lr * u;"),
        Kernel("gf_adam", adam_inputs, out("p", "m", "v"), adam_body + adam_step.format(v="v")),
        # np.maximum propagates NaN from either side
        Kernel("gf_adam_amsgrad", adam_inputs, out("p", "m", "v", "v_max"),
               adam_body + " v_max = (v > v_max || v != v) ? v : v_max;" + adam_step.format(v="v_max")),
        Kernel("gf_adagrad", _DIRECTION_INPUTS + scalars("lr", "eps"), out("p", "total"),
               _DIRECTION + " total = total + d * d; T den = sqrt(total) + eps; p = p - lr * (d / den);"),
    ]
    for centered in (False, True):
        for momentum in (False, True):
            body = _DIRECTION + " square_avg = alpha * square_avg + one_minus_alpha * (d * d);"
            outputs = ["p", "square_avg"]
            if centered:
                outputs.append("grad_avg")
                body += (" grad_avg = alpha * grad_avg + one_minus_alpha * d;"
                         " T den = sqrt(square_avg - grad_avg * grad_avg) + eps;")
            else:
                body += " T den = sqrt(square_avg) + eps;"
            if momentum:
                outputs.append("buf")
                body += " buf = momentum * buf + d / den; p = p - lr * buf;"
            else:
                body += " p = p - lr * (d / den);"
            name = "gf_rmsprop" + ("_centered" if centered else "") + ("_momentum" if momentum else "")
            kernels.append(Kernel(name, _DIRECTION_INPUTS + scalars("lr", "alpha", "one_minus_alpha", "eps", "momentum"),
                                  out(*outputs), body))
    return kernels


KERNELS: dict[str, Kernel] = {k.name: k for k in (
    Kernel("gf_bias_relu", (("T", "x"), ("T", "b")), (("T", "y"),),
           "T u = x + b; y = (u <= (T)0) ? (T)0 : u;"),
    Kernel("gf_relu_backward", (("T", "dy"), ("T", "y")), (("T", "dx"),),
           "dx = (y > (T)0) ? dy : (T)0;"),
    Kernel("gf_bias_gelu", (("T", "x"), ("T", "b")), (("T", "y"),),
           f"T u = x + b; y = (T)0.5 * u * ((T)1 + erf(u * (T){_INV_SQRT_2!r}));"),
    Kernel("gf_bias_gelu_tanh", (("T", "x"), ("T", "b")), (("T", "y"),),
           f"T u = x + b; T t = tanh((T){_SQRT_2_OVER_PI!r} * (u + (T)0.044715 * u * u * u));"
           " y = (T)0.5 * u * ((T)1 + t);"),
    Kernel("gf_gelu_backward", (("T", "dy"), ("T", "u")), (("T", "dx"),), _GELU_BACKWARD),
    Kernel("gf_gelu_tanh_backward", (("T", "dy"), ("T", "u")), (("T", "dx"),), _GELU_TANH_BACKWARD),
    # the same at u = x + b (Linear's activation: its backward needs no extra launch for u)
    Kernel("gf_bias_gelu_backward", (("T", "dy"), ("T", "x"), ("T", "b")), (("T", "dx"),),
           "T u = x + b; " + _GELU_BACKWARD),
    Kernel("gf_bias_gelu_tanh_backward", (("T", "dy"), ("T", "x"), ("T", "b")), (("T", "dx"),),
           "T u = x + b; " + _GELU_TANH_BACKWARD),
    Kernel("gf_layer_norm_affine", (("T", "x"), ("T", "mean"), ("T", "inv_std"), ("T", "gamma"), ("T", "beta")),
           (("T", "y"), ("T", "x_hat")),
           "x_hat = (x - mean) * inv_std; y = x_hat * gamma + beta;"),
    Kernel("gf_layer_norm_backward", (("T", "g"), ("T", "x_hat"), ("T", "inv_std"), ("T", "mean_g"),
                                      ("T", "mean_gx")), (("T", "dx"),),
           "dx = inv_std * (g - mean_g - x_hat * mean_gx);"),
    Kernel("gf_xent_exp", (("T", "z"), ("T", "zmax")), (("T", "e"),), "e = exp(z - zmax);"),
    Kernel("gf_xent_delta", (("T", "e"), ("T", "total"), ("T", "scale"), ("raw int64", "labels"), ("int64", "classes")),
           (("T", "delta"),),
           "long long row = i / classes; long long c = i - row * classes;"
           " delta = scale * (e / total - ((c == labels[row]) ? (T)1 : (T)0));"),
    Kernel("gf_xent_rows", (("T", "total"), ("T", "zmax"), ("T", "scale"), ("raw T", "z"), ("int64", "label"),
                            ("int64", "classes")), (("T", "loss"), ("bool", "ok")),
           "ok = (label >= 0) && (label < classes);"
           ' loss = ok ? scale * (log(total) + zmax - z[i * classes + label]) : (T)nan("");'),
    *_optimizer_kernels(),
)}


# --------------------------------------------------------------------------------------------
# Engines: which implementation runs
# --------------------------------------------------------------------------------------------

class _State(threading.local):
    engine: str | None = None  # a class default: getattr of a missing thread-local attribute raises inside (~1 µs)


_state = _State()
_CUPY_KERNELS: dict[tuple[str, Any], Any] = {}  # (name, dtype) -> the kernel, once it ran for that dtype
_CUPY_FAILED: dict[tuple[str, Any], str] = {}  # (name, dtype) -> why it did not build: the portable path runs
_CUPY_BROKEN: list[str] = []  # why the CuPy kernels cannot run here (first failure), once known


@contextlib.contextmanager
def engine(name: str):
    """Force an engine for NumPy arrays inside the block: ``"host"`` (the kernel bodies compiled
    by g++, for tests and the benchmark's fused-path count) or ``"portable"`` (for every array
    library, CuPy included). Outside any block the backend chooses (see the module docstring)."""
    if name not in ("host", "portable"):
        raise ValueError(f"engine must be 'host' or 'portable', got {name!r}")
    previous = getattr(_state, "engine", None)
    _state.engine = name
    try:
        yield
    finally:
        _state.engine = previous


def _chosen(x: Array) -> str:
    """``"cupy"``, ``"host"`` or ``"portable"`` for a call whose first array is ``x``."""
    forced = getattr(_state, "engine", None)
    if forced is None:  # the common case, first and cheap (called per layer and per update):
        if _CUPY_BROKEN or library_kind(x) != "cupy" or os.environ.get("GRADFLOW_FUSED", "1") == "0":
            return "portable"
        return "cupy"
    if forced == "portable" or os.environ.get("GRADFLOW_FUSED", "1") == "0":
        return "portable"
    if forced == "host" and isinstance(getattr(x, "_array", x), np.ndarray):
        return "host"  # NumPy arrays, or counting proxies over them standing in for CuPy's
    if library_kind(x) == "cupy" and not _CUPY_BROKEN:
        return "cupy"
    return "portable"


def available(x: Array) -> bool:
    """Whether a fused kernel would run for arrays like ``x`` (else the portable path does)."""
    return _chosen(x) != "portable"


def _counter_of(args: tuple) -> Any:
    for a in args:
        counter = getattr(type(a), "_counter", None)
        if counter is not None:
            return counter
    return None


def _launch(name: str, *args: Any, out: tuple = ()) -> Any:
    """Run kernel ``name`` with inputs ``args`` (arrays or scalars) and, for in-place kernels,
    the output arrays ``out``; returns the outputs (one array, or a tuple)."""
    from ..testing.counting import unwrap

    counter = _counter_of(args + out)
    first = next(a for a in args + out if hasattr(a, "shape"))
    chosen = _chosen(first)
    raw_args, raw_out = unwrap(args), unwrap(out)
    if chosen == "cupy":
        result = _cupy_call(name, raw_args, raw_out)
    elif chosen == "host":
        result = _host_call(name, raw_args, raw_out)
    else:
        raise _FallBack()
    if counter is not None:
        wrapped = counter._record(f"fused:{name[3:]}", result)
        if out:  # in place: the proxies keep pointing at the same arrays
            return None
        return wrapped
    return None if out else result


def _cupy_call(name: str, args: tuple, out: tuple) -> Any:
    # CuPy compiles an ElementwiseKernel at its first call for each argument dtype, not at
    # construction ("The kernel is compiled at an invocation of the __call__ method, which is
    # cached for each device", cupy/_core/_kernel.pyx ``ElementwiseKernel``), so whether a
    # kernel runs is known per (kernel, dtype): float16 can fail to compile where float32 ran.
    key = (name, (args[0] if hasattr(args[0], "dtype") else out[0]).dtype)
    kernel = _CUPY_KERNELS.get(key)
    if kernel is not None:
        return kernel(*args, *out)
    if key in _CUPY_FAILED:
        raise _FallBack()
    try:  # the first call compiles: no compiler or no device (a CuPy without NVRTC) ends here
        import cupy

        spec = KERNELS[name]
        kernel = cupy.ElementwiseKernel(spec.params(spec.inputs), spec.params(spec.outputs), spec.body, name)
        result = kernel(*args, *out)
    except (ValueError, TypeError):
        # the argument checks (another device's array, a dtype or shape mismatch) run before
        # any compile (``ElementwiseKernel.__call__``: _preprocess_args, _broadcast,
        # _decide_params_type, _get_out_args_with_params, then _get_kernel): the caller's error,
        # not a CuPy that cannot build kernels
        raise
    except Exception as error:  # any failure to build means: use the portable path
        _CUPY_FAILED[key] = f"{type(error).__name__}: {error}"
        if not _CUPY_KERNELS:  # nothing ever compiled here: no kernel will
            _CUPY_BROKEN.append(_CUPY_FAILED[key])
        raise _FallBack() from error
    _CUPY_KERNELS[key] = kernel
    return result


class _FallBack(Exception):
    """The CuPy kernel could not be built or run here; the caller takes the portable path."""


def cupy_status() -> str | None:
    """Why the CuPy kernels are not used (None while they are, or before the first try)."""
    return _CUPY_BROKEN[0] if _CUPY_BROKEN else None


def _fused(portable_fn):
    """Decorator: try the fused implementation, fall back to ``portable_fn`` when it cannot run."""
    def wrap(fused_fn):
        def call(*args, **kwargs):
            if _chosen(args[0]) != "portable":
                try:
                    return fused_fn(*args, **kwargs)
                except _FallBack:
                    pass
            return portable_fn(*args, **kwargs)

        call.__name__ = fused_fn.__name__
        call.__doc__ = fused_fn.__doc__
        call.portable = portable_fn
        return call

    return wrap


# --------------------------------------------------------------------------------------------
# Host engine: the kernel bodies as C++ (tests and the benchmark; needs g++)
# --------------------------------------------------------------------------------------------

_C_TYPES = {"int64": "long long", "int32": "int", "bool": "bool"}
_NP_TYPES = {"int64": np.int64, "int32": np.int32, "bool": np.bool_}
_HOST: dict[str, Any] = {}
_HOST_LOCK = threading.Lock()


def host_source() -> str:
    """Every kernel body in a C++ loop over ``i``, as ``extern "C"`` functions per dtype
    (``gf_name_float32``/``_float64``): arguments ``n``, then one pointer per input and output."""
    lines = ["#include <cmath>", "using std::erf; using std::exp; using std::log; using std::sqrt; using std::tanh; using std::nan;", ""]
    for spec in KERNELS.values():
        params, loads, stores = [], [], []
        for t, n in spec.inputs:
            raw = t.startswith("raw ")
            base = t[4:] if raw else t
            ctype = "T" if base == "T" else _C_TYPES[base]
            params.append(f"const {ctype}* {n}_" if not raw else f"const {ctype}* {n}")
            if not raw:
                loads.append(f"const {ctype} {n} = {n}_[i];")
        for t, n in spec.outputs:
            ctype = "T" if t == "T" else _C_TYPES[t]
            params.append(f"{ctype}* {n}_")
            loads.append(f"{ctype} {n} = {n}_[i];")
            stores.append(f"{n}_[i] = {n};")
        signature = ", ".join(["long long n"] + params)
        lines += [f"template <typename T> static void {spec.name}_impl({signature}) {{",
                  "  for (long long i = 0; i < n; ++i) {",
                  "    " + " ".join(loads), "    { " + spec.body + " }", "    " + " ".join(stores), "  }", "}"]
        names = ", ".join(["n"] + [n if t.startswith("raw ") else f"{n}_" for t, n in spec.inputs]
                          + [f"{n}_" for _, n in spec.outputs])
        for dtype, ctype in (("float32", "float"), ("float64", "double")):
            concrete = signature.replace("T*", f"{ctype}*")
            lines.append(f'extern "C" void {spec.name}_{dtype}({concrete}) {{ {spec.name}_impl<{ctype}>({names}); }}')
        lines.append("")
    return "\n".join(lines)


def cuda_source() -> str:
    """Every kernel body as a ``__global__`` CUDA kernel per dtype (what CuPy generates, in
    outline): for compiling with nvcc or NVRTC in the tests."""
    host = host_source()
    body = host.replace("template <typename T> static void", "template <typename T> __global__ void")
    body = body.replace("  for (long long i = 0; i < n; ++i) {",
                        "  for (long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x; i < n;"
                        " i += (long long)blockDim.x * gridDim.x) {")
    out = []
    for line in body.splitlines():
        if line.startswith('extern "C" void'):
            # explicit instantiation of the kernel template instead of a host wrapper
            name, dtype = line.split("(")[0].split()[-1].rsplit("_", 1)
            ctype = {"float32": "float", "float64": "double"}[dtype]
            params = line[line.index("(") + 1:line.index(")")]
            out.append(f"template __global__ void {name}_impl<{ctype}>({params});")
        else:
            out.append(line)
    return "\n".join(out).replace("#include <cmath>\nusing std::erf; using std::exp; using std::log; using std::sqrt;"
                                  " using std::tanh; using std::nan;", "")


def _host_library() -> Any:
    with _HOST_LOCK:
        if "lib" in _HOST:
            return _HOST["lib"]
        source = host_source()
        digest = hashlib.sha256(source.encode()).hexdigest()[:16]
        folder = Path(tempfile.gettempdir()) / f"gradflow-fused-{os.getuid() if hasattr(os, 'getuid') else 0}"
        folder.mkdir(exist_ok=True)
        library = folder / f"fused_{digest}.so"
        if not library.exists():
            cpp = folder / f"fused_{digest}.cpp"
            cpp.write_text(source)
            partial = folder / f"fused_{digest}.{os.getpid()}.so"
            # -ffp-contract=off: no fused multiply-adds, so float32 results round like NumPy's
            subprocess.run(["g++", "-O2", "-ffp-contract=off", "-shared", "-fPIC", str(cpp), "-o", str(partial)],
                           check=True, capture_output=True, text=True)
            os.replace(partial, library)
        _HOST["lib"] = ctypes.CDLL(str(library))
        return _HOST["lib"]


def _host_call(name: str, args: tuple, out: tuple) -> Any:
    spec = KERNELS[name]
    arrays = [a for a in args + out if isinstance(a, np.ndarray)]
    dtype = next(a.dtype for a in arrays if a.dtype.kind == "f")
    plain = [(t, a) for (t, _), a in zip(spec.inputs, args) if not t.startswith("raw ")]
    shape = np.broadcast_shapes(*(np.shape(a) for _, a in plain), *(o.shape for o in out))
    n = int(np.prod(shape))
    pointers, keep = [], []
    for (t, _), a in zip(spec.inputs, args):
        raw = t.startswith("raw ")
        base = t[4:] if raw else t
        target = dtype if base == "T" else _NP_TYPES[base]
        value = np.ascontiguousarray(np.asarray(a, dtype=target)) if raw else \
            np.ascontiguousarray(np.broadcast_to(np.asarray(a, dtype=target), shape))
        keep.append(value)
        pointers.append(value.ctypes.data_as(ctypes.c_void_p))
    if out:
        results = list(out)
        for o in results:
            if not (o.flags.c_contiguous and o.dtype == dtype):
                raise ValueError(f"{name}: in-place outputs must be C-contiguous {dtype} arrays")
    else:
        results = [np.empty(shape, dtype=dtype if t == "T" else _NP_TYPES[t]) for t, _ in spec.outputs]
    pointers += [o.ctypes.data_as(ctypes.c_void_p) for o in results]
    function = getattr(_host_library(), f"{name}_{dtype.name}")
    function(ctypes.c_longlong(n), *pointers)
    return results[0] if len(results) == 1 else tuple(results)


# --------------------------------------------------------------------------------------------
# Portable paths (the reference) and the fused functions
# --------------------------------------------------------------------------------------------


def _relu_portable(x: Array, b: Array | None) -> Array:
    xp = namespace(x)
    return xp.maximum(x if b is None else x + b, 0.0)


@_fused(_relu_portable)
def bias_relu(x: Array, b: Array | None) -> Array:
    """``max(x + b, 0)``; ``b`` broadcasts against ``x`` (a bias of shape (F,) for x (N, F));
    None for no bias."""
    return _launch("gf_bias_relu", x, 0.0 if b is None else b)


def _relu_backward_portable(dy: Array, y: Array) -> Array:
    # primitives.multiply_by_mask inlined: its import here and its wrapper cost ~2 µs a call
    mask = y > 0
    if library_kind(dy) != "other":  # NumPy, CuPy and torch multiply by a boolean array directly
        return dy * mask
    return dy * namespace(dy).astype(mask, dy.dtype)


@_fused(_relu_backward_portable)
def relu_backward(dy: Array, y: Array) -> Array:
    """ReLU's δ rule ``dy ⊙ [y > 0]`` from its output ``y`` (or input: the sign is the same)."""
    return _launch("gf_relu_backward", dy, y)


def _gelu_portable(x: Array, b: Array | None, approximate: str = "none") -> Array:
    xp = namespace(x)
    u = x if b is None else x + b
    if approximate == "tanh":
        t = xp.tanh(_SQRT_2_OVER_PI * (u + 0.044715 * u * u * u))
        return 0.5 * u * (1.0 + t)
    from .primitives import erf

    return u * (0.5 * (1.0 + erf(u * _INV_SQRT_2)))


@_fused(_gelu_portable)
def bias_gelu(x: Array, b: Array | None, approximate: str = "none") -> Array:
    """``gelu(x + b)``: exact (``½u(1 + erf(u/√2))``) or ``approximate="tanh"``; b None: no bias."""
    return _launch("gf_bias_gelu_tanh" if approximate == "tanh" else "gf_bias_gelu", x, 0.0 if b is None else b)


def _gelu_backward_portable(dy: Array, u: Array, approximate: str = "none", bias: Array | None = None) -> Array:
    xp = namespace(u)
    if bias is not None:
        u = u + bias
    if approximate == "tanh":
        t = xp.tanh(_SQRT_2_OVER_PI * (u + 0.044715 * u * u * u))
        du = _SQRT_2_OVER_PI * (1.0 + 3 * 0.044715 * u * u)
        return dy * (0.5 * (1.0 + t) + 0.5 * u * (1.0 - t * t) * du)
    from .primitives import erf

    cdf = 0.5 * (1.0 + erf(u * _INV_SQRT_2))
    return dy * (cdf + u * _INV_SQRT_2PI * xp.exp(-0.5 * u * u))


@_fused(_gelu_backward_portable)
def gelu_backward(dy: Array, u: Array, approximate: str = "none", bias: Array | None = None) -> Array:
    """GELU's δ rule ``dy ⊙ gelu'(u)`` at the pre-activation ``u`` (``u + bias`` when a bias is
    given: the backward of :func:`bias_gelu` from its inputs)."""
    name = "gf_gelu_tanh_backward" if approximate == "tanh" else "gf_gelu_backward"
    if bias is None:
        return _launch(name, dy, u)
    return _launch(name.replace("gf_", "gf_bias_"), dy, u, bias)


def _layer_norm_affine_portable(x: Array, mean: Array, inv_std: Array, gamma: Array, beta: Array) -> tuple[Array, Array]:
    x_hat = (x - mean) * inv_std
    return x_hat * gamma + beta, x_hat


@_fused(_layer_norm_affine_portable)
def layer_norm_affine(x: Array, mean: Array, inv_std: Array, gamma: Array, beta: Array) -> tuple[Array, Array]:
    """LayerNorm's normalisation and affine map from the statistics: ``(y, x̂)`` with
    ``x̂ = (x − mean)·inv_std`` and ``y = x̂ γ + β`` (mean, inv_std broadcast over the normalised
    axes; γ, β over the leading ones)."""
    return _launch("gf_layer_norm_affine", x, mean, inv_std, gamma, beta)


def _layer_norm_backward_portable(g: Array, x_hat: Array, inv_std: Array, mean_g: Array, mean_gx: Array) -> Array:
    return inv_std * (g - mean_g - x_hat * mean_gx)


@_fused(_layer_norm_backward_portable)
def layer_norm_backward(g: Array, x_hat: Array, inv_std: Array, mean_g: Array, mean_gx: Array) -> Array:
    """LayerNorm's δ rule from ``g = dy·γ`` and its two means: ``inv_std (g − mean_g − x̂ mean_gx)``."""
    return _launch("gf_layer_norm_backward", g, x_hat, inv_std, mean_g, mean_gx)


def _softmax_cross_entropy_portable(logits: Array, labels: Array, scale: float) -> tuple[Array, Array, Array]:
    from .primitives import softmax_cross_entropy

    return softmax_cross_entropy(logits, labels, scale, check_labels=True, portable=True)


@_fused(_softmax_cross_entropy_portable)
def softmax_cross_entropy(logits: Array, labels: Array, scale: float) -> tuple[Array, Array, Array]:
    """Softmax cross-entropy with integer labels, as :func:`gradflow.backend.softmax_cross_entropy`'s
    portable path: ``(value, delta, labels_ok)`` (``labels_ok`` a 0-d boolean array; a label out
    of range gives a NaN value). 6 operations: max, exp, sum, δ, per-row loss, sum, all()."""
    xp = namespace(logits)
    n, classes = logits.shape
    zmax = xp.max(logits, axis=1, keepdims=True)
    e = _launch("gf_xent_exp", logits, zmax)
    total = xp.sum(e, axis=1, keepdims=True)
    delta = _launch("gf_xent_delta", e, total, scale, labels, classes)
    rows, ok = _launch("gf_xent_rows", xp.reshape(total, (n,)), xp.reshape(zmax, (n,)), scale, logits, labels, classes)
    return xp.sum(rows), delta, xp.all(ok)


# The optimizer updates: in place on flat buffers, one launch per buffer. Each returns True when
# its kernel ran, False when nothing was done (no fused engine here, a dtype other than float32
# or float64, or a CuPy that cannot build kernels): the optimizer then runs its own portable rule
# (gradflow/optim/optimizers.py), which is the reference these kernels are tested against.


def _update_(name: str, scalars: tuple, out: tuple, g: Array) -> bool:
    p = out[0]
    if not available(p) or getattr(p.dtype, "name", str(p.dtype)).rsplit(".", 1)[-1] not in ("float32", "float64"):
        return False
    try:
        _launch(name, g, *scalars, out=out)
    except _FallBack:
        return False
    return True


def sgd_(p: Array, g: Array, buf: Array | None, *, lr: float, momentum: float = 0.0, dampening: float = 0.0,
         nesterov: bool = False, first: bool = False, weight_decay: float = 0.0, maximize: bool = False) -> bool:
    """SGD in place, as :class:`gradflow.optim.SGD`: ``d = ±g + λθ``; with momentum (``buf``
    given) ``buf ← d`` at the first step (``first``), else ``buf ← μ buf + (1 − τ) d``, and
    ``θ ← θ − η (d + μ buf)`` (Nesterov) or ``θ − η buf``; without, ``θ ← θ − η d``.
    True when the kernel ran (see above)."""
    direction = (-1.0 if maximize else 1.0, weight_decay)
    if buf is None:
        return _update_("gf_sgd", (*direction, lr), (p,), g)
    return _update_("gf_sgd_momentum", (*direction, lr, momentum, 1.0 - dampening, float(bool(nesterov)),
                                        float(bool(first))), (p, buf), g)


def adam_(p: Array, g: Array, m: Array, v: Array, v_max: Array | None, *, lr: float, beta1: float, beta2: float,
          eps: float, step: int, weight_decay: float = 0.0, decoupled: bool = False, maximize: bool = False) -> bool:
    """Adam (``decoupled``: AdamW; ``v_max`` given: AMSGrad) in place, as
    :class:`gradflow.optim.Adam`: ``m ← β₁m + (1−β₁)d``, ``v ← β₂v + (1−β₂)d²``,
    ``θ ← θ − η/(1−β₁ᵗ) · m / (√v / √(1−β₂ᵗ) + ε)``. True when the kernel ran (see above)."""
    shrink = 1.0 - lr * weight_decay if decoupled and weight_decay else 1.0
    scalars = (-1.0 if maximize else 1.0, 0.0 if decoupled else weight_decay, shrink, beta1, 1.0 - beta1, beta2,
               1.0 - beta2, lr / (1.0 - beta1**step), 1.0 / math.sqrt(1.0 - beta2**step), eps)
    if v_max is None:
        return _update_("gf_adam", scalars, (p, m, v), g)
    return _update_("gf_adam_amsgrad", scalars, (p, m, v, v_max), g)


def rmsprop_(p: Array, g: Array, square_avg: Array, grad_avg: Array | None, buf: Array | None, *, lr: float,
             alpha: float, eps: float, momentum: float = 0.0, weight_decay: float = 0.0, maximize: bool = False) -> bool:
    """RMSprop in place, as :class:`gradflow.optim.RMSprop` (``grad_avg`` given: centered;
    ``buf`` given: momentum). True when the kernel ran (see above)."""
    name = "gf_rmsprop" + ("_centered" if grad_avg is not None else "") + ("_momentum" if buf is not None else "")
    out = tuple(a for a in (p, square_avg, grad_avg, buf) if a is not None)
    return _update_(name, (-1.0 if maximize else 1.0, weight_decay, lr, alpha, 1.0 - alpha, eps, momentum), out, g)


def adagrad_(p: Array, g: Array, total: Array, *, lr: float, eps: float, weight_decay: float = 0.0,
             maximize: bool = False) -> bool:
    """Adagrad in place, as :class:`gradflow.optim.Adagrad`: ``s ← s + d²``,
    ``θ ← θ − η_t d / (√s + ε)`` (``lr`` is this step's η_t). True when the kernel ran."""
    return _update_("gf_adagrad", (-1.0 if maximize else 1.0, weight_decay, lr, eps), (p, total), g)
