"""Cases for the losses, with NumPy float64 references written from their definitions."""

from __future__ import annotations

import numpy as np

from gradflow import losses
from tests.cases import LossCase

RNG = np.random.default_rng(7)
LOGITS = RNG.normal(size=(6, 4)) * 2
LABELS = np.array([0, 3, 1, 2, 3, 0])
SOFT = RNG.dirichlet(np.ones(4), size=6)
PRED = RNG.normal(size=(3, 5))
TARGET = RNG.normal(size=(3, 5))


def _log_softmax(z):
    shifted = z - z.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _ce(z, q):
    return float(-(q * _log_softmax(z)).sum(-1).mean())


def _one_hot(labels, classes=4):
    return np.eye(classes)[labels]


def _huber(r, d=1.0):
    a = np.abs(r)
    return np.where(a <= d, 0.5 * r * r, d * (a - 0.5 * d))


LOSS_CASES = [
    LossCase("cross_entropy_labels", losses.SoftmaxCrossEntropy, LOGITS, LABELS, lambda z, t: _ce(z, _one_hot(t))),
    LossCase("cross_entropy_one_hot", losses.SoftmaxCrossEntropy, LOGITS, _one_hot(LABELS), _ce),
    LossCase("cross_entropy_soft", losses.SoftmaxCrossEntropy, LOGITS, SOFT, _ce),
    LossCase("cross_entropy_smoothing", lambda: losses.SoftmaxCrossEntropy(label_smoothing=0.2), LOGITS, LABELS,
             lambda z, t: _ce(z, 0.8 * _one_hot(t) + 0.2 / 4)),
    LossCase("cross_entropy_sum", lambda: losses.SoftmaxCrossEntropy(reduction="sum"), LOGITS, LABELS,
             lambda z, t: _ce(z, _one_hot(t)) * len(t)),
    LossCase("cross_entropy_sequence", losses.SoftmaxCrossEntropy, LOGITS.reshape(2, 3, 4), LABELS.reshape(2, 3),
             lambda z, t: _ce(z.reshape(6, 4), _one_hot(t.reshape(6)))),
    LossCase("cross_entropy_ignore_index", lambda: losses.SoftmaxCrossEntropy(ignore_index=3), LOGITS, LABELS,
             lambda z, t: _ce(z[t != 3], _one_hot(t[t != 3]))),
    LossCase("nll", losses.NLL, _log_softmax(LOGITS), LABELS, lambda z, t: float(-z[np.arange(len(t)), t].mean())),
    LossCase("mse", losses.MSE, PRED, TARGET, lambda y, t: float(((y - t) ** 2).mean())),
    LossCase("mse_sum", lambda: losses.MSE(reduction="sum"), PRED, TARGET, lambda y, t: float(((y - t) ** 2).sum())),
    LossCase("l1", losses.L1, PRED, TARGET, lambda y, t: float(np.abs(y - t).mean())),
    LossCase("huber", losses.Huber, PRED * 2, TARGET, lambda y, t: float(_huber(y - t).mean())),
    LossCase("huber_delta", lambda: losses.Huber(delta=0.5), PRED * 2, TARGET, lambda y, t: float(_huber(y - t, 0.5).mean())),
    LossCase("bce_with_logits", losses.BCEWithLogits, PRED * 3, (TARGET > 0).astype(float),
             lambda z, t: float((np.logaddexp(0, z) - z * t).mean())),
    LossCase("bce_with_logits_soft", losses.BCEWithLogits, PRED, 1 / (1 + np.exp(-TARGET)),
             lambda z, t: float((np.logaddexp(0, z) - z * t).mean())),
]
