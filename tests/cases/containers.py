"""Cases for the containers (Sequential, Residual, Concat), with NumPy float64 references."""

from __future__ import annotations

import numpy as np

import gradflow as gf
from gradflow import layers as L
from tests.cases import LayerCase

RNG = np.random.default_rng(11)
X = RNG.normal(size=(5, 4))


def _mlp(p, x):
    return np.tanh(x @ p["0.weight"].T + p["0.bias"]) @ p["2.weight"].T + p["2.bias"]


def _concat(p, x):
    return np.concatenate([x @ p["branches.0.weight"].T + p["branches.0.bias"], np.tanh(x)], axis=-1)


LAYER_CASES = [
    LayerCase("sequential_mlp", lambda: gf.Sequential(L.Linear(4, 6, rng=3), L.Tanh(), L.Linear(6, 3, rng=4)), X, _mlp,
              bad_inputs=[
                  ("wrong feature size reaches the first layer", np.ones((5, 3)), ValueError,
                   r"Linear\(in_features=4.*expected input with 4 features.*got shape \(5, 3\)"),
                  ("0-d input", np.array(1.0), ValueError, r"Linear.*at least 1 axes.*got shape \(\)"),
              ]),
    LayerCase("residual_tanh", lambda: gf.Residual(gf.Sequential(L.Linear(4, 4, rng=5), L.Tanh())), X,
              lambda p, x: x + np.tanh(x @ p["body.0.weight"].T + p["body.0.bias"]),
              bad_inputs=[
                  ("wrong feature size", np.ones((5, 6)), ValueError, r"Linear\(in_features=4.*got shape \(5, 6\)"),
              ]),
    LayerCase("residual_flatten", lambda: gf.Residual(L.Flatten()), X, lambda p, x: 2 * x,
              bad_inputs=[
                  ("body changes the shape", np.ones((5, 4, 1)), ValueError,
                   r"Residual: the body Flatten\(\) changed the shape from \(5, 4, 1\) to \(5, 4\)"),
              ]),
    LayerCase("concat_linear_tanh", lambda: gf.Concat(L.Linear(4, 2, rng=7), L.Tanh()), X, _concat,
              bad_inputs=[
                  ("wrong feature size", np.ones((5, 2)), ValueError, r"Linear\(in_features=4.*got shape \(5, 2\)"),
              ]),
]
