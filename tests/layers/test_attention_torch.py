"""MultiHeadAttention and the transformer blocks against PyTorch in float64: outputs, the δ of
every input (query, key, value, memory) and every parameter gradient; and ``need_weights``
against the NumPy reference and finite differences on every device."""

from __future__ import annotations

import numpy as np
import pytest

from gradflow import backend
from gradflow import layers as L
from gradflow.testing import gradcheck
from tests.cases.sequence import mha_ref

torch = pytest.importorskip("torch")

N, T, S, E = 2, 5, 4, 8
RNG = np.random.default_rng(21)


def t(a: np.ndarray, grad: bool = False):
    tensor = torch.tensor(np.ascontiguousarray(a), dtype=torch.float64 if a.dtype != bool else torch.bool)
    return tensor.requires_grad_(grad) if grad else tensor


def host(layer) -> dict[str, np.ndarray]:
    return {k: backend.to_numpy(v).astype(np.float64) for k, v in layer.state_dict().items()}


def grads(layer) -> dict[str, np.ndarray]:
    return {k: backend.to_numpy(p.grad) for k, p in layer.named_parameters()}


def mha_to_torch(p: dict[str, np.ndarray], prefix: str = "") -> dict[str, np.ndarray]:
    """gradflow MultiHeadAttention parameters -> torch.nn.MultiheadAttention's state dict."""
    if prefix + "qkv.weight" in p:
        out = {"in_proj_weight": p[prefix + "qkv.weight"], "in_proj_bias": p[prefix + "qkv.bias"]}
    else:
        out = {f"{part}_proj_weight": p[f"{prefix}{part}_proj.weight"] for part in "qkv"}
        out["in_proj_bias"] = np.concatenate([p[f"{prefix}{part}_proj.bias"] for part in "qkv"])
    out["out_proj.weight"] = p[prefix + "out.weight"]
    out["out_proj.bias"] = p[prefix + "out.bias"]
    return out


def mha_grads_to_torch_layout(g: dict[str, np.ndarray], prefix: str = "") -> dict[str, np.ndarray]:
    return mha_to_torch(g, prefix)


def block_to_torch(p: dict[str, np.ndarray], decoder: bool) -> dict[str, np.ndarray]:
    out = {f"self_attn.{k}": v for k, v in mha_to_torch(p, "attention.body.1.").items()}
    out.update({"norm1.weight": p["attention.body.0.weight"], "norm1.bias": p["attention.body.0.bias"],
                "linear1.weight": p["mlp.body.1.weight"], "linear1.bias": p["mlp.body.1.bias"],
                "linear2.weight": p["mlp.body.3.weight"], "linear2.bias": p["mlp.body.3.bias"]})
    last = "norm3" if decoder else "norm2"
    out.update({f"{last}.weight": p["mlp.body.0.weight"], f"{last}.bias": p["mlp.body.0.bias"]})
    if decoder:
        out.update({f"multihead_attn.{k}": v for k, v in mha_to_torch(p, "cross_attention.body.1.").items()})
        out.update({"norm2.weight": p["cross_attention.body.0.weight"], "norm2.bias": p["cross_attention.body.0.bias"]})
    return out


def load(module, state: dict[str, np.ndarray]) -> None:
    own = module.state_dict()
    assert set(own) == set(state), (sorted(set(own) ^ set(state)))
    module.load_state_dict({k: torch.tensor(np.ascontiguousarray(v)) for k, v in state.items()})


def close(a, b, what):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-9, atol=1e-11, err_msg=what)


def compare_grads(gf_grads: dict, torch_module, mapping, what: str) -> None:
    expected = {k: v.grad.numpy() for k, v in torch_module.named_parameters()}
    converted = mapping(gf_grads)
    assert set(converted) == set(expected)
    for k in expected:
        close(converted[k], expected[k], f"{what}: gradient of {k}")


CPU = backend.device("cpu")

MHA_CONFIGS = {
    "self": dict(kw={}, inputs={}, masks={}),
    "self_causal_bool_mask": dict(kw={}, inputs={}, masks={"attn_mask": np.triu(np.ones((T, T), bool), 1)}),
    "self_float_mask_padded": dict(kw={}, inputs={}, masks={"attn_mask": RNG.normal(size=(T, T)),
                                                            "key_padding_mask": np.array([[0, 0, 0, 1, 1], [0, 0, 0, 0, 0]], bool)}),
    "cross_key_is_value": dict(kw={}, inputs={"key": RNG.normal(size=(N, S, E))}, masks={}),
    "cross_key_value_per_head_mask": dict(kw={}, inputs={"key": RNG.normal(size=(N, S, E)), "value": RNG.normal(size=(N, S, E))},
                                          masks={"attn_mask": RNG.normal(size=(N * 2, T, S))}),
    "cross_kdim_vdim_bool_mask": dict(kw={"kdim": 3, "vdim": 6}, inputs={"key": RNG.normal(size=(N, S, 3)), "value": RNG.normal(size=(N, S, 6))},
                                      masks={"attn_mask": np.tril(np.ones((T, S), bool), -2)}),
}


@pytest.mark.parametrize("name", list(MHA_CONFIGS))
def test_multi_head_attention_matches_torch_in_float64(name):
    config = MHA_CONFIGS[name]
    layer = L.MultiHeadAttention(E, 2, rng=3, dtype="float64", **config["kw"])
    query = RNG.normal(size=(N, T, E))
    inputs, masks = config["inputs"], config["masks"]
    send = lambda a: CPU.send(a, "float64" if a.dtype != bool else None)  # noqa: E731
    (y, weights), backprop = layer(send(query), True, **{k: send(v) for k, v in {**inputs, **masks}.items()}, need_weights=True)
    dy = RNG.normal(size=(N, T, E))
    deltas = backprop(send(dy))
    deltas = deltas if isinstance(deltas, tuple) else (deltas,)

    reference = torch.nn.MultiheadAttention(E, 2, batch_first=True, dtype=torch.float64,
                                            kdim=config["kw"].get("kdim"), vdim=config["kw"].get("vdim"))
    load(reference, mha_to_torch(host(layer)))
    tq = t(query, True)
    tk = t(inputs["key"], True) if "key" in inputs else tq
    tv = t(inputs["value"], True) if "value" in inputs else tk
    ty, tw = reference(tq, tk, tv, need_weights=True, **{k: t(v) for k, v in masks.items()})
    ty.backward(t(dy))
    close(backend.to_numpy(y), ty.detach().numpy(), f"{name}: output")
    close(backend.to_numpy(weights), tw.detach().numpy(), f"{name}: averaged weights")
    close(backend.to_numpy(deltas[0]), tq.grad.numpy(), f"{name}: δ of the query")
    if "key" in inputs:
        close(backend.to_numpy(deltas[1]), tk.grad.numpy(), f"{name}: δ of the key")
    if "value" in inputs:
        close(backend.to_numpy(deltas[2]), tv.grad.numpy(), f"{name}: δ of the value")
    assert len(deltas) == 1 + len(inputs)
    compare_grads(grads(layer), reference, mha_grads_to_torch_layout, name)


def test_per_head_weights_match_torch():
    layer = L.MultiHeadAttention(E, 4, rng=5, dtype="float64")
    x = RNG.normal(size=(N, T, E))
    (_, weights), _ = layer(CPU.send(x, "float64"), False, need_weights=True, average_weights=False)
    reference = torch.nn.MultiheadAttention(E, 4, batch_first=True, dtype=torch.float64)
    load(reference, mha_to_torch(host(layer)))
    _, tw = reference(t(x), t(x), t(x), need_weights=True, average_attn_weights=False)
    close(backend.to_numpy(weights), tw.detach().numpy(), "per-head weights")


BLOCKS = [
    pytest.param(dict(norm_first=True, activation="gelu"), id="pre_norm_gelu"),
    pytest.param(dict(norm_first=False, activation="gelu"), id="post_norm_gelu"),
    pytest.param(dict(norm_first=False, activation="relu"), id="post_norm_relu"),
    pytest.param(dict(norm_first=True, activation="relu"), id="pre_norm_relu"),
]


@pytest.mark.parametrize("options", BLOCKS)
def test_encoder_block_matches_torch_encoder_layer(options):
    block = L.TransformerEncoderBlock(E, 2, mlp_ratio=2, rng=7, dtype="float64", **options)
    x = RNG.normal(size=(N, T, E))
    mask = np.triu(np.ones((T, T), bool), 1)
    padding = np.array([[0, 0, 0, 0, 1], [0, 0, 0, 0, 0]], bool)
    y, backprop = block(CPU.send(x, "float64"), True, attn_mask=CPU.send(mask), key_padding_mask=CPU.send(padding))
    dy = RNG.normal(size=(N, T, E))
    dx = backprop(CPU.send(dy, "float64"))

    reference = torch.nn.TransformerEncoderLayer(E, 2, dim_feedforward=2 * E, dropout=0.0, activation=options["activation"],
                                                 batch_first=True, norm_first=options["norm_first"], dtype=torch.float64)
    load(reference, block_to_torch(host(block), decoder=False))
    tx = t(x, True)
    ty = reference(tx, src_mask=t(mask), src_key_padding_mask=t(padding))
    ty.backward(t(dy))
    close(backend.to_numpy(y), ty.detach().numpy(), "encoder output")
    close(backend.to_numpy(dx), tx.grad.numpy(), "encoder δ of x")
    compare_grads(grads(block), reference, lambda g: block_to_torch(g, decoder=False), "encoder")


@pytest.mark.parametrize("options", BLOCKS)
def test_decoder_block_matches_torch_decoder_layer(options):
    block = L.TransformerDecoderBlock(E, 2, mlp_ratio=1.5, rng=8, dtype="float64", **options)
    x, memory = RNG.normal(size=(N, T, E)), RNG.normal(size=(N, S, E))
    memory_padding = np.array([[0, 0, 1, 1], [0, 0, 0, 0]], bool)
    memory_mask = RNG.normal(size=(T, S))
    y, backprop = block(CPU.send(x, "float64"), True, memory=CPU.send(memory, "float64"),
                        memory_key_padding_mask=CPU.send(memory_padding), memory_mask=CPU.send(memory_mask, "float64"))
    dy = RNG.normal(size=(N, T, E))
    dx, d_memory = backprop(CPU.send(dy, "float64"))

    reference = torch.nn.TransformerDecoderLayer(E, 2, dim_feedforward=12, dropout=0.0, activation=options["activation"],
                                                 batch_first=True, norm_first=options["norm_first"], dtype=torch.float64)
    load(reference, block_to_torch(host(block), decoder=True))
    tx, tm = t(x, True), t(memory, True)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(T, dtype=torch.float64)
    ty = reference(tx, tm, tgt_mask=causal, memory_mask=t(memory_mask), memory_key_padding_mask=t(memory_padding))
    ty.backward(t(dy))
    close(backend.to_numpy(y), ty.detach().numpy(), "decoder output")
    close(backend.to_numpy(dx), tx.grad.numpy(), "decoder δ of x")
    close(backend.to_numpy(d_memory), tm.grad.numpy(), "decoder δ of the memory")
    compare_grads(grads(block), reference, lambda g: block_to_torch(g, decoder=True), "decoder")


# --------------------------------------------------------------------------------------------
# need_weights on every device: the weights against the NumPy reference, and their δ (and the
# output's) against finite differences
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("average", [True, False], ids=["averaged", "per_head"])
def test_need_weights_matches_reference_and_finite_differences_on_every_device(average, device):
    layer = L.MultiHeadAttention(6, 2, rng=11).to(device, "float64")
    x, memory = RNG.normal(size=(2, 4, 6)), RNG.normal(size=(2, 3, 6))
    padding = np.array([[False, True, False], [False, False, False]])
    kwargs = {"key": device.send(memory, "float64"), "key_padding_mask": device.send(padding)}
    (y, weights), _ = layer(device.send(x, "float64"), True, need_weights=True, average_weights=average, **kwargs)
    found = []
    expected_y = mha_ref(host(layer), x, 2, key=memory, key_padding_mask=padding, weights_out=found)
    close(backend.to_numpy(y), expected_y, "output with need_weights")
    close(backend.to_numpy(weights), found[0].mean(axis=1) if average else found[0], "weights")

    # L = Σ w_y ⊙ y + Σ w_P ⊙ P: one scalar through both outputs, checked by finite differences
    w_weights = device.send(RNG.normal(size=tuple(weights.shape)), "float64")

    def both(query, **extra):
        (out, shown), backprop = layer(query, True, need_weights=True, average_weights=average, **kwargs)
        xp = backend.namespace(out)
        flat = xp.concat([xp.reshape(out, (-1,)), xp.reshape(shown, (-1,))])
        size = int(np.prod(out.shape))

        def flat_backprop(d_flat):
            d_out = xp.reshape(d_flat[:size], tuple(out.shape))
            d_shown = xp.reshape(d_flat[size:], tuple(shown.shape))
            return backprop((d_out, d_shown))[0]

        return flat, flat_backprop

    with device:  # the helper concatenates outside any layer call
        gradcheck(both, device.send(x, "float64"), params=list(layer.named_parameters()), max_full=64)

    # the weights' δ alone (no output δ) is accepted; neither is refused
    _, backprop = layer(device.send(x, "float64"), True, need_weights=True, average_weights=average, **kwargs)
    d_query, d_key = backprop((None, w_weights))
    assert tuple(d_query.shape) == x.shape and tuple(d_key.shape) == memory.shape
    _, backprop = layer(device.send(x, "float64"), True, need_weights=True, average_weights=average, **kwargs)
    with pytest.raises(ValueError, match=r"neither an output δ nor a δ of the weights"):
        backprop((None, None))
    with pytest.raises(ValueError, match=r"δ of the attention weights of shape"):
        backprop((None, device.send(np.zeros((2, 4, 2)), "float64")))
