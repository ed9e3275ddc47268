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
                            ``out.*`` <-> ``out_proj.*``; with kdim/vdim ≠ E,
                            ``{q,k,v}_proj.weight`` <-> ``{q,k,v}_proj_weight`` and the three
                            ``{q,k,v}_proj.bias`` <-> row blocks of ``in_proj_bias`` (3E,)
TransformerEncoderBlock     ``attention.body.0`` <-> ``norm1``, ``attention.body.1`` <->
                            ``self_attn``, ``mlp.body.0`` <-> ``norm2``, ``mlp.body.1`` <->
                            ``linear1``, ``mlp.body.3`` <-> ``linear2`` (PyTorch's
                            ``TransformerEncoderLayer(batch_first=True)``, either norm_first)
TransformerDecoderBlock     ``attention.body.{0,1}`` <-> ``norm1``, ``self_attn``;
                            ``cross_attention.body.{0,1}`` <-> ``norm2``, ``multihead_attn``;
                            ``mlp.body.{0,1,3}`` <-> ``norm3``, ``linear1``, ``linear2``
                            (PyTorch's ``TransformerDecoderLayer(batch_first=True)``, either
                            norm_first, activation "relu" or "gelu"; gradflow's causal=True is
                            PyTorch's ``tgt_mask=generate_square_subsequent_mask(T)``)
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
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from .. import backend
from ..core import Layer
from ..validation import state_mismatch_message

__all__ = ["InteropError", "load_torch_state_dict", "torch_state_dict", "torch_key_map"]


class InteropError(ValueError):
    """A state dict or a model that cannot be mapped between gradflow and PyTorch."""


@dataclass(frozen=True)
class _Entry:
    """One array: its gradflow key, its PyTorch key, and the layout conversions both ways.

    Several entries share a PyTorch key when PyTorch packs arrays that gradflow keeps apart
    (``in_proj_bias`` of an attention with kdim/vdim ≠ E): each names its ``rows``."""

    ours: str
    theirs: str
    to_torch: Callable[[np.ndarray], np.ndarray]
    from_torch: Callable[[np.ndarray], np.ndarray]
    rows: tuple[int, int] | None = None  # this array is rows [start, stop) of PyTorch's (packed) array


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
        return _attention_entries(layer, prefix), True
    if isinstance(layer, L.TransformerEncoderBlock):
        return _block_entries(layer, prefix, {"attention.body.1.": "self_attn."},
                              {"attention.body.0.": "norm1.", "mlp.body.0.": "norm2.", "mlp.body.1.": "linear1.",
                               "mlp.body.3.": "linear2."}), True
    if isinstance(layer, L.TransformerDecoderBlock):
        return _block_entries(layer, prefix, {"attention.body.1.": "self_attn.", "cross_attention.body.1.": "multihead_attn."},
                              {"attention.body.0.": "norm1.", "cross_attention.body.0.": "norm2.", "mlp.body.0.": "norm3.",
                               "mlp.body.1.": "linear1.", "mlp.body.3.": "linear2."}), True
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


def _attention_entries(layer: Layer, prefix: str) -> list[_Entry]:
    """MultiHeadAttention's arrays under PyTorch's names: packed ``qkv`` is ``in_proj_*``; with
    kdim/vdim ≠ E, ``{q,k,v}_proj.weight`` are ``{q,k,v}_proj_weight`` and the three biases are
    the row blocks [0, E), [E, 2E), [2E, 3E) of ``in_proj_bias``."""
    E = layer.embed_dim
    pairs = {"qkv.weight": ("in_proj_weight", None), "qkv.bias": ("in_proj_bias", None),
             "out.weight": ("out_proj.weight", None), "out.bias": ("out_proj.bias", None)}
    for k, name in enumerate("qkv"):
        pairs[f"{name}_proj.weight"] = (f"{name}_proj_weight", None)
        pairs[f"{name}_proj.bias"] = ("in_proj_bias", (k * E, (k + 1) * E))
    arrays = dict(layer.named_parameters())
    arrays.update(dict(layer.named_buffers()))
    unknown = sorted(set(arrays) - set(pairs))
    if unknown:
        raise InteropError(f"{layer.describe()} at {prefix or '(top)'}: no PyTorch name for {unknown}")
    return [_Entry(prefix + ours, prefix + theirs, _same, _same, rows)
            for ours, (theirs, rows) in pairs.items() if ours in arrays]


def _block_entries(layer: Layer, prefix: str, attentions: dict[str, str], rename: dict[str, str]) -> list[_Entry]:
    """The entries of a transformer block: each MultiHeadAttention at an ``attentions`` key
    mapped as a whole under its PyTorch name, every other array renamed by prefix (``rename``)."""
    out = []
    for ours_at, theirs_at in attentions.items():
        attention = _child(layer, ours_at[:-1])
        for entry in _entries_for(attention, prefix + ours_at)[0]:
            out.append(replace(entry, theirs=prefix + theirs_at + entry.theirs[len(prefix + ours_at):]))
    for name, _ in list(layer.named_parameters()) + list(layer.named_buffers()):
        if any(name.startswith(ours_at) for ours_at in attentions):
            continue
        for ours, theirs in rename.items():
            if name.startswith(ours):
                out.append(_Entry(prefix + name, prefix + theirs + name[len(ours):], _same, _same))
                break
        else:
            raise InteropError(f"{layer.describe()} at {prefix or '(top)'}: no PyTorch name for {name!r}")
    return out


def _child(layer: Layer, path: str) -> Layer:
    """The sublayer at a dotted path of child names (``"attention.body.1"``)."""
    for name in path.split("."):
        layer = dict(layer.named_children())[name]
    return layer


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
    out: dict[str, np.ndarray] = {}
    parts: dict[str, list[tuple[int, np.ndarray]]] = {}
    for entry in _entries(model):
        if entry.ours not in source or source[entry.ours] is None:
            continue
        value = np.ascontiguousarray(entry.to_torch(np.asarray(backend.to_numpy(source[entry.ours]))))
        if entry.rows is None:
            out[entry.theirs] = value
        else:
            parts.setdefault(entry.theirs, []).append((entry.rows[0], value))
    for key, blocks in parts.items():  # PyTorch's packed arrays, from their row blocks in order
        out[key] = np.concatenate([value for _, value in sorted(blocks, key=lambda block: block[0])])
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
    by_theirs: dict[str, list[_Entry]] = {}
    for entry in entries:
        by_theirs.setdefault(entry.theirs, []).append(entry)
    counters = set(_batch_norm_counters(model))
    missing = [key for key in by_theirs if key not in state]
    unexpected = [key for key in state if key not in by_theirs and not key.endswith("num_batches_tracked")]
    ignored_counters = [key for key in state if key.endswith("num_batches_tracked") and key not in counters]
    wrong, converted = [], {}
    for key, group in by_theirs.items():
        if key not in state:
            continue
        given = _host(state[key], key)
        if group[0].rows is not None:  # packed by PyTorch: the blocks' rows must tile the array
            rows = sum(entry.rows[1] - entry.rows[0] for entry in group)
            expected = (rows,) + tuple(current[group[0].ours].shape[1:])
            if tuple(given.shape) != expected:
                wrong.append(f"{key}: PyTorch {tuple(given.shape)}, the model's "
                             f"{[entry.ours for entry in group]} need {expected}")
                continue
        for entry in group:
            host = entry.from_torch(given if entry.rows is None else given[entry.rows[0]:entry.rows[1]])
            expected = tuple(current[entry.ours].shape)
            if tuple(host.shape) != expected:
                wrong.append(f"{key}: PyTorch {tuple(given.shape)} gives {tuple(host.shape)}, "
                             f"the model's {entry.ours} is {expected}")
            else:
                converted[entry.ours] = host
    unexpected += ignored_counters if strict else []
    message = state_mismatch_message(f"load_torch_state_dict: the PyTorch state does not fit {type(model).__name__}",
                                     missing, unexpected, wrong, strict=strict)
    if message:
        raise InteropError(message)
    model.load_state_dict(converted, strict=False)
