"""Which devices a heavy finite-difference check visits entry by entry (tests only)."""

from __future__ import annotations

from typing import Any

#: ``max_full`` for the other devices: arrays of more entries get gradcheck's 6 random directions
#: (12 forwards each) instead of 2 forwards per entry; smaller ones are cheaper entry by entry.
DIRECTIONAL_MAX_FULL = 6


def _simulated(device: Any) -> bool:
    """True for the test-only devices that compute with NumPy underneath: array-api-strict and
    the simulated CUDA (tests/simcuda); False for NumPy itself, torch and a real GPU."""
    if device.kind == "strict":
        return True
    if device.kind != "cuda":
        return False
    import cupy

    return bool(getattr(cupy, "__simulated__", False))


def entry_by_entry(device: Any) -> bool:
    """Whether a heavy finite-difference check visits every entry on ``device`` (else 6 random
    directions per array, ~12 forwards instead of 2 per entry).

    Every entry: cpu (NumPy, the reference numerics), torch (its own kernels) and any real GPU.
    Directions: array-api-strict and simulated cuda:0, which run NumPy's arithmetic under another
    API, so a wrong entry there could only come from an API difference; that still shows in the
    directional check (each direction sums every entry's error) and, entry by entry, in the
    float32 parity with NumPy that follows (where the case has parity). Simulated cuda:1 keeps every entry: as the GPU that is
    not current it is the stricter of the two for device placement (a missing ``with device:``
    raises there)."""
    return not _simulated(device) or device.name == "cuda:1"
