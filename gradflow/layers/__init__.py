"""Layers: each file holds a layer's forward and δ-backward side by side."""

from .activations import ELU, GELU, LeakyReLU, LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Tanh
from .linear import Flatten, Identity, Linear, Reshape

__all__ = [
    "ELU", "GELU", "LeakyReLU", "LogSoftmax", "ReLU", "Sigmoid", "SiLU", "Softmax", "Tanh",
    "Flatten", "Identity", "Linear", "Reshape",
]

# Vision: convolutions, pooling, batch and group normalisation (channels first, as PyTorch).
from .batch_norm import BatchNorm1d, BatchNorm2d
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d
from .group_norm import GroupNorm, InstanceNorm1d, InstanceNorm2d
from .pool import (AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveMaxPool1d, AdaptiveMaxPool2d, AvgPool1d, AvgPool2d,
                   GlobalAvgPool, MaxPool1d, MaxPool2d, MaxUnpool1d, MaxUnpool2d)

__all__ += [
    "BatchNorm1d", "BatchNorm2d", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d",
    "ConvTranspose3d", "GroupNorm", "InstanceNorm1d", "InstanceNorm2d",
    "AdaptiveAvgPool1d", "AdaptiveAvgPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
    "AvgPool1d", "AvgPool2d", "GlobalAvgPool", "MaxPool1d", "MaxPool2d", "MaxUnpool1d", "MaxUnpool2d",
]

# Sequence models (issue 4): dropout, layer norm, embeddings, recurrent layers, attention.
from .attention import MultiHeadAttention
from .dropout import Dropout
from .embedding import Embedding
from .layer_norm import LayerNorm, RMSNorm
from .positional import LearnedPositionalEncoding, SinusoidalPositionalEncoding
from .recurrent import GRU, LSTM, RNN, GRUCell, LSTMCell, RNNCell
from .transformer import TransformerDecoderBlock, TransformerEncoderBlock

__all__ += [
    "MultiHeadAttention", "Dropout", "Embedding", "LayerNorm", "RMSNorm", "LearnedPositionalEncoding",
    "SinusoidalPositionalEncoding", "GRU", "LSTM", "RNN", "GRUCell", "LSTMCell", "RNNCell",
    "TransformerDecoderBlock", "TransformerEncoderBlock",
]
