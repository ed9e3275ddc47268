"""cupy/exceptions.py: CuPy re-exports NumPy's exceptions and adds PerformanceWarning."""

from numpy.exceptions import AxisError, ComplexWarning, RankWarning, VisibleDeprecationWarning  # noqa: F401

from ._core import PerformanceWarning  # noqa: F401
