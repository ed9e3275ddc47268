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


# -- issue 14: reduction="none", class weights, pos_weight, BCE on probabilities, KL divergence ---
WEIGHT = np.array([0.5, 2.0, 1.0, 3.0])
POS_WEIGHT = np.array([0.5, 1.0, 2.0, 3.0, 4.0])
LOG_P = _log_softmax(LOGITS)
PROBS = 1 / (1 + np.exp(-PRED))
BINARY = (TARGET > 0).astype(float)


def _softplus(z):
    return np.logaddexp(0, z)


def _weighted_ce(z, t, w=WEIGHT):
    picked = -_log_softmax(z)[np.arange(len(t)), t] * w[t]
    return float(picked.sum() / w[t].sum())


def _kl(log_p, t):
    return np.where(t > 0, t * (np.log(np.where(t > 0, t, 1.0)) - log_p), 0.0)


SOFT_WITH_ZERO = SOFT.copy()
SOFT_WITH_ZERO[0] = [0.0, 0.5, 0.5, 0.0]

LOSS_CASES += [
    LossCase("cross_entropy_none", lambda: losses.SoftmaxCrossEntropy(reduction="none"), LOGITS, LABELS,
             lambda z, t: -_log_softmax(z)[np.arange(len(t)), t]),
    LossCase("cross_entropy_soft_none", lambda: losses.SoftmaxCrossEntropy(reduction="none"), LOGITS, SOFT,
             lambda z, q: -(q * _log_softmax(z)).sum(-1)),
    LossCase("cross_entropy_weight", lambda: losses.SoftmaxCrossEntropy(weight=WEIGHT), LOGITS, LABELS, _weighted_ce),
    LossCase("cross_entropy_weight_ignore_index", lambda: losses.SoftmaxCrossEntropy(weight=WEIGHT, ignore_index=3),
             LOGITS, LABELS, lambda z, t: _weighted_ce(z[t != 3], t[t != 3])),
    LossCase("cross_entropy_weight_soft", lambda: losses.SoftmaxCrossEntropy(weight=WEIGHT), LOGITS, SOFT,
             lambda z, q: float(-(WEIGHT * q * _log_softmax(z)).sum(-1).mean())),
    LossCase("nll_weight", lambda: losses.NLL(weight=WEIGHT), LOG_P, LABELS,
             lambda z, t: float((-z[np.arange(len(t)), t] * WEIGHT[t]).sum() / WEIGHT[t].sum())),
    LossCase("nll_none", lambda: losses.NLL(reduction="none"), LOG_P, LABELS, lambda z, t: -z[np.arange(len(t)), t]),
    LossCase("mse_none", lambda: losses.MSE(reduction="none"), PRED, TARGET, lambda y, t: (y - t) ** 2),
    LossCase("bce_with_logits_pos_weight", lambda: losses.BCEWithLogits(pos_weight=POS_WEIGHT), PRED * 3, BINARY,
             lambda z, t: float((POS_WEIGHT * t * _softplus(-z) + (1 - t) * _softplus(z)).mean())),
    LossCase("bce_with_logits_pos_weight_scalar_none", lambda: losses.BCEWithLogits(pos_weight=2.5, reduction="none"),
             PRED, PROBS, lambda z, t: 2.5 * t * _softplus(-z) + (1 - t) * _softplus(z)),
    LossCase("bce", losses.BCE, PROBS, BINARY, lambda y, t: float(-(t * np.log(y) + (1 - t) * np.log1p(-y)).mean())),
    LossCase("bce_soft_sum", lambda: losses.BCE(reduction="sum"), PROBS, 1 / (1 + np.exp(-TARGET)),
             lambda y, t: float(-(t * np.log(y) + (1 - t) * np.log1p(-y)).sum())),
    LossCase("kl_divergence", losses.KLDivergence, LOG_P, SOFT_WITH_ZERO, lambda x, t: float(_kl(x, t).sum() / len(x))),
    LossCase("kl_divergence_mean", lambda: losses.KLDivergence(reduction="mean"), LOG_P, SOFT,
             lambda x, t: float(_kl(x, t).mean())),
    LossCase("kl_divergence_log_target_none", lambda: losses.KLDivergence(reduction="none", log_target=True), LOG_P,
             np.log(SOFT), lambda x, lt: np.exp(lt) * (lt - x)),
]
