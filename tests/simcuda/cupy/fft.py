"""``cupy.fft``: NumPy's functions under the kernel rule (results on the current device)."""

import numpy as _np

from ._core import call as _call

__all__ = []
for _name in _np.fft.__all__:
    _value = getattr(_np.fft, _name)
    if callable(_value) and not isinstance(_value, type):
        globals()[_name] = (lambda f: lambda *a, **k: _call(f, a, k))(_value)
        __all__.append(_name)
    elif isinstance(_value, type):
        globals()[_name] = _value
        __all__.append(_name)
