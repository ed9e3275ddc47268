"""Checkpoints: safetensors + JSON metadata, atomic writes, clear errors, bit-exact resume."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import gradflow as gf
from gradflow import backend
from gradflow import checkpoint as ck
from gradflow import layers as L
from gradflow.callbacks import EarlyStopping, ModelCheckpoint
from gradflow.core import Layer
from gradflow.data import BatchIterator
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import SGD, Adam, CosineAnnealing, LinearWarmup
from gradflow.train import fit

pytest.importorskip("safetensors")
ROOT = Path(__file__).resolve().parents[2]


class GeneratorDropout(Layer):
    """Inverted dropout whose mask generator is a DeviceRNG attribute (found automatically)."""

    def __init__(self, p: float, seed: int):
        self.p, self.seed = p, seed
        self.generator = backend.device("cpu").rng(seed)

    def _moved(self, device, dtype):
        if device is not None:
            self.generator = device.rng(self.seed)

    def forward(self, x, train):
        if not train:
            return x, lambda dy: dy
        xp = backend.namespace(x)
        keep = xp.astype(self.generator.random(x.shape, x.dtype) >= self.p, x.dtype) * (1.0 / (1.0 - self.p))
        return x * keep, lambda dy: dy * keep


class HookDropout(GeneratorDropout):
    """The same masks, but the generator is kept out of sight of the attribute scan (in a list)
    and exposed through the documented rng_state/set_rng_state hook instead."""

    def __init__(self, p: float, seed: int):
        self.p, self.seed = p, seed
        self._generators = [backend.device("cpu").rng(seed)]

    @property
    def generator(self):
        return self._generators[0]

    def _moved(self, device, dtype):
        if device is not None:
            self._generators[0] = device.rng(self.seed)

    def rng_state(self):
        return {"wrapped": self._generators[0].get_state()}

    def set_rng_state(self, state):
        self._generators[0].set_state(state["wrapped"])


def data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, size=n)
    x = (np.eye(3, 5)[y] * 2 + rng.normal(scale=0.8, size=(n, 5))).astype(np.float32)
    return x, y


def build(seed=0, dropout=GeneratorDropout):
    return gf.Sequential(L.Linear(5, 16, rng=seed), L.ReLU(), dropout(0.3, seed=seed + 7), L.Linear(16, 3, rng=seed + 1))


def schedule():
    return LinearWarmup(CosineAnnealing(0.02, total_steps=40), warmup_steps=5)


def weights(model):
    return {k: gf.to_numpy(v).copy() for k, v in model.state_dict().items()}


def slots(optimizer):
    return {k: gf.to_numpy(v).copy() for k, v in optimizer.state_dict()["slots"].items()}


def assert_identical(a: dict, b: dict):
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key]), key


@pytest.mark.parametrize("dropout", [GeneratorDropout, HookDropout], ids=["generator-attribute", "rng-state-hook"])
def test_resume_gives_bit_identical_weights_to_an_uninterrupted_run(tmp_path, dropout):
    x, y = data()
    loss = SoftmaxCrossEntropy()
    straight = build(dropout=dropout)
    straight_opt = Adam(straight, lr=schedule(), weight_decay=1e-3)
    straight_history = fit(straight, loss, straight_opt, (x, y), 4, batch_size=16, seed=5, validation=(x, y),
                           verbose=0)

    path = tmp_path / "run.safetensors"
    first = build(dropout=dropout)
    fit(first, loss, Adam(first, lr=schedule(), weight_decay=1e-3), (x, y), 2, batch_size=16, seed=5,
        validation=(x, y), callbacks=[ModelCheckpoint(path)], verbose=0)
    fresh = build(seed=99, dropout=dropout)  # other initial weights and dropout seed: all must be overwritten
    fresh_opt = Adam(fresh, lr=schedule(), weight_decay=1e-3)
    resumed_history = fit(fresh, loss, fresh_opt, (x, y), 4, batch_size=16, seed=5, validation=(x, y),
                          resume=path, verbose=0)

    assert_identical(weights(fresh), weights(straight))
    assert_identical(slots(fresh_opt), slots(straight_opt))
    assert fresh_opt.step_count == straight_opt.step_count == 24
    assert resumed_history.epochs == [1, 2, 3, 4]
    assert resumed_history["loss"] == straight_history["loss"]


def test_manual_save_and_load_resume_exactly_and_need_the_rng_states(tmp_path):
    x, y = data()
    loss = SoftmaxCrossEntropy()

    def run(model, optimizer, batches, epochs):
        for _ in range(epochs):
            for xb, yb in batches:
                out, backprop = model(xb, train=True)
                _, delta = loss(out, yb)
                optimizer.zero_grad()
                backprop(delta)
                optimizer.step()

    straight = build()
    straight_opt = SGD(straight, lr=0.05, momentum=0.9)
    run(straight, straight_opt, BatchIterator(x, y, 16, seed=1), 4)

    first = build()
    first_opt = SGD(first, lr=0.05, momentum=0.9)
    first_batches = BatchIterator(x, y, 16, seed=1)
    run(first, first_opt, first_batches, 2)
    path = gf.save(tmp_path / "manual.safetensors", first, first_opt, epoch=2, data=first_batches, extra={"note": "hi"})

    results = {}
    for restore_rng in (True, False):
        fresh, batches = build(seed=42), BatchIterator(x, y, 16, seed=123)
        fresh_opt = SGD(fresh, lr=0.05, momentum=0.9)
        loaded = gf.load(path, fresh, fresh_opt, data=batches, restore_rng=restore_rng)
        assert loaded.epoch == 2 and loaded.extra == {"note": "hi"}
        run(fresh, fresh_opt, batches, 2)
        results[restore_rng] = weights(fresh)
    assert_identical(results[True], weights(straight))
    assert not np.array_equal(results[False]["0.weight"], weights(straight)["0.weight"])  # dropout masks differ


def test_metadata_describes_the_run(tmp_path):
    model = build()
    optimizer = Adam(model, lr=schedule(), betas=(0.8, 0.9))
    x, y = data(32)
    fit(model, SoftmaxCrossEntropy(), optimizer, (x, y), 1, validation=(x, y),
        callbacks=[EarlyStopping(patience=3)], verbose=0)
    callbacks = [EarlyStopping(patience=3)]
    callbacks[0].wait, callbacks[0].best_epoch = 2, 1
    path = gf.save(tmp_path / "m.safetensors", model, optimizer, epoch=1, step=2, callbacks=callbacks)
    meta = ck.read(path).metadata
    assert meta["format"] == "gradflow-checkpoint" and meta["format_version"] == ck.FORMAT_VERSION == 3
    assert meta["model"]["architecture"] == repr(model)
    assert meta["optimizer"]["class"] == "Adam"
    assert meta["optimizer"]["hyperparameters"]["beta1"] == 0.8
    assert meta["optimizer"]["schedule"]["class"] == "LinearWarmup"
    assert meta["rng"]["init"]["bit_generator"] == "PCG64"
    assert "2" in meta["rng"]["layers"]  # the dropout layer, by its path
    assert meta["epoch"] == 1 and meta["step"] == 2 and meta["device"] == "cpu"
    assert meta["callbacks"]["0.EarlyStopping"]["wait"] == 2
    # the arrays are plain safetensors, readable without gradflow
    import safetensors.numpy

    arrays = safetensors.numpy.load(path.read_bytes())
    assert set(arrays) >= {"model/0.weight", "model/3.bias", "optimizer/0.exp_avg"}
    restored = [EarlyStopping(patience=3)]
    gf.load(path, callbacks=restored)
    assert restored[0].wait == 2 and restored[0].best_epoch == 1


def test_a_save_that_fails_mid_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    model = build()
    path = gf.save(tmp_path / "keep.safetensors", model)
    before = path.read_bytes()
    model[0].weight.value[...] = 0.0

    def crash(handle, payload):
        handle.write(payload[:100])
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C halfway

    monkeypatch.setattr(ck, "_write_chunks", crash)
    with pytest.raises(KeyboardInterrupt):
        gf.save(path, model)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keep.safetensors"]  # the temporary file is gone
    monkeypatch.undo()
    monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        gf.save(path, model)
    assert path.read_bytes() == before
    restored = build(seed=5)
    gf.load(path, restored)
    assert not np.array_equal(gf.to_numpy(restored[0].weight.value), 0.0)


def test_a_process_killed_mid_save_leaves_the_previous_checkpoint_intact(tmp_path):
    path = tmp_path / "run.safetensors"
    gf.save(path, gf.Sequential(L.Linear(256, 256, rng=0)))
    before = path.read_bytes()
    script = (
        "import sys, time\n"
        "import gradflow as gf, gradflow.checkpoint as ck\n"
        "from gradflow import layers as L\n"
        "def slow(handle, payload):\n"
        "    handle.write(payload[:4096]); handle.flush()\n"
        "    print('writing', flush=True); time.sleep(60)\n"
        "ck._write_chunks = slow\n"
        "gf.save(sys.argv[1], gf.Sequential(L.Linear(256, 256, rng=1)))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    process = subprocess.Popen([sys.executable, "-c", script, str(path)], stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert process.stdout.readline().strip() == "writing"
    finally:
        process.kill()
        process.wait()
    assert path.read_bytes() == before
    leftovers = [p.name for p in tmp_path.iterdir() if p != path]
    assert len(leftovers) == 1 and leftovers[0].startswith(".run.safetensors.") and leftovers[0].endswith(".tmp")
    gf.load(path, gf.Sequential(L.Linear(256, 256, rng=2)))


def test_loading_into_another_architecture_lists_every_mismatch_and_changes_nothing(tmp_path):
    path = gf.save(tmp_path / "a.safetensors", build())
    other = gf.Sequential(L.Linear(5, 8, rng=0), L.ReLU(), L.Linear(8, 3, rng=1))
    before = weights(other)
    with pytest.raises(ck.CheckpointError) as caught:
        gf.load(path, other)
    message = str(caught.value)
    assert "0.weight: model (8, 5) vs given (16, 5)" in message  # Linear weights are (out, in)
    assert "missing keys: ['2.weight', '2.bias']" in message
    assert "unexpected keys: ['3.weight', '3.bias']" in message  # in the saved model's order
    assert "saved architecture" in message and "GeneratorDropout" in message
    assert_identical(weights(other), before)


def test_an_optimizer_of_another_class_or_shape_is_refused_before_anything_changes(tmp_path):
    model = build()
    optimizer = Adam(model)
    x, y = data(16)
    fit(model, SoftmaxCrossEntropy(), optimizer, (x, y), 1, verbose=0)
    path = gf.save(tmp_path / "o.safetensors", model, optimizer)
    target = build(seed=3)
    before = weights(target)
    with pytest.raises(ck.CheckpointError, match="holds Adam state, not SGD's"):
        gf.load(path, target, SGD(target))
    assert_identical(weights(target), before)
    with pytest.raises(ck.CheckpointError, match="holds no optimizer state"):
        gf.load(gf.save(tmp_path / "no-opt.safetensors", model), target, Adam(target))


def test_truncated_and_foreign_files_raise_clear_errors(tmp_path):
    path = gf.save(tmp_path / "full.safetensors", build())
    payload = path.read_bytes()
    cases = {
        "half.safetensors": (payload[: len(payload) // 2], "truncated"),
        "header-cut.safetensors": (payload[:40], "truncated"),
        "tiny.safetensors": (payload[:5], "truncated, or not a gradflow checkpoint"),
        "empty.safetensors": (b"", "truncated, or not a gradflow checkpoint"),
        "image.png": (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4, "not a gradflow checkpoint"),
        "notes.json": (json.dumps({"hello": "world"}).encode(), "not a gradflow checkpoint"),
    }
    import safetensors.numpy

    cases["plain.safetensors"] = (safetensors.numpy.save({"w": np.zeros(3, np.float32)}),
                                  "without gradflow metadata")
    for name, (content, pattern) in cases.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ck.CheckpointError, match=pattern):
            gf.load(tmp_path / name, build())
    newer = safetensors.numpy.save({"model/x": np.zeros(1, np.float32)},
                                   metadata={"gradflow": json.dumps({"format": "gradflow-checkpoint",
                                                                     "format_version": 99})})
    (tmp_path / "newer.safetensors").write_bytes(newer)
    older = safetensors.numpy.save({"model/x": np.zeros(1, np.float32)},
                                   metadata={"gradflow": json.dumps({"format": "gradflow-checkpoint",
                                                                     "format_version": 1})})
    (tmp_path / "older.safetensors").write_bytes(older)
    # version 1 stored Linear weights (in, out): a square one would load transposed in silence
    with pytest.raises(ck.CheckpointError, match=r"format version 1\), which stored Linear weights as \(in, out\)"):
        gf.load(tmp_path / "older.safetensors", build())
    with pytest.raises(ck.CheckpointError, match="newer gradflow"):
        ck.read(tmp_path / "newer.safetensors")


def recurrent_model(seed=0):
    # the RNN's weight_ih and weight_hh are square (input_size == hidden_size, one gate): the case
    # a silent transpose would pass; the LSTM covers projections, reverse directions and two layers
    return gf.Sequential(L.LSTM(4, 4, num_layers=2, bidirectional=True, proj_size=3, batch_first=True, rng=seed),
                         L.RNN(6, 6, batch_first=True, rng=seed + 2), L.Linear(6, 2, rng=seed + 1))


def recurrent_step(model, optimizer, x):
    out, backprop = model(x, train=True)
    optimizer.zero_grad()
    backprop(out)  # the gradient of 0.5·Σ out²
    optimizer.step()


def forge_format_2(source, target, transposed=lambda key, array: array.T):
    """Rewrite a format 3 file as format 2 wrote it: recurrent weights and their Adam slots
    transposed, format_version 2, digests recomputed with the module's own functions."""
    import safetensors.numpy

    payload = Path(source).read_bytes()
    size = int.from_bytes(payload[:8], "little")
    meta = json.loads(json.loads(payload[8:8 + size])["__metadata__"][ck.METADATA_KEY])
    arrays = safetensors.numpy.load(payload)
    keys = meta["model"]["keys"]  # Adam(model): parameter i is the model's i-th parameter (no buffers here)
    recurrent = {i for i, key in enumerate(keys) if ck._RECURRENT_WEIGHT.search(key)}
    for name in list(arrays):
        kind, _, key = name.partition("/")
        if (kind == "model" and key in [keys[i] for i in recurrent]) or \
                (kind == "optimizer" and int(key.partition(".")[0]) in recurrent):
            arrays[name] = np.ascontiguousarray(transposed(key, arrays[name]))
    meta["format_version"] = 2
    meta["digests"] = {name: ck._digest(name, array) for name, array in arrays.items()}
    document = json.dumps(meta)
    Path(target).write_bytes(safetensors.numpy.save(arrays, metadata={ck.METADATA_KEY: document,
                                                                      ck.DIGEST_KEY: ck._text_digest(document)}))
    return Path(target)


def test_a_format_2_checkpoint_is_migrated_and_resumes_exactly_as_its_format_3_twin(tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 5, 4)).astype(np.float32)
    model = recurrent_model()
    optimizer = Adam(model, lr=0.01)
    for _ in range(2):
        recurrent_step(model, optimizer, x)
    current = gf.save(tmp_path / "v3.safetensors", model, optimizer, epoch=1)
    old = forge_format_2(current, tmp_path / "v2.safetensors")
    stored = ck.read(old)
    assert stored.migrated_from == 2 and ck.read(current).migrated_from is None
    assert stored.migrated_keys["0.weight_hr_l0"] == (4, 3) and "1.weight" not in stored.migrated_keys
    assert stored.optimizer_slots["4.exp_avg"].shape == (4, 3)  # slots: transposed by load, which knows the params

    results = {}
    for name, path in (("v3", current), ("v2", old)):
        fresh = recurrent_model(seed=9)
        fresh_opt = Adam(fresh, lr=0.01)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            gf.load(path, fresh, fresh_opt)
        messages = [str(w.message) for w in caught]
        loaded = (weights(fresh), slots(fresh_opt), fresh_opt.step_count)
        recurrent_step(fresh, fresh_opt, x)
        results[name] = (loaded, weights(fresh), slots(fresh_opt), messages)
    (w3, s3, n3), after_w3, after_s3, messages_3 = results["v3"]
    (w2, s2, n2), after_w2, after_s2, messages_2 = results["v2"]
    assert_identical(w2, w3)
    assert_identical(w2, weights(model))
    assert_identical(s2, s3)
    assert n2 == n3 == 2
    assert_identical(after_w2, after_w3)
    assert_identical(after_s2, after_s3)
    assert messages_3 == [] and len(messages_2) == 1 and ck.MIGRATION_WARNING in messages_2[0]
    # saving writes the current format
    again = gf.save(tmp_path / "again.safetensors", model, optimizer)
    assert ck.read(again).metadata["format_version"] == ck.FORMAT_VERSION and ck.read(again).migrated_from is None


def test_a_format_2_recurrent_weight_that_fits_neither_layout_is_refused_and_changes_nothing(tmp_path):
    model = recurrent_model()
    optimizer = Adam(model, lr=0.01)
    recurrent_step(model, optimizer, np.ones((2, 3, 4), np.float32))
    current = gf.save(tmp_path / "v3.safetensors", model, optimizer)

    def damaged(key, array):  # weight_ih_l1 (16, 6) stored as (6, 16) in format 2; make it (3, 32)
        return array.T.reshape(3, 32) if key == "0.weight_ih_l1" else array.T

    bad = forge_format_2(current, tmp_path / "bad.safetensors", damaged)
    fresh = recurrent_model(seed=9)
    fresh_opt = Adam(fresh, lr=0.01)
    before = weights(fresh)
    pattern = r"'0.weight_ih_l1': expected \(6, 16\) .*got \(3, 32\)"
    with pytest.raises(ck.CheckpointError, match=pattern):
        gf.load(bad, fresh, fresh_opt)
    assert_identical(weights(fresh), before)
    assert slots(fresh_opt) == {} and fresh_opt.step_count == 0
    # an optimizer without its model cannot tell which slots belong to recurrent weights
    with pytest.raises(ck.CheckpointError, match="pass the model too"):
        gf.load(forge_format_2(current, tmp_path / "v2.safetensors"), None, fresh_opt)
    assert slots(fresh_opt) == {} and fresh_opt.step_count == 0


def test_a_checkpoint_saved_on_the_cpu_loads_on_another_device(tmp_path):
    pytest.importorskip("array_api_strict")
    strict = gf.device("strict")
    x, y = data(48)
    model = build()
    optimizer = Adam(model, lr=0.01)
    fit(model, SoftmaxCrossEntropy(), optimizer, (x, y), 1, batch_size=16, verbose=0)
    path = gf.save(tmp_path / "cpu.safetensors", model, optimizer)
    other = build(seed=9).to(strict)
    other_opt = Adam(other, lr=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the dropout generator's state fits the strict device's too
        gf.load(path, other, other_opt)
    for key, value in other.state_dict().items():
        assert backend.device_of(value) == strict
        assert np.array_equal(gf.to_numpy(value), weights(model)[key])
    assert all(backend.device_of(v) == strict for v in other_opt.state_dict()["slots"].values())
    for net, opt in ((model, optimizer), (other, other_opt)):
        net[2].p = 0.0  # same masks on both: compare the optimizer step itself
        fit(net, SoftmaxCrossEntropy(), opt, (x, y), 1, batch_size=16, verbose=0)
    for key, value in weights(other).items():
        np.testing.assert_allclose(value, weights(model)[key], rtol=1e-5, atol=1e-6)


def test_an_rng_state_that_does_not_fit_is_skipped_with_a_warning(tmp_path):
    model = build()
    path = gf.save(tmp_path / "r.safetensors", model)
    document = ck.read(path).metadata
    document["rng"]["layers"]["2"]["attributes"]["generator"] = {"kind": "counter", "seed": 1, "counter": 2}
    import safetensors.numpy

    arrays = {f"model/{k}": v for k, v in weights(model).items()}
    text = json.dumps(document)
    header = {"gradflow": text, "gradflow_sha256": hashlib.sha256(text.encode()).hexdigest()}
    (tmp_path / "cuda.safetensors").write_bytes(safetensors.numpy.save(arrays, header))
    with pytest.warns(RuntimeWarning, match="RNG state of layer '2' .*was not restored"):
        gf.load(tmp_path / "cuda.safetensors", build(seed=1))


def test_save_refuses_a_directory_and_unserialisable_extra(tmp_path):
    with pytest.raises(IsADirectoryError):
        gf.save(tmp_path, build())
    with pytest.raises(ck.CheckpointError, match="not JSON-serialisable"):
        gf.save(tmp_path / "x.safetensors", build(), extra={"array": np.zeros(2)})
    assert not (tmp_path / "x.safetensors").exists()
