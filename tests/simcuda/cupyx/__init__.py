"""Simulated ``cupyx``: ``scatter_add`` and ``cupyx.scipy.special``."""

import numpy as _np

from cupy._core import check_devices as _check_devices, unwrap as _unwrap


def scatter_add(a, slices, value):
    """cupyx/_scatter.py ``scatter_add(a, slices, value)``: ``a[slices] += value`` with duplicates
    summed, like ``numpy.add.at``; in place, a kernel on ``a`` (device check), returns None."""
    _check_devices((a, slices, value))
    _np.add.at(a._a, _unwrap(slices, allow_numpy=True), _unwrap(value))


from . import scipy  # noqa: E402,F401
