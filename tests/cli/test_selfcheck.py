"""``python -m gradflow.selfcheck`` (and ``gradflow doctor``): fails with one line without a GPU,
and on the simulated GPUs runs every check and writes the Markdown report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gradflow import cli, selfcheck
from tests.conftest import SIMULATED_CUDA

ROOT = Path(__file__).resolve().parents[2]


def test_without_cupy_the_selfcheck_fails_with_a_one_line_reason(tmp_path):
    if not SIMULATED_CUDA:
        pytest.skip("a real CuPy is installed here")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}  # no tests/simcuda: CuPy is missing
    job = subprocess.run([sys.executable, "-m", "gradflow.selfcheck", "--report", str(tmp_path / "r.md")],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120)
    assert job.returncode == 1
    lines = job.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradflow selfcheck: FAILED: no usable GPU") and "CuPy" in lines[0]
    assert "none:" in (tmp_path / "r.md").read_text()


@pytest.mark.skipif(not SIMULATED_CUDA, reason="switches the simulated CUDA off")
def test_with_cupy_but_no_gpu_the_doctor_fails_too(tmp_path, capsys):
    import cupy

    cupy._sim.reset(device_count=0)
    assert cli.main(["doctor", "--report", str(tmp_path / "r.md")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no usable GPU" in err[0] and "sees no GPU" in err[0]


@pytest.mark.skipif(not SIMULATED_CUDA, reason="writes a report about the simulated GPUs")
def test_on_two_simulated_gpus_every_check_runs_and_the_report_says_so(tmp_path, capsys):
    report = tmp_path / "gpu.md"
    status = selfcheck.main(["--only", "Linear,GELU,Dropout,Embedding", "--report", str(report),
                             "--benchmark-seconds", "0.2"])
    text = report.read_text()
    assert status == 0, text
    for check in ("parity suite | cuda:0", "parity suite | cuda:1", "training | cuda:1", "NCCL all-reduce | cuda:0-1",
                  "benchmark | cuda:1"):
        assert check in text
    assert "| FAIL |" not in text and "simulation" in text and "cupy 14.2.0+simulated" in text
    assert "passed 7 checks on 2 GPU(s)" in capsys.readouterr().out


@pytest.mark.skipif(not SIMULATED_CUDA, reason="plants a failure on the simulated GPUs")
def test_a_failing_check_fails_the_run_and_names_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(selfcheck, "benchmark", lambda device, seconds: 1 / 0)
    status = selfcheck.main(["--only", "Linear", "--report", str(tmp_path / "r.md"), "--benchmark-seconds", "0.1"])
    assert status == 1
    assert "first: benchmark on cuda:0: ZeroDivisionError" in capsys.readouterr().err
    assert "| benchmark | cuda:0 | FAIL |" in (tmp_path / "r.md").read_text()
