"""Export a trained model's inference graph to ONNX.

``export_onnx(model, sample, "model.onnx")`` walks the model with one converter per layer type
and builds the graph with the ``onnx`` package (no PyTorch involved). The batch axis is dynamic;
every other axis is fixed to the sample's. Layers behave as in ``model.predict`` (eval mode:
Dropout is the identity, BatchNorm uses its running statistics).

Layers exported: Linear (its activation option too), Identity, Flatten, Reshape, the activations (ReLU, LeakyReLU, ELU,
GELU exact and tanh, Sigmoid, Tanh, SiLU, Softmax, LogSoftmax), Dropout, Conv1d/2d,
ConvTranspose1d/2d, MaxPool1d/2d, AvgPool1d/2d, GlobalAvgPool, BatchNorm1d/2d, LayerNorm,
Embedding, learned and sinusoidal positional encodings, MultiHeadAttention (self-attention,
causal or not; cross-attention inside a decoder block), TransformerEncoderBlock and
TransformerDecoderBlock (either norm order; the decoder exported as the model itself, its memory
a second graph input: ``export_onnx(block, x, path, memory=memory)``), and the containers Sequential, Residual and Concat. Any
other layer raises :class:`~gradflow.interop.InteropError` naming it. Check an export with
onnxruntime: ``gradflow.interop.onnx_export.run_onnx(path, x)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from .. import backend
from ..core import Layer
from .torch_weights import InteropError

__all__ = ["export_onnx", "run_onnx", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17  # LayerNormalization arrived in opset 17


class _Graph:
    """The nodes, weights and fresh names of the graph being built."""

    def __init__(self, dtype: np.dtype):
        import onnx

        self.onnx = onnx
        self.dtype = dtype
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self._count = 0
        self.memory: tuple[str, Any] | None = None  # (input name, sample value) of a decoder's memory
        self.memory_used = False

    def name(self, stem: str) -> str:
        self._count += 1
        return f"{stem}_{self._count}"

    def weight(self, array: Any, stem: str, dtype: Any = None) -> str:
        host = np.asarray(backend.to_numpy(array) if backend.is_array(array) else array)
        host = host.astype(dtype or self.dtype, copy=False)
        name = self.name(stem)
        # copy(order="C"), not ascontiguousarray, which turns a 0-d array (a Gather index) into 1-d
        self.initializers.append(self.onnx.numpy_helper.from_array(host.copy(order="C"), name))
        return name

    def ints(self, values: Any, stem: str = "shape") -> str:
        return self.weight(np.asarray(values, dtype=np.int64), stem, np.int64)

    def node(self, op: str, inputs: list[str], **attributes: Any) -> str:
        out = self.name(op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, inputs, [out], name=out, **attributes))
        return out

    def nodes_out(self, op: str, inputs: list[str], count: int, **attributes: Any) -> list[str]:
        outs = [self.name(op.lower()) for _ in range(count)]
        self.nodes.append(self.onnx.helper.make_node(op, inputs, outs, name=outs[0], **attributes))
        return outs


Converter = Callable[[_Graph, Any, str, Any], str]
_CONVERTERS: dict[str, Converter] = {}


def _converts(*names: str) -> Callable[[Converter], Converter]:
    def register(function: Converter) -> Converter:
        for name in names:
            _CONVERTERS[name] = function
        return function

    return register


def _convert(graph: _Graph, layer: Layer, x: str, value: Any) -> str:
    """Add ``layer`` applied to ``x`` (whose sample value is ``value``) to the graph."""
    converter = _CONVERTERS.get(type(layer).__name__)
    if converter is None:
        raise InteropError(f"export_onnx: cannot export {layer.describe()}: no ONNX converter for "
                           f"{type(layer).__name__} (supported: {', '.join(sorted(_CONVERTERS))})")
    return converter(graph, layer, x, value)


# -- dense and shape layers -------------------------------------------------------------------

@_converts("Linear")
def _linear(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    y = _affine(graph, layer, x, value)
    activation = getattr(layer, "activation", None)  # Linear(activation=...): the activation's nodes follow
    if activation == "relu":
        return graph.node("Relu", [y])
    if activation is not None:
        return _gelu(graph, SimpleNamespace(approximate="tanh" if activation == "gelu_tanh" else "none"), y, None)
    return y


def _affine(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    if value.ndim == 2:  # weight (out, in): Gemm with transB, as torch.onnx does
        inputs = [x, graph.weight(layer.weight.value, "weight")]
        if layer.bias is not None:
            inputs.append(graph.weight(layer.bias.value, "bias"))
        return graph.node("Gemm", inputs, transB=1)
    y = graph.node("MatMul", [x, graph.weight(backend.to_numpy(layer.weight.value).T, "weight_t")])
    return y if layer.bias is None else graph.node("Add", [y, graph.weight(layer.bias.value, "bias")])


@_converts("Identity", "Dropout")
def _identity(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    return graph.node("Identity", [x])


@_converts("Flatten")
def _flatten(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    return graph.node("Flatten", [x], axis=1)


@_converts("Reshape")
def _reshape(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    return graph.node("Reshape", [x, graph.ints([0, *layer.shape])])


# -- activations -------------------------------------------------------------------------------

for _gradflow_name, _onnx_op in (("ReLU", "Relu"), ("Tanh", "Tanh"), ("Sigmoid", "Sigmoid")):
    _converts(_gradflow_name)(lambda graph, layer, x, value, op=_onnx_op: graph.node(op, [x]))


@_converts("LeakyReLU")
def _leaky_relu(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    return graph.node("LeakyRelu", [x], alpha=float(layer.negative_slope))


@_converts("ELU")
def _elu(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    return graph.node("Elu", [x], alpha=float(layer.alpha))


@_converts("SiLU")
def _silu(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    return graph.node("Mul", [x, graph.node("Sigmoid", [x])])


@_converts("GELU")
def _gelu(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    half = graph.weight(np.array(0.5), "half")
    one = graph.weight(np.array(1.0), "one")
    if layer.approximate == "tanh":  # 0.5 x (1 + tanh(√(2/π) (x + 0.044715 x³)))
        cube = graph.node("Mul", [graph.node("Mul", [x, x]), x])
        inner = graph.node("Add", [x, graph.node("Mul", [cube, graph.weight(np.array(0.044715), "c")])])
        scaled = graph.node("Mul", [inner, graph.weight(np.array(math.sqrt(2.0 / math.pi)), "k")])
        gate = graph.node("Add", [one, graph.node("Tanh", [scaled])])
    else:  # 0.5 x (1 + erf(x / √2))
        gate = graph.node("Add", [one, graph.node("Erf", [graph.node("Mul", [x, graph.weight(np.array(1 / math.sqrt(2.0)), "k")])])])
    return graph.node("Mul", [graph.node("Mul", [x, half]), gate])


@_converts("Softmax")
def _softmax(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    return graph.node("Softmax", [x], axis=int(layer.axis))


@_converts("LogSoftmax")
def _log_softmax(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    return graph.node("LogSoftmax", [x], axis=int(layer.axis))


# -- vision ------------------------------------------------------------------------------------

def _onnx_pads(pads: Any) -> list[int]:
    """gradflow's ((before, after), ...) per axis -> ONNX's [b1, b2, ..., a1, a2, ...]."""
    return [int(b) for b, _ in pads] + [int(a) for _, a in pads]


def _check_zero_padding_mode(layer: Any) -> None:
    mode = getattr(layer, "padding_mode", "zeros")
    if mode != "zeros":
        raise InteropError(f"export_onnx: cannot export {layer.describe()}: padding_mode={mode!r} (only 'zeros')")


@_converts("Conv1d", "Conv2d", "Conv3d")
def _conv(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    _check_zero_padding_mode(layer)
    inputs = [x, graph.weight(layer.weight.value, "weight")]
    if layer.bias is not None:
        inputs.append(graph.weight(layer.bias.value, "bias"))
    return graph.node("Conv", inputs, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                      dilations=list(layer.dilation), pads=_onnx_pads(layer.pads), group=int(layer.groups))


@_converts("ConvTranspose1d", "ConvTranspose2d", "ConvTranspose3d")
def _conv_transpose(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    inputs = [x, graph.weight(layer.weight.value, "weight")]
    if layer.bias is not None:
        inputs.append(graph.weight(layer.bias.value, "bias"))
    pads = [int(p) for p in layer.padding] * 2
    return graph.node("ConvTranspose", inputs, kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
                      dilations=list(layer.dilation), pads=pads, group=int(layer.groups),
                      output_padding=[int(p) for p in layer.output_padding])


def _pool_attributes(layer: Any) -> dict[str, Any]:
    attributes = {"kernel_shape": list(layer.kernel_size), "strides": list(layer.stride),
                  "pads": _onnx_pads(layer.pads)}
    if getattr(layer, "ceil_mode", False):
        attributes["ceil_mode"] = 1
    return attributes


@_converts("MaxPool1d", "MaxPool2d")
def _max_pool(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    attributes = _pool_attributes(layer)
    dilation = getattr(layer, "dilation", None)
    if dilation is not None and any(d != 1 for d in dilation):
        attributes["dilations"] = list(dilation)
    if getattr(layer, "return_indices", False):
        raise InteropError(f"export_onnx: cannot export {layer.describe()}: return_indices=True")
    return graph.node("MaxPool", [x], **attributes)


@_converts("AvgPool1d", "AvgPool2d")
def _avg_pool(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    if getattr(layer, "divisor_override", None) is not None:
        raise InteropError(f"export_onnx: cannot export {layer.describe()}: divisor_override")
    attributes = _pool_attributes(layer)
    attributes["count_include_pad"] = int(bool(getattr(layer, "count_include_pad", True)))
    return graph.node("AveragePool", [x], **attributes)


@_converts("GlobalAvgPool")
def _global_avg_pool(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    return graph.node("Flatten", [graph.node("GlobalAveragePool", [x])], axis=1)


@_converts("BatchNorm1d", "BatchNorm2d")
def _batch_norm(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    if getattr(layer, "running_mean", None) is None:
        raise InteropError(f"export_onnx: cannot export {layer.describe()} without running statistics")
    channels = layer.num_features
    scale = layer.weight.value if layer.weight is not None else np.ones(channels)
    shift = layer.bias.value if layer.bias is not None else np.zeros(channels)
    inputs = [x, graph.weight(scale, "scale"), graph.weight(shift, "shift"),
              graph.weight(layer.running_mean.value, "mean"), graph.weight(layer.running_var.value, "var")]
    if value.ndim == 2:  # (N, C): ONNX's BatchNormalization wants a channel axis with spatial ones
        unsqueezed = graph.node("Unsqueeze", [x, graph.ints([2], "axes")])
        out = graph.node("BatchNormalization", [unsqueezed, *inputs[1:]], epsilon=float(layer.eps))
        return graph.node("Squeeze", [out, graph.ints([2], "axes")])
    return graph.node("BatchNormalization", inputs, epsilon=float(layer.eps))


# -- sequence ----------------------------------------------------------------------------------

@_converts("LayerNorm")
def _layer_norm(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    shape = tuple(layer.normalized_shape)
    scale = layer.weight.value if layer.weight is not None else np.ones(shape)
    inputs = [x, graph.weight(scale, "scale")]
    bias = getattr(layer, "bias", None)
    if bias is not None:
        inputs.append(graph.weight(bias.value, "bias"))
    return graph.node("LayerNormalization", inputs, axis=-len(shape), epsilon=float(layer.eps))


@_converts("Embedding")
def _embedding(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    if getattr(layer, "max_norm", None) is not None:
        raise InteropError(f"export_onnx: cannot export {layer.describe()}: max_norm renormalises in place")
    return graph.node("Gather", [graph.weight(layer.weight.value, "table"), x], axis=0)


@_converts("LearnedPositionalEncoding", "SinusoidalPositionalEncoding")
def _positional(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    table = backend.to_numpy(layer.predict(value)) - backend.to_numpy(value)  # (N, T, D): the added table
    return graph.node("Add", [x, graph.weight(table[:1], "positions")])


def _project(graph: _Graph, x: str, weight: Any, bias: Any, stem: str) -> str:
    """``x Wᵀ + b`` for a weight (out, in) (a block of rows of a packed projection) and a bias or None."""
    y = graph.node("MatMul", [x, graph.weight(np.asarray(backend.to_numpy(weight)).T, f"{stem}_weight_t")])
    return y if bias is None else graph.node("Add", [y, graph.weight(bias, f"{stem}_bias")])


def _projections(layer: Any) -> list[tuple[Any, Any]]:
    """(weight, bias or None) of the query, key and value projections, as host arrays."""
    if layer.packed:
        E = layer.embed_dim
        weight = np.asarray(backend.to_numpy(layer.qkv.weight.value))
        bias = None if layer.qkv.bias is None else np.asarray(backend.to_numpy(layer.qkv.bias.value))
        return [(weight[k * E:(k + 1) * E], None if bias is None else bias[k * E:(k + 1) * E]) for k in range(3)]
    return [(proj.weight.value, None if proj.bias is None else proj.bias.value)
            for proj in (layer.q_proj, layer.k_proj, layer.v_proj)]


@_converts("MultiHeadAttention")
def _attention(graph: _Graph, layer: Any, x: str, value: Any, key: str | None = None, key_value: Any = None) -> str:
    """Self-attention over ``x`` (packed projections), or cross-attention to ``key`` (keys and
    values both from it, sample ``key_value``); causal keeps key s ≤ query t, as the layer."""
    if key is None and not layer.packed:
        raise InteropError(f"export_onnx: cannot export {layer.describe()}: kdim/vdim differ from embed_dim, "
                           f"so it needs a key input (only a TransformerDecoderBlock's memory provides one)")
    T, E = int(value.shape[1]), layer.embed_dim
    S = T if key is None else int(key_value.shape[1])
    h, d = layer.num_heads, layer.head_dim
    if key is None:
        qkv = _linear(graph, layer.qkv, x, value)  # (N, T, 3E): one GEMM
        split = graph.node("Transpose", [graph.node("Reshape", [qkv, graph.ints([0, T, 3, h, d])])], perm=[2, 0, 3, 1, 4])
        q, k, v = (graph.node("Gather", [split, graph.ints(i, "part")], axis=0) for i in (0, 1, 2))
    else:
        (wq, bq), (wk, bk), (wv, bv) = _projections(layer)

        def heads(y: str, L: int) -> str:  # (N, L, E) -> (N, h, L, d)
            return graph.node("Transpose", [graph.node("Reshape", [y, graph.ints([0, L, h, d])])], perm=[0, 2, 1, 3])

        q = heads(_project(graph, x, wq, bq, "query"), T)
        k = heads(_project(graph, key, wk, bk, "key"), S)
        v = heads(_project(graph, key, wv, bv, "value"), S)
    q = graph.node("Mul", [q, graph.weight(np.array(1.0 / math.sqrt(d)), "scale")])
    scores = graph.node("MatMul", [q, graph.node("Transpose", [k], perm=[0, 1, 3, 2])])
    if layer.causal:
        shown = np.arange(T)[:, None] >= np.arange(S)[None, :]
        hidden = np.where(shown, 0, np.finfo(graph.dtype).min).astype(graph.dtype)
        scores = graph.node("Add", [scores, graph.weight(hidden, "causal")])
    weights = graph.node("Softmax", [scores], axis=-1)
    heads_out = graph.node("MatMul", [weights, v])  # (N, h, T, d)
    merged = graph.node("Reshape", [graph.node("Transpose", [heads_out], perm=[0, 2, 1, 3]), graph.ints([0, T, E])])
    merged_value = np.zeros((value.shape[0], T, E), dtype=graph.dtype)
    return _linear(graph, layer.out, merged, merged_value)


def _sublayer(graph: _Graph, block: Any, x: str, value: Any, norm: Any, branch: Callable[[str], str]) -> str:
    """One residual sub-layer of a transformer block: pre-norm ``x + f(LN(x))`` or post-norm
    ``LN(x + f(x))``, as the block's ``norm_first`` (dropout is the identity in inference)."""
    if block.norm_first:
        return graph.node("Add", [x, branch(_layer_norm(graph, norm, x, value))])
    return _layer_norm(graph, norm, graph.node("Add", [x, branch(x)]), value)


def _mlp(graph: _Graph, block: Any, value: Any) -> Callable[[str], str]:
    def branch(a: str) -> str:
        v = value
        for child in block.mlp.body.layers[1:]:  # [LN,] Linear, activation, Linear, Dropout
            a = _convert(graph, child, a, v)
            v = child.predict(v)
        return a

    return branch


@_converts("TransformerEncoderBlock")
def _encoder_block(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    norm1, attention = layer.attention.body.layers[:2]
    h = _sublayer(graph, layer, x, value, norm1, lambda a: _attention(graph, attention, a, value))
    return _sublayer(graph, layer, h, value, layer.mlp.body.layers[0], _mlp(graph, layer, value))


@_converts("TransformerDecoderBlock")
def _decoder_block(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    if graph.memory is None:
        raise InteropError(f"export_onnx: cannot export {layer.describe()} without its memory: export the block "
                           f"itself with memory=<a sample (N, S, {layer.memory_dim})>, which becomes a second input")
    memory, memory_value = graph.memory
    graph.memory_used = True
    norm1, self_attention = layer.attention.body.layers[:2]
    norm2, cross_attention = layer.cross_attention.body.layers[:2]
    h = _sublayer(graph, layer, x, value, norm1, lambda a: _attention(graph, self_attention, a, value))
    g = _sublayer(graph, layer, h, value, norm2,
                  lambda a: _attention(graph, cross_attention, a, value, key=memory, key_value=memory_value))
    return _sublayer(graph, layer, g, value, layer.mlp.body.layers[0], _mlp(graph, layer, value))


# -- containers --------------------------------------------------------------------------------

@_converts("Sequential")
def _sequential(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    for child in layer.layers if hasattr(layer, "layers") else [c for _, c in layer.named_children()]:
        x = _convert(graph, child, x, value)
        value = child.predict(value)
    return x


@_converts("Residual")
def _residual(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    return graph.node("Add", [x, _convert(graph, layer.body, x, value)])


@_converts("Concat")
def _concat(graph: _Graph, layer: Any, x: str, value: Any) -> str:
    outputs = [_convert(graph, branch, x, value) for _, branch in layer.named_children()]
    return graph.node("Concat", outputs, axis=int(layer.axis))


# -- entry points ------------------------------------------------------------------------------

def export_onnx(model: Layer, sample: Any, path: "str | Path", *, memory: Any = None, opset: int = DEFAULT_OPSET,
                input_name: str = "input", output_name: str = "output", memory_name: str = "memory") -> Path:
    """Write ``model``'s inference graph to ``path`` as an ONNX file; returns the path.

    model: a gradflow layer or container (its weights are copied into the file).
    sample: a host array or device array of the input's shape (float, or integer ids for a model
    starting with Embedding); its batch axis becomes dynamic in the graph, the other axes fixed.
    path: the file to write. opset: the ONNX opset (at least 17). input_name/output_name: the
    graph's input and output names.
    memory: for a :class:`~gradflow.layers.TransformerDecoderBlock` exported as the model, a
    sample of its memory (N, S, memory_dim), the same batch size as ``sample``: it becomes the
    graph's second input ``memory_name`` (batch axis dynamic, S fixed), and the graph computes
    ``block.predict(x, memory=memory)`` (causal self-attention, no other masks).

    Raises :class:`~gradflow.interop.InteropError` naming the first layer that has no converter
    (or uses an option ONNX cannot express), before anything is written.
    """
    try:
        import onnx
    except ImportError as error:  # pragma: no cover - the interop extra brings it
        raise ImportError("export_onnx needs the onnx package: pip install onnx (or the 'interop' extra)") from error
    if not isinstance(model, Layer):
        raise TypeError(f"export_onnx: model must be a gradflow Layer, got {type(model).__name__}")
    if not isinstance(opset, int) or opset < DEFAULT_OPSET:
        raise ValueError(f"export_onnx: opset must be an int >= {DEFAULT_OPSET}, got {opset!r}")
    host = np.asarray(backend.to_numpy(sample) if backend.is_array(sample) else sample)
    if host.ndim == 0:
        raise ValueError(f"export_onnx: sample must have a batch axis, got shape {host.shape}")
    memory_host = _check_memory(memory, host)
    dtype = np.dtype(backend.dtype_name(model.dtype)) if model.dtype is not None else np.dtype(np.float32)
    cpu = backend.device("cpu")
    twin_device, twin_dtype = model.device, backend.dtype_name(model.dtype) if model.dtype is not None else None
    graph = _Graph(dtype)
    model.to(cpu)  # converters read weights and run predict on the host
    try:
        value = cpu.send(host if np.issubdtype(host.dtype, np.integer) else host.astype(dtype))
        call = {}
        if memory_host is not None:
            call["memory"] = cpu.send(memory_host.astype(dtype))
            graph.memory = (memory_name, call["memory"])
        output = _convert(graph, model, input_name, value)
        if memory_host is not None and not graph.memory_used:
            raise InteropError(f"export_onnx: memory was given but {type(model).__name__} has no layer that reads it "
                               f"(only a TransformerDecoderBlock exported as the model does)")
        result = model.predict(value, **call)
    finally:
        if twin_device is not None:
            model.to(twin_device, twin_dtype)
    graph.nodes.append(onnx.helper.make_node("Identity", [output], [output_name], name="output"))
    element = onnx.helper.np_dtype_to_tensor_dtype(host.dtype if np.issubdtype(host.dtype, np.integer) else dtype)
    out_element = onnx.helper.np_dtype_to_tensor_dtype(np.asarray(backend.to_numpy(result)).dtype)
    inputs = [onnx.helper.make_tensor_value_info(input_name, element, ["N", *host.shape[1:]])]
    if memory_host is not None:
        inputs.append(onnx.helper.make_tensor_value_info(memory_name, onnx.helper.np_dtype_to_tensor_dtype(dtype),
                                                         ["N", *memory_host.shape[1:]]))
    outputs = [onnx.helper.make_tensor_value_info(output_name, out_element, ["N", *tuple(result.shape)[1:]])]
    model_proto = onnx.helper.make_model(
        onnx.helper.make_graph(graph.nodes, type(model).__name__, inputs, outputs, graph.initializers),
        opset_imports=[onnx.helper.make_opsetid("", opset)], producer_name="gradflow")
    onnx.checker.check_model(model_proto)
    path = Path(path)
    onnx.save(model_proto, str(path))
    return path


def run_onnx(path: "str | Path", x: Any, **inputs: Any) -> np.ndarray:
    """Run an exported file on ``x`` (a host array, the first input) with onnxruntime on the CPU;
    further inputs by name (``memory=...`` for a decoder block). Returns the output."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return session.run(None, {name: np.asarray(x), **{k: np.asarray(v) for k, v in inputs.items()}})[0]


def _check_memory(memory: Any, host: np.ndarray) -> np.ndarray | None:
    """The memory sample as a host floating array (N, S, features) with the sample's N, or None."""
    if memory is None:
        return None
    memory_host = np.asarray(backend.to_numpy(memory) if backend.is_array(memory) else memory)
    if memory_host.ndim != 3 or not np.issubdtype(memory_host.dtype, np.floating):
        raise ValueError(f"export_onnx: memory must be a floating array (N, S, features), got "
                         f"{memory_host.dtype} of shape {memory_host.shape}")
    if memory_host.shape[0] != host.shape[0]:
        raise ValueError(f"export_onnx: memory has batch size {memory_host.shape[0]} but sample {host.shape[0]}")
    return memory_host
