"""Metrics accumulate on the device over batches and agree with scikit-learn's definitions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gradflow import backend, metrics

sk = pytest.importorskip("sklearn.metrics")


def _batches(*arrays, size=7):
    n = len(arrays[0])
    for start in range(0, n, size):
        yield tuple(a[start:start + size] for a in arrays)


def _accumulate(metric, device, output, target, size=7, dtype="float32"):
    metric.reset()
    for out, tgt in _batches(output, target, size=size):
        metric.update(device.send(out, dtype), device.send(tgt, None if tgt.dtype.kind in "iu" else dtype))
    return metric.result()


@pytest.fixture
def classification():
    rng = np.random.default_rng(3)
    logits = rng.normal(size=(45, 6))
    labels = rng.integers(0, 6, size=45)
    labels[:3] = 5  # class 4 may be absent from predictions or labels: macro averaging must cope
    return logits, labels


def test_classification_metrics_match_scikit_learn_on_every_device(device, classification):
    logits, labels = classification
    predicted = logits.argmax(axis=1)
    expected = {
        "accuracy": sk.accuracy_score(labels, predicted),
        "precision": sk.precision_score(labels, predicted, average="macro", zero_division=0),
        "recall": sk.recall_score(labels, predicted, average="macro", zero_division=0),
        "f1": sk.f1_score(labels, predicted, average="macro", zero_division=0),
        "top3_accuracy": sk.top_k_accuracy_score(labels, logits, k=3, labels=np.arange(6)),
    }
    for name, value in expected.items():
        got = _accumulate(metrics.get(name), device, logits, labels, dtype="float64")
        assert got == pytest.approx(value, abs=1e-12), name


def test_macro_scores_ignore_classes_absent_from_targets_and_predictions(device):
    logits = np.eye(4)[[0, 0, 1, 1]] * 5.0  # predicts classes 0 and 1 only; 4 classes exist
    labels = np.array([0, 1, 1, 1])
    for name, function in (("precision", sk.precision_score), ("recall", sk.recall_score), ("f1", sk.f1_score)):
        expected = function(labels, logits.argmax(1), average="macro", zero_division=0)
        assert _accumulate(metrics.get(name), device, logits, labels) == pytest.approx(expected), name


def test_accuracy_with_one_hot_targets_and_with_single_logit_binary_outputs(device):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(20, 3))
    labels = rng.integers(0, 3, size=20)
    one_hot = np.eye(3)[labels]
    assert _accumulate(metrics.Accuracy(), device, logits, one_hot) == pytest.approx(
        np.mean(logits.argmax(1) == labels))
    binary_logits = rng.normal(size=(20, 1))
    binary = (rng.random((20, 1)) > 0.5).astype(np.float64)
    expected = np.mean((binary_logits > 0) == (binary > 0.5))
    assert _accumulate(metrics.Accuracy(), device, binary_logits, binary) == pytest.approx(expected)
    f1 = _accumulate(metrics.F1(), device, binary_logits, binary)
    assert f1 == pytest.approx(sk.f1_score(binary.ravel(), (binary_logits > 0).ravel(), average="macro"))


def test_regression_metrics_match_scikit_learn_on_every_device(device):
    rng = np.random.default_rng(1)
    target = rng.normal(loc=1000.0, scale=2.0, size=(40, 3))  # a large mean: R² must not cancel
    output = target + rng.normal(scale=0.5, size=(40, 3))
    assert _accumulate(metrics.get("mse"), device, output, target, dtype="float64") == pytest.approx(
        sk.mean_squared_error(target, output), rel=1e-12)
    assert _accumulate(metrics.get("mae"), device, output, target, dtype="float64") == pytest.approx(
        sk.mean_absolute_error(target, output), rel=1e-12)
    assert _accumulate(metrics.get("r2"), device, output, target, dtype="float64") == pytest.approx(
        sk.r2_score(target, output), rel=1e-9)
    flat_target, flat_output = target[:, 0], output[:, 0]
    assert _accumulate(metrics.R2(), device, flat_output, flat_target, size=6, dtype="float64") == pytest.approx(
        sk.r2_score(flat_target, flat_output), rel=1e-9)


def test_r2_of_a_constant_target_follows_scikit_learn():
    cpu = backend.device("cpu")
    constant = np.full(10, 3.0)
    assert _accumulate(metrics.R2(), cpu, constant, constant) == 1.0
    assert _accumulate(metrics.R2(), cpu, constant + 1.0, constant) == 0.0


def test_fetch_moves_every_metric_and_the_loss_in_one_transfer(monkeypatch, classification):
    logits, labels = classification
    cpu = backend.device("cpu")
    chosen = [metrics.get(n) for n in ("accuracy", "f1", "top2_accuracy", "precision")]
    for metric in chosen:
        for out, tgt in _batches(logits, labels):
            metric.update(cpu.send(out, "float32"), cpu.send(tgt))
    calls = []
    original = backend.to_numpy
    monkeypatch.setattr(backend, "to_numpy", lambda x: calls.append(1) or original(x))
    loss_total = cpu.send(np.array(12.5), "float32")
    results = metrics.fetch(chosen, extra=[loss_total])
    assert len(calls) == 1
    assert results["extra"] == [12.5]
    assert set(results) == {"accuracy", "f1", "top2_accuracy", "precision", "extra"}


def test_a_metric_with_no_updates_is_nan():
    assert math.isnan(metrics.Accuracy().result())


def test_get_rejects_unknown_names_and_parses_top_k():
    assert metrics.get("top7_accuracy").k == 7
    assert metrics.get("top_k_accuracy").k == 5
    with pytest.raises(ValueError, match="unknown metric 'auc'"):
        metrics.get("auc")
    with pytest.raises(ValueError, match="k must be a positive int"):
        metrics.TopKAccuracy(0)


def test_metrics_reject_targets_of_the_wrong_shape():
    cpu = backend.device("cpu")
    with pytest.raises(ValueError, match="does not fit target"):
        metrics.Accuracy().update(cpu.send(np.zeros((4, 3)), "float32"), cpu.send(np.zeros((4, 2)), "float32"))
    with pytest.raises(ValueError, match="expected target of shape"):
        metrics.MeanSquaredError().update(cpu.send(np.zeros((4, 3)), "float32"), cpu.send(np.zeros(4), "float32"))


def test_mode_of_names_the_better_direction():
    assert metrics.mode_of("val_loss") == "min"
    assert metrics.mode_of("val_accuracy") == "max"
    assert metrics.mode_of("top5_accuracy") == "max"
    assert metrics.mode_of("mae") == "min"
    assert metrics.mode_of("r2") == "max"
