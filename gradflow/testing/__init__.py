"""The parity harness, public: check your own layers and losses on every device in one call.

- :func:`gradcheck`: δ-backward vs central finite differences (float64).
- :func:`check_layer` / :func:`check_loss`: reference, gradients, parity, non-contiguous inputs
  and inputs-not-modified, on every device present; returns a :class:`Report` naming the
  devices it skipped and why.
- :func:`available_devices`: which devices this machine offers, and why others are missing.
"""

from .gradcheck import TOLERANCES, GradcheckError, GradcheckResult, gradcheck
from .harness import Report, assert_close, available_devices, check_layer, check_loss

__all__ = ["TOLERANCES", "GradcheckError", "GradcheckResult", "gradcheck", "Report", "assert_close",
           "available_devices", "check_layer", "check_loss"]
