"""fit / evaluate / predict with validation, metrics, callbacks and progress display."""

from __future__ import annotations

import io
import json
import math
import warnings

import numpy as np
import pytest

import gradflow as gf
from gradflow import backend
from gradflow import layers as L
from gradflow.callbacks import (Callback, CSVLogger, EarlyStopping, JSONLogger, LearningRateScheduler,
                                ModelCheckpoint, TerminateOnNaN)
from gradflow.core import Layer
from gradflow.losses import MSE, SoftmaxCrossEntropy
from gradflow.optim import SGD, Adam, StepLR
from gradflow.progress import Progress, resolve_verbose
from gradflow.train import History, evaluate, fit, predict


def blobs(n=120, seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[2.0, 0, 0, 0], [0, 2.0, 0, 0], [0, 0, 2.0, 0]])
    y = rng.integers(0, 3, size=n)
    x = (centres[y] + rng.normal(scale=0.7, size=(n, 4))).astype(np.float32)
    return x, y.astype(np.int64)


def mlp(seed=0):
    return gf.Sequential(L.Linear(4, 16, rng=seed), L.ReLU(), L.Linear(16, 3, rng=seed + 1))


def test_fit_keeps_the_original_signature_and_learns():
    x, y = blobs()
    model = mlp()
    history = fit(model, SoftmaxCrossEntropy(), Adam(model, lr=1e-2), (x, y), 5, batch_size=16,
                  validation=(x, y), seed=0, verbose=False)
    assert isinstance(history, History)
    assert len(history["loss"]) == 5 and history["loss"][-1] < history["loss"][0]
    assert history.last("val_accuracy") > 0.9  # validation accuracy by default for integer labels
    assert history.epochs == [1, 2, 3, 4, 5] and history.stop_reason is None
    assert evaluate(model, SoftmaxCrossEntropy(), (x, y))["accuracy"] == pytest.approx(history.last("val_accuracy"))
    assert predict(model, x).shape == (120, 3)
    assert not model.training


def test_fit_on_every_device_matches_the_cpu_run(device):
    x, y = blobs(60)
    results = {}
    for dev in {"cpu": gf.device("cpu"), "other": device}.values():
        model = mlp().to(dev)
        history = fit(model, SoftmaxCrossEntropy(), Adam(model, lr=1e-2), (x, y), 2, batch_size=16,
                      metrics=["accuracy", "f1"], verbose=0)
        results[dev.name] = history
    cpu, other = results["cpu"], results[device.name]
    for key in ("loss", "accuracy", "f1"):
        np.testing.assert_allclose(other[key], cpu[key], rtol=1e-4)


def test_validation_split_takes_the_last_samples_before_shuffling():
    x, y = blobs(100)
    model = mlp()
    seen = []

    class Spy(Callback):
        def on_train_begin(self, state):
            seen.append(state.data.num_samples)

    history = fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 1, validation_split=0.25, callbacks=[Spy()],
                  verbose=0)
    assert seen == [75]
    expected = evaluate(model, SoftmaxCrossEntropy(), (x[75:], y[75:]))
    assert history.last("val_loss") == pytest.approx(expected["loss"])
    with pytest.raises(ValueError, match="not both"):
        fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 1, validation=(x, y), validation_split=0.2)
    with pytest.raises(ValueError, match="validation_split"):
        fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 1, validation_split=1.5)


def test_history_has_training_and_validation_metrics_and_the_lr():
    x, y = blobs()
    model = mlp()
    history = fit(model, SoftmaxCrossEntropy(), Adam(model, lr=StepLR(0.01, step_size=8, gamma=0.5)), (x, y), 2,
                  batch_size=16, validation=(x[:30], y[:30]), metrics=["accuracy", "top2_accuracy", "f1"], verbose=0)
    assert set(history) == {"loss", "accuracy", "top2_accuracy", "f1", "val_loss", "val_accuracy",
                            "val_top2_accuracy", "val_f1", "lr"}
    assert history["lr"] == pytest.approx([0.01, 0.005])  # the lr of each epoch's last step (steps 7 and 15)
    assert all(0.0 <= v <= 1.0 for v in history["val_top2_accuracy"])


class CountingSyncs:
    """Counts host conversions of array-api-strict arrays: every one is a device-to-host sync."""

    def __init__(self, monkeypatch):
        import array_api_strict

        self.count = 0
        cls = array_api_strict._array_object.Array
        for name in ("__bool__", "__int__", "__float__", "__index__", "__dlpack__", "__array__"):
            original = getattr(cls, name, None)
            if original is not None:
                monkeypatch.setattr(cls, name, self._counting(original))

    def _counting(self, original):
        def wrapper(array, *args, **kwargs):
            self.count += 1
            return original(array, *args, **kwargs)

        return wrapper


def test_a_training_step_has_no_hidden_device_to_host_sync(monkeypatch):
    pytest.importorskip("array_api_strict")
    strict = gf.device("strict")
    x, y = blobs(160)
    counts = {}
    for batch_size in (40, 8):  # 4 and 20 steps per epoch
        model = mlp().to(strict)
        counter = CountingSyncs(monkeypatch)
        fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 2, batch_size=batch_size,
            metrics=["accuracy", "f1", "top2_accuracy"], verbose=0)
        counts[batch_size] = counter.count
        monkeypatch.undo()
    # The same number of syncs whatever the number of steps: the loss's checks on the first batch
    # and one fetch per epoch, nothing per step.
    assert counts[40] == counts[8], counts
    assert counts[8] <= 12, counts


@pytest.mark.parametrize("where", [0, 39])  # in the first batch and in the last one
def test_every_label_is_checked_before_training(where):
    x, y = blobs(40)
    y_bad = y.copy()
    y_bad[where] = 7  # out of range for 3 classes
    model = mlp()
    before = {k: v.copy() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match=rf"fit: data: SoftmaxCrossEntropy: labels must lie in \[0, 2\].*got 7 at sample {where}"):
        fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y_bad), 1, batch_size=8, shuffle=False, verbose=0)
    assert all(np.array_equal(before[k], v) for k, v in model.state_dict().items())


def test_a_nan_loss_stops_training_at_the_end_of_the_epoch_with_a_warning():
    x, y = blobs(40)
    model = mlp()
    model[0].weight.value[...] = np.nan
    with pytest.warns(RuntimeWarning, match="training loss of epoch 1 is nan"):
        history = fit(model, SoftmaxCrossEntropy(validate=False), SGD(model), (x, y), 5, verbose=0)
    assert len(history["loss"]) == 1 and "TerminateOnNaN" in history.stop_reason


class ExplodeAt(Layer):
    """Identity until call number ``at`` (0-based), then NaN: a layer that breaks mid-training."""

    def __init__(self, at):
        self.at, self.calls = at, 0

    def forward(self, x, train):
        self.calls += 1
        if train and self.calls > self.at:
            x = x * float("nan")
        return x, lambda dy: dy


def test_terminate_on_nan_names_the_step_epoch_and_batch(capsys):
    x, y = blobs(40)
    model = gf.Sequential(L.Linear(4, 3, rng=0), ExplodeAt(7))
    stopper = TerminateOnNaN()
    history = fit(model, SoftmaxCrossEntropy(validate=False), SGD(model, lr=0.1), (x, y), 3, batch_size=8,
                  callbacks=[stopper], verbose=0)
    assert stopper.bad_step == 7
    assert "step 7 (epoch 2, batch 3 of 5)" in history.stop_reason
    assert "TerminateOnNaN" in capsys.readouterr().err
    assert len(history["loss"]) == 2


def test_terminate_on_nan_checking_every_few_steps_still_names_the_exact_step():
    x, y = blobs(40)
    model = gf.Sequential(L.Linear(4, 3, rng=0), ExplodeAt(6))
    stopper = TerminateOnNaN(check_every=4)
    fit(model, SoftmaxCrossEntropy(validate=False), SGD(model, lr=0.1), (x, y), 3, batch_size=8, callbacks=[stopper],
        verbose=0)
    assert stopper.bad_step == 6


def test_early_stopping_waits_patience_epochs_and_restores_the_best_weights():
    x, y = blobs(60)
    model = mlp()
    snapshots = {}

    class Snap(Callback):
        def on_epoch_end(self, state, logs):
            snapshots[state.epoch + 1] = gf.to_numpy(state.model[0].weight.value).copy()

    # train on the validation labels shuffled: val_loss rises after the first epochs
    rng = np.random.default_rng(1)
    stopper = EarlyStopping(monitor="val_loss", patience=2, restore_best_weights=True, verbose=False)
    history = fit(model, SoftmaxCrossEntropy(), Adam(model, lr=0.05), (x, rng.permutation(y)), 30,
                  validation=(x, y), callbacks=[stopper, Snap()], verbose=0)
    stopped = len(history["val_loss"])
    assert stopped < 30 and "EarlyStopping" in history.stop_reason
    best = int(np.argmin(history["val_loss"])) + 1
    assert stopper.best_epoch == best and stopped == best + 2
    np.testing.assert_array_equal(gf.to_numpy(model[0].weight.value), snapshots[best])


def test_early_stopping_rejects_an_unknown_monitor():
    x, y = blobs(20)
    model = mlp()
    with pytest.raises(KeyError, match="monitor 'val_loss' is not among"):
        fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 1, callbacks=[EarlyStopping()], verbose=0)


def test_model_checkpoint_every_epoch_and_best_only(tmp_path):
    x, y = blobs(60)
    model = mlp()
    every = ModelCheckpoint(tmp_path / "epoch-{epoch:02d}.safetensors")
    best = ModelCheckpoint(tmp_path / "best.safetensors", monitor="val_accuracy", save_best_only=True)
    history = fit(model, SoftmaxCrossEntropy(), Adam(model, lr=0.02), (x, y), 3, validation=(x, y),
                  callbacks=[every, best], verbose=0)
    assert sorted(p.name for p in tmp_path.glob("epoch-*")) == ["epoch-01.safetensors", "epoch-02.safetensors",
                                                                "epoch-03.safetensors"]
    improving = [i + 1 for i, v in enumerate(history["val_accuracy"]) if v > max(history["val_accuracy"][:i], default=-1)]
    assert len(best.saved) == len(improving)
    assert gf.checkpoint.read(tmp_path / "best.safetensors").epoch == improving[-1]


def test_learning_rate_scheduler_sets_the_lr_per_epoch_from_either_signature():
    x, y = blobs(40)
    model = mlp()
    history = fit(model, SoftmaxCrossEntropy(), SGD(model, lr=1.0), (x, y), 3,
                  callbacks=[LearningRateScheduler(lambda epoch: 0.1 / (epoch + 1))], verbose=0)
    assert history["lr"] == pytest.approx([0.1, 0.05, 0.1 / 3])
    history = fit(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), (x, y), 3,
                  callbacks=[LearningRateScheduler(lambda epoch, lr: lr * 0.5)], verbose=0)
    assert history["lr"] == pytest.approx([0.05, 0.025, 0.0125])
    history = fit(model, SoftmaxCrossEntropy(), SGD(model, lr=0.1), (x, y), 3,
                  callbacks=[LearningRateScheduler(StepLR(0.2, step_size=2))], verbose=0)
    assert history["lr"] == pytest.approx([0.2, 0.2, 0.02])


def test_csv_and_json_loggers_write_one_record_per_epoch(tmp_path):
    x, y = blobs(40)
    model = mlp()
    history = fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 3, validation=(x, y),
                  callbacks=[CSVLogger(tmp_path / "log.csv"), JSONLogger(tmp_path / "log.jsonl")], verbose=0)
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert rows[0] == "epoch,loss,val_loss,val_accuracy,lr"
    assert len(rows) == 4 and float(rows[3].split(",")[1]) == history["loss"][2]
    records = [json.loads(line) for line in (tmp_path / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert records[2]["val_accuracy"] == history["val_accuracy"][2]
    fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 1, validation=(x, y),
        callbacks=[CSVLogger(tmp_path / "log.csv", append=True)], verbose=0)
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 5


def test_callback_hooks_run_in_order_and_close_runs_even_when_training_raises():
    x, y = blobs(16)
    events = []

    hooks = ("on_train_begin", "on_epoch_begin", "on_batch_begin", "on_after_backward", "on_batch_end",
             "on_epoch_end", "on_train_end")
    methods = {h: (lambda h: lambda self, *args: events.append(h))(h) for h in hooks}
    Recorder = type("Recorder", (Callback,), {**methods, "close": lambda self: events.append("close")})
    model = mlp()
    fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 1, batch_size=16, callbacks=[Recorder()], verbose=0)
    assert events == ["on_train_begin", "on_epoch_begin", "on_batch_begin", "on_after_backward", "on_batch_end",
                      "on_epoch_end", "on_train_end", "close"]
    events.clear()

    class Boom(Callback):
        def on_batch_end(self, state, loss):
            raise RuntimeError("boom")

        def close(self):
            events.append("closed")

    with pytest.raises(RuntimeError, match="boom"):
        fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 1, callbacks=[Boom()], verbose=0)
    assert events == ["closed"]
    with pytest.raises(TypeError, match="Callback instances"):
        fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 1, callbacks=[Callback, print], verbose=0)


def test_fit_regression_with_r2_and_mae():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(80, 4)).astype(np.float32)
    y = (x @ np.array([[1.0], [-2.0], [0.5], [0.0]])).astype(np.float32)
    model = gf.Sequential(L.Linear(4, 1, rng=0))
    history = fit(model, MSE(), Adam(model, lr=0.05), (x, y), 15, validation=(x, y), metrics=["mae", "r2"], verbose=0)
    assert history.last("val_r2") > 0.95
    assert history.last("val_mae") < history["val_mae"][0]


# -- progress ------------------------------------------------------------------------------


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


def test_verbose_levels_print_one_line_per_epoch_or_nothing(capsys):
    x, y = blobs(40)
    model = mlp()
    fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 2, verbose=2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2  loss ")
    fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 2, verbose=0)
    assert capsys.readouterr().out == ""
    assert resolve_verbose("auto", io.StringIO()) == 2  # not a terminal: lines, no bar redraws
    assert resolve_verbose("auto", FakeTerminal()) == 1
    assert resolve_verbose(False) == 0
    with pytest.raises(ValueError, match="verbose"):
        resolve_verbose(3)


def test_the_bar_shows_the_loss_on_a_terminal_and_lines_without_tqdm(monkeypatch):
    pytest.importorskip("tqdm")
    x, y = blobs(40)
    model = mlp()
    stream = FakeTerminal()
    bar = Progress(1, stream=stream, refresh_seconds=0.0)
    assert bar.uses_bar
    fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 2, metrics=["accuracy"], callbacks=[bar], verbose=0)
    text = stream.getvalue()
    assert "epoch 2/2" in text and "loss" in text and "accuracy" in text and "batch" in text
    import gradflow.progress as progress

    monkeypatch.setattr(progress, "_tqdm", lambda: None)
    stream = FakeTerminal()
    lines = Progress(1, stream=stream)
    assert not lines.uses_bar
    fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 2, callbacks=[lines], verbose=0)
    assert stream.getvalue().count("\n") == 2


def test_empty_epochs_and_bad_arguments():
    x, y = blobs(20)
    model = mlp()
    assert dict(fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 0, verbose=0)) == {}
    with pytest.raises(ValueError, match="epochs must be"):
        fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), -1)
    with pytest.raises(TypeError, match="BatchIterator"):
        fit(model, SoftmaxCrossEntropy(), Adam(model), x, 1)


def test_history_pads_a_late_key_with_nan():
    history = History()
    history.append(1, {"loss": 1.0})
    history.append(2, {"loss": 0.5, "extra": 3.0})
    assert math.isnan(history["extra"][0]) and history["extra"][1] == 3.0
    assert History.from_dict(history.to_dict()).epochs == [1, 2]


def test_float64_models_train_on_float64_batches():
    x, y = blobs(40)
    model = mlp().to(dtype="float64")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = fit(model, SoftmaxCrossEntropy(), Adam(model), (x, y), 1, verbose=0)
    assert predict(model, x).dtype == np.float64
    assert math.isfinite(history["loss"][0])
    assert backend.dtype_name(model.dtype) == "float64"


def test_early_stopping_starts_afresh_in_a_new_fit_but_keeps_a_resumed_state(tmp_path):
    x, y = blobs(40)
    model = mlp()
    stopper = EarlyStopping(monitor="loss", patience=1, verbose=False)
    stopper._tracker.best, stopper.wait = -1.0, 5  # stale state, as if left by an earlier fit
    history = fit(model, SoftmaxCrossEntropy(), Adam(model, lr=0.01), (x, y), 3, callbacks=[stopper], verbose=0)
    assert len(history["loss"]) == 3 and stopper.best == pytest.approx(history["loss"][-1])
    path = tmp_path / "es.safetensors"
    fit(model, SoftmaxCrossEntropy(), Adam(model, lr=0.01), (x, y), 1, verbose=0,
        callbacks=[EarlyStopping(monitor="loss"), ModelCheckpoint(path)])
    resumed, fresh = EarlyStopping(monitor="loss"), mlp()
    fit(fresh, SoftmaxCrossEntropy(), Adam(fresh, lr=0.01), (x, y), 1, verbose=0, resume=path,
        callbacks=[resumed, ModelCheckpoint(path)])
    assert resumed.best is not None and resumed.best_epoch == 1  # restored, not reset by on_train_begin
