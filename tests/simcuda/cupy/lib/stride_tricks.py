"""cupy/lib/stride_tricks.py ``as_strided``: a view of ``x``'s memory on ``x``'s device."""

import numpy as np

from .._core import _view


def as_strided(x, shape=None, strides=None):
    return _view(np.lib.stride_tricks.as_strided(x._a, shape, strides), x)
