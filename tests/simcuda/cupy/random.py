"""``cupy.random``: the Generator API (cupy/random/_generator_api.pyx, cupy/random/_bit_generator.pyx).

``default_rng(seed)`` gives ``Generator(XORWOW(seed))``; building a bit generator allocates and
initialises one cuRAND state per thread of its launch grid and runs an init kernel, so
``constructions`` counts them (gradflow keeps one generator per device instead). ``random`` and
``standard_normal`` draw float32 or float64 only (a float32 kernel for every other dtype, then
``astype``: ``Generator.random``), on the current device. NumPy's PCG64 stands in for cuRAND:
the values differ from a real GPU's; the API, dtypes and placement do not.
"""

import numpy as _np

from . import _sim
from ._core import _new

constructions = 0


class BitGenerator:
    def __init__(self, seed=None):
        global constructions
        constructions += 1
        self._device = _sim.current()
        self._numpy = _np.random.Generator(_np.random.PCG64(seed))


class XORWOW(BitGenerator):
    pass


class MRG32k3a(BitGenerator):
    pass


class Philox4x3210(BitGenerator):
    pass


class Generator:
    def __init__(self, bit_generator):
        self.bit_generator = bit_generator

    def _draw(self, sample, size, dtype):
        dtype = _np.dtype(dtype)
        size = () if size is None else size
        values = sample(size, dtype=_np.float64 if dtype.char == "d" else _np.float32)
        return _new(values, _sim.current()).astype(dtype, copy=False)

    def random(self, size=None, dtype=_np.float64, out=None):
        return self._draw(self.bit_generator._numpy.random, size, dtype)

    def standard_normal(self, size=None, dtype=_np.float64, out=None):
        return self._draw(self.bit_generator._numpy.standard_normal, size, dtype)

    def integers(self, low, high=None, size=None, dtype=_np.int64, endpoint=False):
        values = self.bit_generator._numpy.integers(low, high, size=size, dtype=dtype, endpoint=endpoint)
        return _new(_np.asarray(values), _sim.current())


def default_rng(seed=None):
    return Generator(XORWOW(seed))
