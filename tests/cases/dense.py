"""Cases for Linear, shape layers and activations, with NumPy float64 references."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from gradflow import layers as L
from tests.cases import LayerCase

RNG = np.random.default_rng(42)
X = RNG.normal(size=(5, 4))
X3 = RNG.normal(size=(2, 3, 4))
X_AWAY_FROM_ZERO = np.where(np.abs(X) < 0.1, 0.3, X)  # keeps finite differences off the kinks


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _gelu(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def _gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


LAYER_CASES = [
    LayerCase("linear", lambda: L.Linear(4, 3, rng=0), X, lambda p, x: x @ p["weight"].T + p["bias"],
              bad_inputs=[
                  ("wrong feature size", np.ones((5, 7)), ValueError, r"Linear\(in_features=4.*expected input with 4 features.*got shape \(5, 7\)"),
                  ("integer input", np.ones((5, 4), dtype=np.int64), TypeError, r"Linear.*floating-point.*int64"),
                  ("complex input", np.ones((5, 4), dtype=np.complex128), TypeError, r"Linear.*floating-point.*complex"),
                  ("python list", [[1.0] * 4], TypeError, r"Linear.*expected an array.*list"),
              ]),
    LayerCase("linear_no_bias_3d", lambda: L.Linear(4, 2, bias=False, rng=1), X3, lambda p, x: x @ p["weight"].T),
    LayerCase("linear_he_normal", lambda: L.Linear(4, 6, init="he_normal", rng=2), X, lambda p, x: x @ p["weight"].T + p["bias"]),
    LayerCase("linear_relu", lambda: L.Linear(4, 3, activation="relu", rng=0), X,
              lambda p, x: np.maximum(x @ p["weight"].T + p["bias"], 0),
              bad_inputs=[("wrong feature size", np.ones((5, 7)), ValueError,
                           r"Linear\(in_features=4.*activation='relu'.*expected input with 4 features")]),
    LayerCase("linear_gelu_3d", lambda: L.Linear(4, 3, activation="gelu", rng=3), X3,
              lambda p, x: _gelu(x @ p["weight"].T + p["bias"])),
    LayerCase("linear_gelu_tanh_no_bias", lambda: L.Linear(4, 2, bias=False, activation="gelu_tanh", rng=4), X,
              lambda p, x: _gelu_tanh(x @ p["weight"].T)),
    LayerCase("identity", L.Identity, X, lambda p, x: x),
    LayerCase("flatten", L.Flatten, X3, lambda p, x: x.reshape(x.shape[0], -1)),
    LayerCase("reshape", lambda: L.Reshape(2, 6), X3, lambda p, x: x.reshape(x.shape[0], 2, 6), noncontiguous=False),
    LayerCase("relu", L.ReLU, X_AWAY_FROM_ZERO, lambda p, x: np.maximum(x, 0)),
    LayerCase("leaky_relu", lambda: L.LeakyReLU(0.1), X_AWAY_FROM_ZERO, lambda p, x: np.where(x > 0, x, 0.1 * x)),
    LayerCase("elu", lambda: L.ELU(0.7), X_AWAY_FROM_ZERO, lambda p, x: np.where(x > 0, x, 0.7 * np.expm1(x))),
    LayerCase("sigmoid", L.Sigmoid, X * 3, lambda p, x: _sigmoid(x)),
    LayerCase("tanh", L.Tanh, X, lambda p, x: np.tanh(x)),
    LayerCase("silu", L.SiLU, X, lambda p, x: x * _sigmoid(x)),
    LayerCase("gelu_exact", L.GELU, X * 2, lambda p, x: 0.5 * x * (1 + erf(x / math.sqrt(2)))),
    LayerCase("gelu_tanh", lambda: L.GELU("tanh"), X * 2,
              lambda p, x: 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))),
    LayerCase("softmax", L.Softmax, X, lambda p, x: _softmax(x)),
    LayerCase("softmax_axis1_3d", lambda: L.Softmax(axis=1), X3,
              lambda p, x: np.exp(x) / np.exp(x).sum(1, keepdims=True)),
    LayerCase("log_softmax", L.LogSoftmax, X, lambda p, x: np.log(_softmax(x))),
]
