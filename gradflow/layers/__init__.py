"""Layers: each file holds a layer's forward and δ-backward side by side."""

from .activations import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from .linear import Flatten, Identity, Linear, Reshape

__all__ = [
    "ELU", "GELU", "LeakyReLU", "LogSoftmax", "ReLU", "Sigmoid", "SiLU", "Softmax", "Tanh",
    "Flatten", "Identity", "Linear", "Reshape",
]
