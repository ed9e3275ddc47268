"""Issue 13: checkpoints verify every byte, and a load that raises changes nothing.

A checkpoint with any single flipped bit either loads the exact saved state or raises a
CheckpointError before anything (weights, buffers, optimizer slots and step, the data order,
the RNGs, numpy's global generator) has changed."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gradflow as gf
from gradflow import checkpoint as ck
from gradflow import init
from gradflow import layers as L
from gradflow.data import BatchIterator
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import Adam
from gradflow.train import fit

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def data():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, size=24)
    return (np.eye(3, 4)[y] * 2 + rng.normal(size=(24, 4))).astype(np.float32), y


def build(seed=0):
    return gf.Sequential(L.Linear(4, 3, rng=seed), L.BatchNorm1d(3), L.Dropout(0.2, seed=seed + 5), L.Linear(3, 3, rng=seed + 1))


def trained(seed=0):
    model = build(seed)
    optimizer = Adam(model, lr=0.01)
    batches = BatchIterator(*data(), batch_size=8, seed=seed)
    fit(model, SoftmaxCrossEntropy(), optimizer, batches, 1, verbose=0)
    return model, optimizer, batches


def everything(model, optimizer, batches):
    """Every piece of state a load may touch, as plain comparable values."""
    return {
        "model": {k: gf.to_numpy(v).copy() for k, v in model.state_dict().items()},
        "slots": {k: gf.to_numpy(v).copy() for k, v in optimizer.state_dict()["slots"].items()},
        "step": optimizer.step_count,
        "data": json.dumps(batches.get_state(), sort_keys=True, default=str),
        "init": json.dumps(init._default_generator.bit_generator.state, sort_keys=True, default=str),
        "layers": json.dumps(ck.layer_rng_states(model), sort_keys=True, default=str),
        "numpy_global": json.dumps(np.random.get_state(legacy=False), sort_keys=True, default=str),
    }


def assert_same(a, b):
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert a[key].keys() == b[key].keys(), key
            for name in a[key]:
                np.testing.assert_array_equal(a[key][name], b[key][name], err_msg=f"{key}/{name}")
        else:
            assert a[key] == b[key], key


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    model, optimizer, batches = trained(0)
    path = tmp_path_factory.mktemp("ckpt") / "saved.safetensors"
    gf.save(path, model, optimizer, epoch=1, step=3, data=batches)
    return path, path.read_bytes(), everything(model, optimizer, batches)


def load_fresh(path):
    model, optimizer, batches = trained(1)  # another state, so a partial load would show
    before = everything(model, optimizer, batches)
    try:
        gf.load(path, model, optimizer, data=batches)
    except ck.CheckpointError:
        assert_same(everything(model, optimizer, batches), before)
        return None
    return everything(model, optimizer, batches)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(position=st.data())
def test_a_checkpoint_with_any_single_flipped_bit_loads_exactly_or_raises_before_changing_anything(saved, tmp_path, position):
    path, payload, state = saved
    header_end = 8 + int.from_bytes(payload[:8], "little")
    # half the draws in the header and metadata (the structure), half anywhere
    bit = position.draw(st.one_of(st.integers(0, header_end * 8 - 1), st.integers(0, len(payload) * 8 - 1)))
    flipped = bytearray(payload)
    flipped[bit // 8] ^= 1 << (bit % 8)
    target = tmp_path / "flipped.safetensors"
    target.write_bytes(bytes(flipped))
    loaded = load_fresh(target)
    if loaded is not None:
        assert_same(loaded, state)


def test_flipped_bits_in_array_data_are_found(saved, tmp_path):
    path, payload, _ = saved
    header_end = 8 + int.from_bytes(payload[:8], "little")
    for offset in (header_end, (header_end + len(payload)) // 2, len(payload) - 1):
        flipped = bytearray(payload)
        flipped[offset] ^= 0x10
        (tmp_path / "f.safetensors").write_bytes(bytes(flipped))
        with pytest.raises(ck.CheckpointError, match="do not match their SHA-256 digests"):
            ck.read(tmp_path / "f.safetensors")


def rewrite(path, target, change):
    """The checkpoint at ``path`` with its metadata changed by ``change`` and re-digested, as a
    crafted (not corrupted) file would be."""
    arrays = safetensors_numpy.load_file(str(path))
    document = ck.read(path).metadata
    change(document, arrays)
    document["digests"] = {key: ck._digest(key, array) for key, array in arrays.items()}
    text = json.dumps(document)
    target.write_bytes(safetensors_numpy.save(arrays, {"gradflow": text,
                                                       "gradflow_sha256": hashlib.sha256(text.encode()).hexdigest()}))
    return target


def set_path(document, dotted, value):
    keys = dotted.split(".")
    node = document
    for key in keys[:-1]:
        node = node[key]
    node[keys[-1]] = value


CRAFTED = {
    "epoch": ("epoch", "x", r"epoch must be a non-negative int"),
    "step": ("step", -5, r"step must be a non-negative int"),
    "optimizer step": ("optimizer.step", "x", r"optimizer.step must be a non-negative int"),
    "negative optimizer step": ("optimizer.step", -5, r"optimizer.step must be a non-negative int"),
    "hyperparameters": ("optimizer.hyperparameters", [], r"optimizer.hyperparameters must be an object"),
    "lr": ("optimizer.hyperparameters.lr", "fast", r"lr must be a number"),
    "rng": ("rng", None, r"rng must be an object"),
    "init generator named seed": ("rng.init.bit_generator", "seed", r"bit_generator must be one of"),
    "init state": ("rng.init.state", {"state": "x"}, r"not a valid PCG64 state"),
    "data generator": ("rng.data.bit_generator", "RandomState", r"bit_generator must be one of"),
    "layers": ("rng.layers", [], r"rng.layers must be an object"),
    "history": ("history", "x", r"history must be an object"),
    "callbacks": ("callbacks", [], r"callbacks must be an object"),
    "model keys": ("model.keys", "x", r"model must be an object"),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_crafted_metadata_is_refused_before_anything_changes(saved, tmp_path, case):
    path, _, _ = saved
    field, value, message = CRAFTED[case]
    target = rewrite(path, tmp_path / "crafted.safetensors", lambda doc, arrays: set_path(doc, field, value))
    model, optimizer, batches = trained(1)
    before = everything(model, optimizer, batches)  # numpy's global generator included
    with pytest.raises(ck.CheckpointError, match=message):
        gf.load(target, model, optimizer, data=batches)
    assert_same(everything(model, optimizer, batches), before)


def test_a_misspelt_optimizer_slot_is_refused_before_anything_changes(saved, tmp_path):
    path, _, _ = saved

    def misspell(document, arrays):
        arrays["optimizer/0.exp_avgg"] = arrays.pop(next(k for k in arrays if k.startswith("optimizer/0.")))

    target = rewrite(path, tmp_path / "slot.safetensors", misspell)
    model, optimizer, batches = trained(1)
    before = everything(model, optimizer, batches)
    with pytest.raises(ck.CheckpointError, match=r"slot '0.exp_avgg': Adam has no slot 'exp_avgg' \(its slots: \["):
        gf.load(target, model, optimizer, data=batches)
    assert_same(everything(model, optimizer, batches), before)


def test_a_failure_while_applying_restores_everything(saved, monkeypatch):
    path, _, _ = saved
    model, optimizer, batches = trained(1)
    before = everything(model, optimizer, batches)

    def refuse(state):
        raise ValueError("refused")

    monkeypatch.setattr(batches, "set_state", refuse)  # the last thing applied before the RNGs
    with pytest.raises(ValueError, match="refused"):
        gf.load(path, model, optimizer, data=batches)
    monkeypatch.undo()
    assert_same(everything(model, optimizer, batches), before)


def test_a_saved_checkpoint_loads_exactly(saved):
    path, _, state = saved
    assert_same(load_fresh(path), state)


def test_the_next_save_removes_temporary_files_of_killed_saves(tmp_path):
    target = tmp_path / "m.safetensors"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    stale = tmp_path / f".m.safetensors.{dead_pid}-abc123.tmp"
    live = tmp_path / f".m.safetensors.{os.getppid()}-def456.tmp"  # a save in progress elsewhere
    other = tmp_path / f".n.safetensors.{dead_pid}-abc123.tmp"  # another checkpoint's
    for path in (stale, live, other):
        path.write_bytes(b"partial")
    gf.save(target, build())
    assert not stale.exists() and live.exists() and other.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([target.name, live.name, other.name])
