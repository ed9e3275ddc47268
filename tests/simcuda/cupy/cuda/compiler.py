"""``cupy.cuda.compiler`` (cupy/cuda/compiler.py), the two names the simulated
``ElementwiseKernel`` needs: ``CompileException`` (what a failed NVRTC build raises) and
``is_valid_kernel_name``."""

from __future__ import annotations

import re

# cupy/cuda/compiler.py: ``_valid_kernel_name = re.compile(r'^[a-zA-Z_][a-zA-Z_0-9]*$')``
_VALID_KERNEL_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z_0-9]*$")


class CompileException(Exception):
    """cupy/cuda/compiler.py ``CompileException``: the kernel source did not compile."""


def is_valid_kernel_name(name: str) -> bool:
    return _VALID_KERNEL_NAME.match(name) is not None
