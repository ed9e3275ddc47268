"""``cupy.lib.stride_tricks``: views of the same GPU memory (no kernel, no device check)."""

from . import stride_tricks  # noqa: F401
