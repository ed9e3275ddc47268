"""Shared fixtures: the device fixture runs a test on every device present and reports the rest
as skipped (with the reason) instead of dropping them silently.

Without a real CuPy, tests/simcuda (a NumPy-backed CuPy with CuPy's device rules) is put on
``sys.path`` first, so the CUDA devices run gradflow's real CuPy adapter on two simulated GPUs:
``cuda:0`` (the current device) and ``cuda:1`` (never current unless a context is entered: a
missing ``with device:`` raises there, as it does on a machine with two GPUs and no peer access).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import numpy as np
import pytest

SIMCUDA = Path(__file__).parent / "simcuda"
SIMULATED_CUDA = importlib.util.find_spec("cupy") is None and os.environ.get("GRADFLOW_NO_SIMCUDA") != "1"
if SIMULATED_CUDA:
    sys.path.insert(0, str(SIMCUDA))

from gradflow.testing import available_devices  # noqa: E402

DEVICES = available_devices()


def _device_params():
    params = []
    for name, dev, why in DEVICES:
        marks = [pytest.mark.gpu] if name.startswith("cuda") and not SIMULATED_CUDA else []
        if dev is None:
            marks.append(pytest.mark.skip(reason=f"device {name} absent: {why}"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


DEVICE_PARAMS = _device_params()


@pytest.fixture(params=DEVICE_PARAMS)
def device(request):
    """A gradflow Device: cpu (NumPy), strict (array-api-strict device1), torch (CPU), cuda:0
    and cuda:1 (real, or simulated when CuPy is absent)."""
    from gradflow import backend

    return backend.device(request.param)


@pytest.fixture(autouse=True)
def _simulated_gpus_start_clean():
    """Each test starts on GPU 0 without peer access (a test may ``.use()`` another GPU)."""
    if SIMULATED_CUDA:
        import cupy

        cupy._sim.reset(device_count=2, peer_access=False)
    yield


@pytest.fixture(params=[False, True], ids=["no-peer", "peer"])
def peer_access(request):
    """Both CuPy behaviours for an array of another GPU: without peer access CuPy raises; with it
    the result silently lands on the current GPU (simulated CUDA only; skipped otherwise)."""
    if not SIMULATED_CUDA:
        pytest.skip("peer-access modes are switched in the simulated CUDA only")
    import cupy

    cupy._sim.config.peer_access = request.param
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_terminal_summary(terminalreporter):
    mark = " (simulated)" if SIMULATED_CUDA else ""
    present = [dev.name + (mark if dev.kind == "cuda" else "") for _, dev, _ in DEVICES if dev is not None]
    absent = [f"{name} ({why})" for name, dev, why in DEVICES if dev is None]
    terminalreporter.write_sep("-", "gradflow devices")
    terminalreporter.write_line(f"tested on: {', '.join(present)}")
    terminalreporter.write_line(f"skipped (absent): {', '.join(absent) if absent else 'none'}")
    if SIMULATED_CUDA:
        terminalreporter.write_line("cuda:N are NumPy-backed simulated GPUs (tests/simcuda): they check device "
                                    "placement, CuPy's dtype tables and API use, not GPU kernels or speed")
        terminalreporter.write_line(_simulated_kernels_line())
    _skip_summary(terminalreporter)


def _simulated_kernels_line() -> str:
    """Whether gradflow's fused CuPy kernels (gradflow/backend/fused.py) ran on the simulated GPUs:
    the simulated ``cupy.ElementwiseKernel`` compiles their bodies with g++ (tests/simcuda/cupy/
    _elementwise.py); without g++, or once a build failed, the portable path ran instead."""
    import cupy

    from gradflow.backend import fused

    launches = cupy._elementwise.launches
    if os.environ.get("GRADFLOW_FUSED", "1") == "0":
        return "fused kernels NOT run on cuda:N: GRADFLOW_FUSED=0 forces the portable path"
    if cupy._elementwise.COMPILER is None:
        return "fused kernels NOT run on cuda:N: g++ absent, the simulated ElementwiseKernel cannot compile"
    if fused.cupy_status() is not None:
        return f"fused kernels NOT run on cuda:N after a failed build: {fused.cupy_status()}"
    names = ", ".join(f"{name.removeprefix('gf_')} {count}"
                      for name, count in sorted(launches.items()))
    line = f"fused kernels run on cuda:N (g++-compiled bodies): {sum(launches.values())} launches ({names or 'none'})"
    failed = sorted({f"{name[3:]}/{dtype}" for name, dtype in fused._CUPY_FAILED})
    return line + (f"; did not compile, portable path instead: {', '.join(failed)}" if failed else "")


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
