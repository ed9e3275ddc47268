"""Optimizers, gradient clipping and learning-rate schedules."""

from .base import Optimizer
from .clip import clip_grad_norm, clip_grad_value, global_grad_norm
from .optimizers import SGD, Adagrad, Adam, AdamW, RMSprop
from .schedules import CosineAnnealing, ExponentialLR, LinearWarmup, OneCycle, ReduceLROnPlateau, Schedule, StepLR

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad",
           "clip_grad_norm", "clip_grad_value", "global_grad_norm",
           "Schedule", "StepLR", "ExponentialLR", "CosineAnnealing", "LinearWarmup", "OneCycle",
           "ReduceLROnPlateau"]
