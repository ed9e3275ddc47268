"""Determinism: the same seed gives bit-identical weights in separate processes on the CPU, and
the deterministic mode routes CuPy's atomic scatter-add to the reproducible one-hot path.

See README, "Guarantees", for what holds on which device.
"""

from __future__ import annotations

import os
import subprocess
import sys
import types
from pathlib import Path

import array_api_compat
import numpy as np
import pytest

import gradflow as gf
from gradflow import backend
from gradflow.backend import primitives

ROOT = Path(__file__).resolve().parents[2]

# Trains a small MLP (with Dropout when the layer exists) through fit() -- shuffled batches,
# Adam, weight decay, gradient clipping -- and prints a hash of every parameter's bytes.
TRAIN_SCRIPT = r"""
import hashlib, sys
import numpy as np
import gradflow as gf
from gradflow import layers as L, losses, optim, train

seed = int(sys.argv[1])
gf.seed(seed)
rng = np.random.default_rng(seed)
x = rng.normal(size=(96, 6)).astype(np.float32)
y = (x[:, 0] + x[:, 1] * x[:, 2] > 0).astype(np.int64)
parts = [L.Linear(6, 16), L.Tanh()]
if hasattr(L, "Dropout"):
    parts.append(L.Dropout(0.2, seed=seed))
parts += [L.Linear(16, 2)]
model = gf.Sequential(*parts)
optimizer = optim.Adam(model, lr=1e-2, weight_decay=1e-4, clip_norm=1.0)
train.fit(model, losses.SoftmaxCrossEntropy(), optimizer, (x, y), epochs=4, batch_size=8, seed=seed, verbose=False)
digest = hashlib.sha256()
for name, p in model.named_parameters():
    digest.update(name.encode())
    digest.update(np.ascontiguousarray(gf.to_numpy(p.value)).tobytes())
print(digest.hexdigest())
"""


def _train_in_subprocess(seed: int) -> str:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="2", OMP_NUM_THREADS="2", MKL_NUM_THREADS="2")
    result = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT, str(seed)], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_same_seed_gives_bit_identical_weights_in_separate_processes_on_the_cpu():
    first, second = _train_in_subprocess(3), _train_in_subprocess(3)
    assert first == second, "two CPU runs with the same seed and thread count produced different weights"
    assert _train_in_subprocess(4) != first, "a different seed should give different weights (else the hash proves nothing)"


# --------------------------------------------------------------------------------------------
# Deterministic mode and the scatter-add dispatch
# --------------------------------------------------------------------------------------------


@pytest.fixture
def restore_deterministic():
    previous = backend.is_deterministic()
    yield
    backend.set_deterministic(previous)


def test_set_deterministic_returns_the_previous_setting(restore_deterministic):
    backend.set_deterministic(False)
    assert backend.set_deterministic(True) is False
    assert backend.is_deterministic() is True
    assert backend.set_deterministic(False) is True
    assert backend.is_deterministic() is False


class _RecordingCuPy:
    """While active, make ``stand_in`` (a strict array) look like a CuPy array to the dispatch,
    with a fake ``cupyx.scatter_add``, and log which path ran (the portable one is spied on)."""

    def __init__(self, monkeypatch, stand_in):
        self.calls: list[str] = []
        self.active = False
        real_is_cupy = array_api_compat.is_cupy_array
        monkeypatch.setattr(array_api_compat, "is_cupy_array",
                            lambda x: (self.active and x is stand_in) or real_is_cupy(x))
        portable = primitives._scatter_add_rows_one_hot

        def fake_scatter_add(target, indices, values):
            self.calls.append("cupyx.scatter_add")
            portable(target, indices, values)

        def spy(target, indices, values):
            self.calls.append("one-hot")
            return portable(target, indices, values)

        fake = types.ModuleType("cupyx")
        fake.scatter_add = fake_scatter_add
        monkeypatch.setitem(sys.modules, "cupyx", fake)
        monkeypatch.setattr(primitives, "_scatter_add_rows_one_hot", spy)

    def scatter_add_rows(self, *args):
        self.active = True
        try:
            return backend.scatter_add_rows(*args)
        finally:
            self.active = False


@pytest.mark.parametrize("deterministic,expected", [(False, ["cupyx.scatter_add"]), (True, ["one-hot"])])
def test_deterministic_mode_sends_cupy_scatter_add_to_the_one_hot_path(monkeypatch, restore_deterministic, deterministic, expected):
    strict = gf.device("strict")
    target = strict.send(np.zeros((4, 3)), "float64")
    indices = strict.send(np.array([1, 3, 1, 1, 0]))
    values = strict.send(np.arange(15, dtype=np.float64).reshape(5, 3), "float64")
    cupy = _RecordingCuPy(monkeypatch, target)
    backend.set_deterministic(deterministic)
    cupy.scatter_add_rows(target, indices, values)
    assert cupy.calls == expected
    expected_sum = np.zeros((4, 3))
    np.add.at(expected_sum, [1, 3, 1, 1, 0], np.arange(15.0).reshape(5, 3))
    np.testing.assert_array_equal(gf.to_numpy(target), expected_sum)


def test_deterministic_mode_leaves_numpy_and_torch_on_their_own_deterministic_kernels(monkeypatch, restore_deterministic):
    backend.set_deterministic(True)
    cupy = _RecordingCuPy(monkeypatch, stand_in=object())
    for name in ("cpu", "torch"):
        try:
            dev = gf.device(name)
        except gf.DeviceError as error:
            pytest.skip(str(error))
        target = dev.send(np.zeros((3, 2)), "float32")
        cupy.scatter_add_rows(target, dev.send(np.array([2, 2, 0])), dev.send(np.ones((3, 2)), "float32"))
        np.testing.assert_array_equal(gf.to_numpy(target), [[1, 1], [0, 0], [2, 2]])
    assert cupy.calls == []


def test_the_one_hot_path_in_blocks_sums_duplicates_and_repeats_bit_for_bit(monkeypatch, device):
    rng = np.random.default_rng(5)
    indices = rng.integers(0, 37, size=50)
    values = rng.normal(size=(50, 4))
    expected = np.full((37, 4), 0.5)
    np.add.at(expected, indices, values)
    for block in (1 << 24, 400, 1):  # one block; 8 rows per block; one row per block
        monkeypatch.setattr(primitives, "_ONE_HOT_BLOCK", block)
        runs = []
        for _ in range(2):
            target = device.send(np.full((37, 4), 0.5), "float32")
            backend.scatter_add_rows(target, device.send(indices), device.send(values, "float32"), portable=True)
            runs.append(gf.to_numpy(target))
        np.testing.assert_allclose(runs[0], expected, rtol=1e-5, atol=1e-5, err_msg=f"block of {block} entries")
        np.testing.assert_array_equal(runs[1], runs[0])
