"""``cupyx.scipy.special.erf``: a CuPy ufunc with the type table of cupyx/scipy/special/_erf.py,
``('e->d', 'f->f', 'd->d')``: float16 input gives a float64 result. A ufunc picks the first
loop its input casts to safely, so integers of up to 8 bits also give float64."""

import math

import numpy as _np

from cupy._core import call as _call

_TYPES = (("e", "d"), ("f", "f"), ("d", "d"))


def _loop(dtype):
    for source, result in _TYPES:
        if _np.can_cast(dtype, source, casting="safe"):
            return _np.dtype(source), _np.dtype(result)
    raise TypeError(f"ufunc 'cupyx_scipy_special_erf' not supported for the input types ({dtype})")


def _erf(a):
    source, result = _loop(a.dtype)
    try:
        from scipy.special import erf as scipy_erf
    except ImportError:  # pragma: no cover
        scipy_erf = _np.vectorize(math.erf)
    return _np.asarray(scipy_erf(a.astype(source).astype(result)), dtype=result)


def erf(x):
    return _call(_erf, (x,))
