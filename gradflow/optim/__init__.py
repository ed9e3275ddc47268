"""Optimizers, gradient clipping and learning-rate schedules."""

from .base import Optimizer
from .clip import clip_grad_norm, clip_grad_value, global_grad_norm
from .optimizers import SGD, Adagrad, Adam, AdamW, RMSprop

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad",
           "clip_grad_norm", "clip_grad_value", "global_grad_norm"]
