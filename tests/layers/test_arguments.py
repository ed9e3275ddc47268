"""Issue 13: constructor arguments that cannot be meant raise an error naming the class, the
argument and the value, for every public constructor (checked by name: gradflow.validation)."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest

import gradflow as gf
from gradflow import callbacks as C
from gradflow import layers as L
from gradflow import losses as Lo
from gradflow import optim as O
from gradflow.data import BatchIterator
from gradflow.precision import LossScaler
from gradflow.validation import CHECKS

REQUIRED = {"in_features": 4, "out_features": 3, "num_features": 4, "in_channels": 2, "out_channels": 2,
            "kernel_size": 2, "num_groups": 2, "num_channels": 4, "embed_dim": 4, "num_heads": 2, "p": 0.5,
            "num_embeddings": 5, "dim": 4, "max_len": 8, "input_size": 3, "hidden_size": 4,
            "normalized_shape": 4, "lr": 0.1, "total_steps": 10, "step_size": 2, "max_lr": 0.1, "after": 0.1,
            "warmup_steps": 2, "x": np.ones((4, 2), np.float32), "y": np.zeros(4, np.int64), "path": "unused.csv",
            "shape": (2, 2), "gamma": 0.5}


def constructors():
    found = [getattr(L, name) for name in L.__all__]
    found += [Lo.BCEWithLogits, Lo.Huber, Lo.L1, Lo.MSE, Lo.NLL, Lo.SoftmaxCrossEntropy]
    found += [O.Adagrad, O.Adam, O.AdamW, O.RMSprop, O.SGD]
    found += [O.CosineAnnealing, O.ExponentialLR, O.LinearWarmup, O.OneCycle, O.ReduceLROnPlateau, O.StepLR]
    found += [C.EarlyStopping, C.CSVLogger, C.JSONLogger, C.ModelCheckpoint, LossScaler, BatchIterator]
    return found


def build(cls, **given):
    signature = inspect.signature(cls.__init__)
    args = {name: REQUIRED.get(name, 4) for name, p in signature.parameters.items()
            if name != "self" and p.default is inspect.Parameter.empty
            and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name != "params"}
    args.update(given)
    if issubclass(cls, O.Optimizer):
        return cls(L.Linear(2, 2), **args)
    return cls(**args)


CASES = [(cls, name) for cls in constructors() for name in inspect.signature(cls.__init__).parameters
         if name in CHECKS]


@pytest.mark.parametrize("cls, name", CASES, ids=[f"{c.__name__}-{n}" for c, n in CASES])
@pytest.mark.parametrize("bad", [math.nan, "junk", [1, 2]], ids=["nan", "str", "list"])
def test_every_checked_argument_is_refused_with_its_name(cls, name, bad):
    if (isinstance(bad, str) and name in ("monitor", "path")) or (isinstance(bad, list) and name == "normalized_shape"):
        pytest.skip(f"{bad!r} is a valid {name}")
    build(cls)  # the valid call works
    # the constructor's own message, or the shared one (gradflow.validation): either names the argument
    with pytest.raises((TypeError, ValueError), match=rf"\b{name}\b"):
        build(cls, **{name: bad})


@pytest.mark.parametrize("call, message", [
    (lambda: L.BatchNorm1d(4, eps=math.inf), r"BatchNorm1d: eps must be in \(0, inf\), got inf"),
    (lambda: O.Adam(L.Linear(2, 2), eps=math.inf), r"Adam: eps must be in \(0, inf\), got inf"),
    (lambda: L.MultiHeadAttention(4, 2, dropout=-0.1), r"MultiHeadAttention: dropout must be in \[0, 1\), got -0.1"),
    (lambda: L.TransformerEncoderBlock(4, 2, attention_dropout=-0.5), r"TransformerEncoderBlock: attention_dropout must be"),
    (lambda: L.LSTM(2, 3, forget_bias=math.nan), r"LSTM: forget_bias must be a finite number, got nan"),
    (lambda: L.TransformerEncoderBlock(math.nan, 2), r"TransformerEncoderBlock: embed_dim must be an int >= 1, got nan"),
    (lambda: L.TransformerEncoderBlock(4, 2, mlp_ratio=math.inf), r"TransformerEncoderBlock: mlp_ratio must be"),
    (lambda: L.Linear(2, 2, bias="yes"), r"Linear: bias must be True or False, got 'yes'"),
    (lambda: L.Linear(2, 2, dtype="float8"), r"dtype 'float8'"),
    (lambda: L.Linear(2, 2, activation="tanh"),
     r"Linear: activation must be one of \(None, 'relu', 'gelu', 'gelu_tanh'\), got 'tanh'"),
    (lambda: L.LayerNorm(math.nan), r"LayerNorm: normalized_shape must be a positive int or a tuple of them"),
    (lambda: Lo.Huber(delta="1"), r"Huber: delta must be a number, got str \'1\' \(expected in \(0, inf\)\)"),
    (lambda: Lo.SoftmaxCrossEntropy(label_smoothing=None), r"SoftmaxCrossEntropy: label_smoothing must be"),
    (lambda: LossScaler(initial=math.inf), r"LossScaler: initial must be in \(0, inf\), got inf"),
    (lambda: LossScaler(growth_interval=math.inf), r"LossScaler: growth_interval must be an int >= 1"),
    (lambda: O.StepLR(math.inf, 2), r"StepLR: lr must be in \[0, inf\), got inf"),
    (lambda: C.EarlyStopping(monitor=None), r"EarlyStopping: monitor must be a non-empty string, got None"),
    (lambda: C.CSVLogger(None), r"CSVLogger: path must be a file path"),
    (lambda: BatchIterator(np.ones((4, 2)), seed=-1), r"BatchIterator: seed must be an int >= 0, got -1"),
    (lambda: BatchIterator(np.ones((4, 2)), shuffle="no"), r"BatchIterator: shuffle must be True or False"),
    (lambda: gf.device("auto:junk"), r"unknown device 'auto:junk': 'auto' takes no index"),
    (lambda: gf.device("cpu").send(None), r"Device.send: x must be an array or nested lists of numbers, got NoneType"),
    (lambda: gf.device("cpu").send(["a"]), r"Device.send: x must be .*got list of dtype <U1"),
])
def test_values_that_cannot_be_meant_are_refused(call, message):
    with pytest.raises((TypeError, ValueError), match=message):
        call()


def test_digits_refuses_a_test_fraction_that_leaves_no_training_images():
    pytest.importorskip("sklearn")
    from gradflow.datasets import digits

    with pytest.raises(ValueError, match=r"digits: test_fraction=0.9999 leaves a class with no training"):
        digits(test_fraction=0.9999)
    with pytest.raises(ValueError, match=r"digits: test_fraction must be in \(0, 1\), got nan"):
        digits(test_fraction=math.nan)


def test_defaults_and_numpy_values_are_still_accepted():
    L.Linear(2, 2, dtype=np.float64)
    L.BatchNorm1d(4, eps=1e-3)
    O.Adam(L.Linear(2, 2), lr=O.StepLR(0.1, 2))
    L.LayerNorm((2, 3))


def test_messages_do_not_contradict_themselves_for_numpy_scalars_and_memmaps(tmp_path):
    layer = L.Linear(2, 2, rng=0)
    memmap = np.memmap(tmp_path / "x.dat", dtype=np.float32, mode="w+", shape=(3, 2))
    y, backprop = layer(memmap, train=True)
    delta = np.memmap(tmp_path / "d.dat", dtype=np.float32, mode="w+", shape=(3, 2))
    assert backprop(delta).shape == (3, 2)  # a memmap δ is a NumPy array like any other
    with pytest.raises(ValueError, match=r"expected input with at least 1 axes, got shape \(\)"):
        layer(np.float32(2.0))
    with pytest.raises(ValueError, match=r"MSE: expected target of shape \(2,\)"):
        Lo.MSE()(np.ones(2, np.float32), np.float32(2.0))
