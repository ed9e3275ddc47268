"""backend.keep_freed_memory: freed host blocks are reused instead of refaulted from the OS.

The allocator setting is process-wide, so the measurement runs in a child process and leaves the
test process's allocator as it was."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

CHILD = r"""
import resource, numpy as np
from gradflow import backend

def faults_per_round(rounds=8, size=3 << 17):
    np.ones(size, dtype=np.float32)  # warm up
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        np.ones(size, dtype=np.float32)  # 1.5 MiB (under a huge page), freed at once: a step's temporaries
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / rounds

assert backend.keep_freed_memory(False)
default = faults_per_round()
assert backend.keep_freed_memory(True)
kept = faults_per_round()
print(default, kept)
"""


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's mallopt only")
def test_keep_freed_memory_stops_the_page_faults_of_reallocated_temporaries():
    result = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    default, kept = map(float, result.stdout.split())
    assert default >= 300  # 384 pages of 4 KiB per array, mmapped and unmapped each time
    assert kept <= default / 20


def test_keep_freed_memory_says_whether_it_applied():
    expected = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"
    result = subprocess.run([sys.executable, "-c", "from gradflow import backend; print(backend.keep_freed_memory())"],
                            capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == str(expected), result.stderr
