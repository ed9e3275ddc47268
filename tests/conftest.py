"""Shared fixtures: the device fixture runs a test on every device present and reports the rest
as skipped (with the reason) instead of dropping them silently."""

from __future__ import annotations

import numpy as np
import pytest

from gradflow.testing import available_devices

DEVICES = available_devices()


def _device_params():
    params = []
    for name, dev, why in DEVICES:
        marks = [pytest.mark.gpu] if name == "cuda" else []
        if dev is None:
            marks.append(pytest.mark.skip(reason=f"device {name} absent: {why}"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


DEVICE_PARAMS = _device_params()


@pytest.fixture(params=DEVICE_PARAMS)
def device(request):
    """A gradflow Device: cpu (NumPy), strict (array-api-strict device1), torch (CPU), cuda."""
    from gradflow import backend

    return backend.device(request.param)


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_terminal_summary(terminalreporter):
    present = [dev.name for _, dev, _ in DEVICES if dev is not None]
    absent = [f"{name} ({why})" for name, dev, why in DEVICES if dev is None]
    terminalreporter.write_sep("-", "gradflow devices")
    terminalreporter.write_line(f"tested on: {', '.join(present)}")
    terminalreporter.write_line(f"skipped (absent): {', '.join(absent) if absent else 'none'}")
    _skip_summary(terminalreporter)


def _skip_summary(terminalreporter) -> None:
    """Skipped tests grouped by reason, one line per reason with its count (``-rs`` would print one
    line per test location, repeating "device torch absent" for every parametrised layer)."""
    counts: dict[str, int] = {}
    for report in terminalreporter.stats.get("skipped", []):
        longrepr = report.longrepr
        reason = longrepr[2] if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
        reason = reason.removeprefix("Skipped: ")
        counts[reason] = counts.get(reason, 0) + 1
    if counts:
        terminalreporter.write_sep("-", f"skipped: {sum(counts.values())} tests, {len(counts)} reasons")
        for reason, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
            terminalreporter.write_line(f"{count:5d} x {reason}")
