"""Architectures as JSON configs: gf.save(model, path, architecture=True) / gf.load_model(path), and
gf.save in torch.save's argument order."""

from __future__ import annotations

import json

import numpy as np
import pytest

import gradflow as gf
from gradflow import layers as L
from gradflow.config import ConfigError, from_config, register, to_config

pytest.importorskip("safetensors")


def build():
    return gf.Sequential(
        L.Conv2d(1, 4, 3, padding="same", rng=0), L.ReLU(), L.MaxPool2d(2),
        gf.Residual(gf.Sequential(L.Conv2d(4, 4, 3, padding=1, rng=1), L.Tanh())),
        L.Flatten(), L.Dropout(0.25), L.Linear(4 * 4 * 4, 3, rng=np.random.default_rng(2)))


def test_a_model_saved_with_its_architecture_loads_without_the_building_code(tmp_path):
    model = build()
    x = np.random.default_rng(0).normal(size=(2, 1, 8, 8)).astype(np.float32)
    path = gf.save(model, tmp_path / "model.safetensors", architecture=True)   # torch.save's order
    saved = gf.checkpoint.read(path).metadata["architecture"]
    json.dumps(saved)  # plain JSON
    assert saved["config"]["class"] == "Sequential" and saved["dtype"] == "float32"
    loaded = gf.load_model(path)
    assert repr(loaded) == repr(model)
    np.testing.assert_array_equal(gf.to_numpy(loaded.predict(x)), gf.to_numpy(model.predict(x)))


def test_float64_models_come_back_in_float64(tmp_path):
    model = gf.Sequential(L.Linear(3, 2, rng=0)).to(dtype="float64")
    loaded = gf.load_model(gf.save(model, tmp_path / "m.safetensors", architecture=True))
    assert gf.backend.dtype_name(loaded.dtype) == "float64"
    np.testing.assert_array_equal(gf.to_numpy(loaded[0].weight.value), gf.to_numpy(model[0].weight.value))


def test_both_argument_orders_save_the_same_and_a_wrong_pair_is_named(tmp_path):
    model = gf.Sequential(L.Linear(3, 2, rng=0))
    a = gf.save(model, tmp_path / "a.safetensors")
    b = gf.save(tmp_path / "b.safetensors", model)
    assert gf.checkpoint.read(a).model_state.keys() == gf.checkpoint.read(b).model_state.keys()
    with pytest.raises(TypeError, match="expected a model and a path"):
        gf.save(model, model)


def test_a_checkpoint_without_architecture_says_how_to_load_it(tmp_path):
    path = gf.save(gf.Sequential(L.Linear(3, 2, rng=0)), tmp_path / "w.safetensors")
    with pytest.raises(ConfigError, match="architecture=True"):
        gf.load_model(path)


def test_unregistered_layers_are_refused_and_registered_ones_round_trip():
    class Doubler(gf.Layer):
        def __init__(self, factor: float = 2.0):
            super().__init__()
            self.factor = factor

        def forward(self, x, train):
            return x * self.factor, lambda dy: dy * self.factor

    with pytest.raises(ConfigError, match="Doubler is not registered"):
        to_config(gf.Sequential(Doubler()))
    register(Doubler, name="test_config.Doubler")
    config = to_config(gf.Sequential(Doubler(factor=3.0), L.ReLU()))
    rebuilt = from_config(json.dumps(config))
    assert rebuilt[0].factor == 3.0 and isinstance(rebuilt[1], L.ReLU)


def test_an_unknown_class_in_a_config_names_the_registry():
    with pytest.raises(ConfigError, match="unknown layer class 'NoSuchLayer'"):
        from_config({"class": "NoSuchLayer", "args": [], "kwargs": {}})


def test_evaluate_with_metrics_only_needs_no_loss():
    from gradflow.losses import SoftmaxCrossEntropy
    from gradflow.train import evaluate

    model = gf.Sequential(L.Linear(4, 3, rng=0))
    x = np.random.default_rng(0).normal(size=(20, 4))   # float64: evaluate casts host inputs
    y = np.arange(20) % 3
    with_loss = evaluate(model, SoftmaxCrossEntropy(), (x, y), metrics=["accuracy"])
    only = evaluate(model, (x, y), metrics=["accuracy"])
    assert set(only) == {"accuracy"} and only["accuracy"] == with_loss["accuracy"]
    assert evaluate(model, data=(x, y), metrics=["accuracy"]) == only
    with pytest.raises(TypeError, match="missing data"):
        evaluate(model)


def test_a_float64_input_to_a_float32_model_says_how_to_cast():
    model = gf.Sequential(L.Linear(4, 3, rng=0))
    x = gf.device("cpu").send(np.zeros((2, 4)), "float64")
    with pytest.raises(TypeError, match=r"x.astype\(np.float32\).*model.to\(dtype='float64'\)"):
        model(x)
