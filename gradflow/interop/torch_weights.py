"""Weights to and from PyTorch state dicts.

gradflow keeps PyTorch's names and layouts wherever a layer has a PyTorch twin: Linear
``weight`` is (out_features, in_features), convolutions (out, in/groups, *kernel), RNN/LSTM/GRU
and their cells ``weight_ih_l{k}[_reverse]`` (G·H, in), ``weight_hh`` (G·H, H or proj_size),
``weight_hr`` (proj_size, H) with PyTorch's gate order (LSTM i, f, g, o; GRU r, z, n), norms
``weight``/``bias``/``running_mean``/``running_var``, Embedding ``weight`` (V, D). Those load by
name with :meth:`Layer.load_state_dict` directly. Where the layouts differ, this module converts:

==========================  ==================================================================
gradflow                    PyTorch
==========================  ==================================================================
MultiHeadAttention          ``qkv.weight``/``qkv.bias`` <-> ``in_proj_weight``/``in_proj_bias``,
                            ``out.*`` <-> ``out_proj.*``
TransformerEncoderBlock     ``attention.body.0`` <-> ``norm1``, ``attention.body.1`` <->
                            ``self_attn``, ``mlp.body.0`` <-> ``norm2``, ``mlp.body.1`` <->
                            ``linear1``, ``mlp.body.3`` <-> ``linear2`` (PyTorch's
                            ``TransformerEncoderLayer(norm_first=True, batch_first=True)``)
BatchNorm                   PyTorch's ``num_batches_tracked`` is read and ignored, and written
                            as 0 (gradflow's running averages use a fixed momentum)
==========================  ==================================================================

Containers keep their child names (``Sequential`` children ``0``, ``1``... as ``nn.Sequential``;
``Residual`` a child ``body``), so a PyTorch twin built with the same nesting maps key by key.
Anything this module cannot map raises :class:`InteropError` naming the key or the layer,
before any weight is assigned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import backend
from ..core import Layer

__all__ = ["InteropError", "load_torch_state_dict", "torch_state_dict", "torch_key_map"]


class InteropError(ValueError):
    """A state dict or a model that cannot be mapped between gradflow and PyTorch."""


@dataclass(frozen=True)
class _Entry:
    """One array: its gradflow key, its PyTorch key, and the layout conversions both ways."""

    ours: str
    theirs: str
    to_torch: Callable[[np.ndarray], np.ndarray]
    from_torch: Callable[[np.ndarray], np.ndarray]


def _same(a: np.ndarray) -> np.ndarray:
    return a


def _own_arrays(layer: Layer) -> list[str]:
    from ..core import Buffer, Parameter

    return [name for name, value in vars(layer).items() if isinstance(value, (Parameter, Buffer))]


def _entries_for(layer: Layer, prefix: str) -> tuple[list[_Entry], bool]:
    """The entries of ``layer``'s own arrays (and, for layers mapped as a whole, its children's),
    and whether its children are covered already."""
    from .. import layers as L

    kind = type(layer).__name__
    if isinstance(layer, (L.RNN, L.LSTM, L.GRU, L.RNNCell, L.LSTMCell, L.GRUCell)):
        return [_Entry(prefix + name, prefix + name, _same, _same) for name in _own_arrays(layer)], True
    if isinstance(layer, L.MultiHeadAttention):
        out = []
        pairs = [("qkv.weight", "in_proj_weight"), ("qkv.bias", "in_proj_bias"),
                 ("out.weight", "out_proj.weight"), ("out.bias", "out_proj.bias")]
        arrays = dict(layer.named_parameters())
        arrays.update(dict(layer.named_buffers()))
        mapped = {ours for ours, _ in pairs}
        unknown = sorted(set(arrays) - mapped)
        if unknown:
            raise InteropError(f"{layer.describe()} at {prefix or '(top)'}: no PyTorch name for {unknown}")
        for ours, theirs in pairs:
            if ours in arrays:
                out.append(_Entry(prefix + ours, prefix + theirs, _same, _same))
        return out, True
    if isinstance(layer, L.TransformerEncoderBlock):
        rename = {"attention.body.0.": "norm1.", "mlp.body.0.": "norm2.", "mlp.body.1.": "linear1.",
                  "mlp.body.3.": "linear2."}
        out = []
        attention = layer.attention.body[1]
        inner, _ = _entries_for(attention, prefix + "attention.body.1.")
        for entry in inner:
            out.append(_Entry(entry.ours, prefix + "self_attn." + entry.theirs[len(prefix + "attention.body.1."):],
                              entry.to_torch, entry.from_torch))
        for name, _ in list(layer.named_parameters()) + list(layer.named_buffers()):
            if name.startswith("attention.body.1."):
                continue
            for ours, theirs in rename.items():
                if name.startswith(ours):
                    out.append(_Entry(prefix + name, prefix + theirs + name[len(ours):], _same, _same))
                    break
            else:
                raise InteropError(f"{layer.describe()} at {prefix or '(top)'}: no PyTorch name for {name!r}")
        return out, True
    own = _own_arrays(layer)
    known = {"Linear", "Conv1d", "Conv2d", "Conv3d", "ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d",
             "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GroupNorm", "Embedding", "RMSNorm", "InstanceNorm1d",
             "InstanceNorm2d", "LearnedPositionalEncoding"}
    if own and kind not in known:
        raise InteropError(
            f"{layer.describe()} at {prefix or '(top)'}: no PyTorch mapping is known for {kind} "
            f"(arrays {own}); map its keys by hand"
        )
    return [_Entry(prefix + name, prefix + name, _same, _same) for name in own], False


def _entries(model: Layer) -> Iterator[_Entry]:
    def walk(layer: Layer, prefix: str) -> Iterator[_Entry]:
        entries, covered = _entries_for(layer, prefix)
        yield from entries
        if not covered:
            for name, child in layer.named_children():
                yield from walk(child, f"{prefix}{name}.")

    seen: set[str] = set()
    for entry in walk(model, ""):
        if entry.ours not in seen:  # tied parameters appear once
            seen.add(entry.ours)
            yield entry


def _batch_norm_counters(model: Layer) -> list[str]:
    from .. import layers as L

    counters = []
    for name, layer in model.sublayers():
        if isinstance(layer, (L.BatchNorm1d, L.BatchNorm2d)) and getattr(layer, "track_running_stats", True):
            counters.append(f"{name}.num_batches_tracked" if name else "num_batches_tracked")
    return counters


def torch_key_map(model: Layer) -> dict[str, str]:
    """gradflow state-dict key -> PyTorch state-dict key, for every array of ``model``."""
    return {entry.ours: entry.theirs for entry in _entries(model)}


def torch_state_dict(model: Layer, values: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """The model's weights as a PyTorch-style state dict of host NumPy arrays.

    model: a gradflow model with a PyTorch twin. values: other arrays keyed like
    ``model.state_dict()`` to convert instead of the weights, e.g. the gradients
    ``{name: p.grad for name, p in model.named_parameters()}`` (keys not given are left out).
    Load the result into the twin with
    ``twin.load_state_dict({k: torch.from_numpy(v) for k, v in sd.items()})``.
    """
    source = model.state_dict() if values is None else values
    out = {entry.theirs: np.ascontiguousarray(entry.to_torch(np.asarray(backend.to_numpy(source[entry.ours]))))
           for entry in _entries(model) if entry.ours in source and source[entry.ours] is not None}
    if values is None:
        for key in _batch_norm_counters(model):  # momentum=None keeps a real count; the others have none
            out.setdefault(key, np.zeros((), dtype=np.int64))
    return out


def _host(value: Any, key: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor (possibly requiring grad, possibly on a GPU)
        value = value.detach().cpu().numpy()
    elif backend.is_array(value):
        value = backend.to_numpy(value)
    if not isinstance(value, np.ndarray):
        raise InteropError(f"state[{key!r}]: expected a tensor or an array, got {type(value).__name__}")
    return value


def load_torch_state_dict(model: Layer, state: Mapping[str, Any], *, strict: bool = True) -> None:
    """Load a PyTorch ``state_dict`` (tensors or arrays, PyTorch's names and layouts) into ``model``.

    model: the gradflow twin of the PyTorch model (same layers, same nesting).
    state: ``torch_model.state_dict()`` or any mapping of the same keys to tensors/arrays.
    strict: every key on both sides must be matched (PyTorch's ``num_batches_tracked`` counters
    are always accepted and ignored).

    Every key, shape and layout is checked before anything is assigned; a mismatch raises
    :class:`InteropError` listing each missing, unexpected and mis-shaped key, and leaves the
    model unchanged. Values are cast to the model's dtype and sent to its device.
    """
    if not isinstance(state, Mapping):
        raise InteropError(f"load_torch_state_dict: state must be a mapping of names to tensors, got {type(state).__name__}")
    entries = list(_entries(model))
    current = model.state_dict()
    by_theirs = {entry.theirs: entry for entry in entries}
    counters = set(_batch_norm_counters(model))
    missing = [entry.theirs for entry in entries if entry.theirs not in state]
    unexpected = [key for key in state if key not in by_theirs and not key.endswith("num_batches_tracked")]
    ignored_counters = [key for key in state if key.endswith("num_batches_tracked") and key not in counters]
    wrong, converted = [], {}
    for key, entry in by_theirs.items():
        if key not in state:
            continue
        host = entry.from_torch(_host(state[key], key))
        expected = tuple(current[entry.ours].shape)
        if tuple(host.shape) != expected:
            wrong.append(f"{key}: PyTorch {tuple(_host(state[key], key).shape)} gives {tuple(host.shape)}, "
                         f"the model's {entry.ours} is {expected}")
        else:
            converted[entry.ours] = host
    unexpected += ignored_counters if strict else []
    if wrong or (strict and (missing or unexpected)):
        lines = [f"load_torch_state_dict: the PyTorch state does not fit {type(model).__name__}"]
        if missing:
            lines.append(f"missing keys: {missing}")
        if unexpected:
            lines.append(f"unexpected keys: {unexpected}")
        if wrong:
            lines.append("shape mismatches: " + "; ".join(wrong))
        raise InteropError("\n  ".join(lines))
    model.load_state_dict(converted, strict=False)
