"""Names every backend module shares: array and namespace aliases, the dtypes, the device error."""

from __future__ import annotations

from typing import Any

Array = Any  # an array of any array-API library
Namespace = Any

DTYPES = ("float16", "bfloat16", "float32", "float64")
DEFAULT_DTYPE = "float32"


class DeviceError(RuntimeError):
    """A device was asked for that this machine cannot give, or arrays sit on the wrong one."""

