"""Optimizers, gradient clipping and learning-rate schedules."""

from .base import Optimizer, weight_decay_groups
from .clip import clip_grad_norm, clip_grad_value, global_grad_norm
from .flat import FlatBuffer
from .optimizers import (OPTIMIZERS, SGD, Adadelta, Adagrad, Adam, Adamax, AdamW, Lion, NAdam, RAdam, RMSprop,
                         optimizer_class)
from .schedules import (CosineAnnealing, CosineAnnealingWarmRestarts, CyclicLR, ExponentialLR, LinearWarmup, MultiStepLR,
                        OneCycle, PolynomialLR, ReduceLROnPlateau, Schedule, SequentialLR, StepLR)

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Adamax", "Adadelta",
           "Lion", "OPTIMIZERS", "optimizer_class", "weight_decay_groups", "FlatBuffer",
           "clip_grad_norm", "clip_grad_value", "global_grad_norm",
           "Schedule", "StepLR", "MultiStepLR", "ExponentialLR", "PolynomialLR", "CosineAnnealing",
           "CosineAnnealingWarmRestarts", "CyclicLR", "LinearWarmup", "OneCycle", "ReduceLROnPlateau", "SequentialLR"]
