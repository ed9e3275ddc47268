"""A PyTorch model and its gradflow twin: weights loaded from PyTorch's state dict give the same
outputs and gradients in float64, the state dict written back loads into PyTorch, and what
cannot be mapped is refused before anything changes."""

from __future__ import annotations

import numpy as np
import pytest

import gradflow as gf
from gradflow import layers as L
from gradflow.interop import InteropError, load_torch_state_dict, torch_key_map, torch_state_dict

torch = pytest.importorskip("torch")


def _families():
    """(name, gradflow twin, PyTorch model, input shape, call for torch) for every layer family."""
    t = torch.nn
    return {
        "mlp": (lambda: gf.Sequential(L.Linear(5, 5), L.Tanh(), L.Linear(5, 3)),
                lambda: t.Sequential(t.Linear(5, 5), t.Tanh(), t.Linear(5, 3)), (4, 5)),
        "conv2d_batchnorm": (lambda: gf.Sequential(L.Conv2d(2, 3, 3, stride=2, padding=1), L.BatchNorm2d(3), L.ReLU(),
                                                   L.ConvTranspose2d(3, 2, 2, stride=2)),
                             lambda: t.Sequential(t.Conv2d(2, 3, 3, stride=2, padding=1), t.BatchNorm2d(3), t.ReLU(),
                                                  t.ConvTranspose2d(3, 2, 2, stride=2)), (2, 2, 6, 6)),
        "conv1d_groupnorm": (lambda: gf.Sequential(L.Conv1d(4, 4, 3, groups=2), L.GroupNorm(2, 4)),
                             lambda: t.Sequential(t.Conv1d(4, 4, 3, groups=2), t.GroupNorm(2, 4)), (3, 4, 7)),
        "layernorm": (lambda: gf.Sequential(L.LayerNorm(6), L.Linear(6, 6)),
                      lambda: t.Sequential(t.LayerNorm(6), t.Linear(6, 6)), (2, 3, 6)),
        "lstm": (lambda: L.LSTM(4, 4, num_layers=2, bidirectional=True, batch_first=True),
                 lambda: t.LSTM(4, 4, num_layers=2, bidirectional=True, batch_first=True), (2, 5, 4)),
        "gru": (lambda: L.GRU(3, 5, batch_first=True), lambda: t.GRU(3, 5, batch_first=True), (2, 4, 3)),
        "rnn_square": (lambda: L.RNN(4, 4, batch_first=True), lambda: t.RNN(4, 4, batch_first=True), (2, 3, 4)),
        "rnn_relu_no_bias": (lambda: L.RNN(3, 4, nonlinearity="relu", bias=False),
                             lambda: t.RNN(3, 4, nonlinearity="relu", bias=False, batch_first=True), (2, 3, 3)),
        "lstm_proj": (lambda: L.LSTM(3, 5, num_layers=2, proj_size=2, bidirectional=True),
                      lambda: t.LSTM(3, 5, num_layers=2, proj_size=2, bidirectional=True, batch_first=True), (2, 4, 3)),
        "lstm_cell": (lambda: L.LSTMCell(3, 4), lambda: t.LSTMCell(3, 4), (2, 3)),
        "gru_cell_no_bias": (lambda: L.GRUCell(4, 4, bias=False), lambda: t.GRUCell(4, 4, bias=False), (3, 4)),
        "rnn_cell_relu": (lambda: L.RNNCell(3, 5, nonlinearity="relu"), lambda: t.RNNCell(3, 5, nonlinearity="relu"), (2, 3)),
        "attention": (lambda: L.MultiHeadAttention(8, 2), lambda: t.MultiheadAttention(8, 2, batch_first=True), (2, 5, 8)),
        "encoder_block": (lambda: L.TransformerEncoderBlock(8, 2, mlp_ratio=2.0),
                          lambda: t.TransformerEncoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation="gelu",
                                                            batch_first=True, norm_first=True), (2, 5, 8)),
    }


def _torch_forward(model, x):
    if isinstance(model, torch.nn.MultiheadAttention):
        return model(x, x, x, need_weights=False)[0]
    out = model(x)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("family", sorted(_families()))
def test_a_pytorch_state_dict_loads_into_the_twin_with_the_same_outputs_and_gradients(family):
    make_ours, make_theirs, shape = _families()[family]
    torch.manual_seed(0)
    theirs = make_theirs().double()
    if family == "conv2d_batchnorm":  # non-trivial running statistics, used in eval mode
        theirs.train()
        theirs(torch.randn(8, *shape[1:], dtype=torch.float64))
    theirs.eval()
    ours = make_ours().to("cpu", "float64")
    load_torch_state_dict(ours, theirs.state_dict())
    ours.eval()
    x = np.random.default_rng(1).normal(size=shape)
    x_t = torch.tensor(x, requires_grad=True)
    y_t = _torch_forward(theirs, x_t)
    y, backprop = ours(x, train=False)
    if isinstance(y, tuple):
        y = y[0]
    np.testing.assert_allclose(gf.to_numpy(y), y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = np.random.default_rng(2).normal(size=y_t.shape)
    (y_t * torch.from_numpy(dy)).sum().backward()
    ours.zero_grad()
    dx = backprop(dy)
    np.testing.assert_allclose(gf.to_numpy(dx), x_t.grad.numpy(), rtol=1e-9, atol=1e-11)
    grads = torch_state_dict(ours, {name: p.grad for name, p in ours.named_parameters()})
    named = dict(theirs.named_parameters())
    assert set(grads) == set(named)
    for key, grad in grads.items():
        np.testing.assert_allclose(grad, named[key].grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=key)


@pytest.mark.parametrize("family", sorted(_families()))
def test_the_state_dict_written_back_loads_into_pytorch_and_gives_the_same_outputs(family):
    make_ours, make_theirs, shape = _families()[family]
    ours = make_ours().to("cpu", "float64").eval()
    theirs = make_theirs().double().eval()
    theirs.load_state_dict({k: torch.from_numpy(v) for k, v in torch_state_dict(ours).items()}, strict=True)
    x = np.random.default_rng(3).normal(size=shape)
    y = ours.predict(x)
    y = y[0] if isinstance(y, tuple) else y
    np.testing.assert_allclose(gf.to_numpy(y), _torch_forward(theirs, torch.from_numpy(x)).detach().numpy(),
                               rtol=1e-10, atol=1e-12)


def test_a_square_pytorch_linear_weight_loads_by_name_in_the_right_orientation():
    # Linear stores (out, in) like PyTorch: a square weight must not be transposed on the way in.
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 4)).double()
    ours = gf.Sequential(L.Linear(4, 4)).to("cpu", "float64")
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(3, 4))
    np.testing.assert_allclose(ours.predict(x), theirs(torch.from_numpy(x)).detach().numpy(), rtol=1e-12)


@pytest.mark.parametrize("kind,options", [
    ("RNN", {}), ("GRU", {}), ("LSTM", {}), ("LSTM", {"num_layers": 2, "bidirectional": True, "proj_size": 2}),
])
def test_a_pytorch_recurrent_state_dict_loads_by_name_without_interop(kind, options):
    # input_size == hidden_size: an RNN's weights are square, so a transposed layout would load
    # in silence; gradflow stores PyTorch's (G·H, in) and the plain load_state_dict is exact.
    torch.manual_seed(0)
    theirs = getattr(torch.nn, kind)(4, 4, batch_first=True, dtype=torch.float64, **options)
    ours = getattr(L, kind)(4, 4, **options).to("cpu", "float64")
    ours.load_state_dict({k: v.numpy() for k, v in theirs.state_dict().items()})
    x = np.random.default_rng(0).normal(size=(3, 5, 4))
    np.testing.assert_allclose(gf.to_numpy(ours.predict(x)), theirs(torch.from_numpy(x))[0].detach().numpy(),
                               rtol=1e-12, atol=1e-14)
    for name, value in ours.state_dict().items():
        assert tuple(value.shape) == tuple(theirs.state_dict()[name].shape), name


def test_unmappable_keys_and_shapes_are_refused_before_anything_changes():
    torch.manual_seed(0)
    theirs = torch.nn.Sequential(torch.nn.Linear(5, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    ours = gf.Sequential(L.Linear(5, 5), L.Tanh(), L.Linear(5, 3)).to("cpu", "float64")
    before = {k: gf.to_numpy(v).copy() for k, v in ours.state_dict().items()}
    with pytest.raises(InteropError, match=r"shape mismatches: 2.weight: PyTorch \(2, 5\)"):
        load_torch_state_dict(ours, theirs.state_dict())
    state = dict(theirs.state_dict())
    state["9.weight"] = state.pop("0.weight")
    with pytest.raises(InteropError, match=r"missing keys: \['0.weight'\]") as error:
        load_torch_state_dict(ours, state)
    assert "unexpected keys: ['9.weight']" in str(error.value)
    with pytest.raises(InteropError, match="state must be a mapping"):
        load_torch_state_dict(ours, [1, 2])
    for key, value in ours.state_dict().items():
        np.testing.assert_array_equal(gf.to_numpy(value), before[key])


def test_a_layer_without_a_pytorch_mapping_is_named():
    class Scale(gf.Layer):
        def __init__(self):
            self.gain = gf.Parameter(np.ones(3))

        def forward(self, x, train):
            return x * self.gain.value, lambda dy: dy * self.gain.value

    with pytest.raises(InteropError, match="no PyTorch mapping is known for Scale"):
        torch_key_map(gf.Sequential(L.Linear(3, 3), Scale()))


def test_key_map_names_pytorch_keys_of_packed_attention_and_encoder_blocks():
    keys = torch_key_map(L.TransformerEncoderBlock(8, 2))
    assert keys["attention.body.1.qkv.weight"] == "self_attn.in_proj_weight"
    assert keys["attention.body.1.out.bias"] == "self_attn.out_proj.bias"
    assert keys["mlp.body.1.weight"] == "linear1.weight" and keys["attention.body.0.weight"] == "norm1.weight"


def _grads_match(ours, theirs):
    grads = torch_state_dict(ours, {name: p.grad for name, p in ours.named_parameters()})
    named = dict(theirs.named_parameters())
    assert set(grads) == set(named)
    for key, grad in grads.items():
        np.testing.assert_allclose(grad, named[key].grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=key)


@pytest.mark.parametrize("norm_first, activation", [(True, "gelu"), (False, "relu")])
def test_a_pytorch_decoder_layer_and_its_twin_agree_on_outputs_and_gradients_with_a_causal_mask_and_memory(
        norm_first, activation):
    torch.manual_seed(0)
    theirs = torch.nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation=activation,
                                              batch_first=True, norm_first=norm_first).double().eval()
    ours = L.TransformerDecoderBlock(8, 2, mlp_ratio=2.0, activation=activation, norm_first=norm_first)
    ours = ours.to("cpu", "float64").eval()
    load_torch_state_dict(ours, theirs.state_dict())
    rng = np.random.default_rng(4)
    x, memory = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 3, 8))
    x_t, memory_t = torch.tensor(x, requires_grad=True), torch.tensor(memory, requires_grad=True)
    causal = torch.nn.Transformer.generate_square_subsequent_mask(5, dtype=torch.float64)
    y_t = theirs(x_t, memory_t, tgt_mask=causal, tgt_is_causal=True)
    y, backprop = ours(x, train=False, memory=memory)
    np.testing.assert_allclose(gf.to_numpy(y), y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = rng.normal(size=y_t.shape)
    (y_t * torch.from_numpy(dy)).sum().backward()
    ours.zero_grad()
    dx, d_memory = backprop(dy)
    np.testing.assert_allclose(gf.to_numpy(dx), x_t.grad.numpy(), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(gf.to_numpy(d_memory), memory_t.grad.numpy(), rtol=1e-9, atol=1e-11)
    _grads_match(ours, theirs)
    back = torch.nn.TransformerDecoderLayer(8, 2, dim_feedforward=16, dropout=0.0, activation=activation,
                                            batch_first=True, norm_first=norm_first).double().eval()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in torch_state_dict(ours).items()}, strict=True)
    np.testing.assert_allclose(back(torch.from_numpy(x), torch.from_numpy(memory), tgt_mask=causal).detach().numpy(),
                               gf.to_numpy(y), rtol=1e-10, atol=1e-12)


def test_key_map_names_pytorch_keys_of_a_decoder_block():
    keys = torch_key_map(L.TransformerDecoderBlock(8, 2))
    assert keys["cross_attention.body.1.qkv.weight"] == "multihead_attn.in_proj_weight"
    assert keys["cross_attention.body.0.bias"] == "norm2.bias" and keys["mlp.body.0.weight"] == "norm3.weight"
    assert keys["attention.body.1.out.weight"] == "self_attn.out_proj.weight"


@pytest.mark.parametrize("bias", [True, False])
def test_attention_with_its_own_key_and_value_sizes_maps_to_pytorchs_separate_projections(bias):
    torch.manual_seed(0)
    theirs = torch.nn.MultiheadAttention(8, 2, kdim=6, vdim=4, bias=bias, batch_first=True).double()
    ours = L.MultiHeadAttention(8, 2, kdim=6, vdim=4, bias=bias).to("cpu", "float64")
    keys = torch_key_map(ours)
    assert keys["k_proj.weight"] == "k_proj_weight" and keys["q_proj.weight"] == "q_proj_weight"
    assert set(torch_state_dict(ours)) == set(theirs.state_dict())
    load_torch_state_dict(ours, theirs.state_dict())
    rng = np.random.default_rng(5)
    query, key, value = rng.normal(size=(2, 5, 8)), rng.normal(size=(2, 3, 6)), rng.normal(size=(2, 3, 4))
    inputs_t = [torch.tensor(a, requires_grad=True) for a in (query, key, value)]
    y_t = theirs(*inputs_t, need_weights=False)[0]
    y, backprop = ours(query, train=False, key=key, value=value)
    np.testing.assert_allclose(gf.to_numpy(y), y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    dy = rng.normal(size=y_t.shape)
    (y_t * torch.from_numpy(dy)).sum().backward()
    ours.zero_grad()
    for delta, given in zip(backprop(dy), inputs_t):
        np.testing.assert_allclose(gf.to_numpy(delta), given.grad.numpy(), rtol=1e-9, atol=1e-11)
    _grads_match(ours, theirs)
    back = torch.nn.MultiheadAttention(8, 2, kdim=6, vdim=4, bias=bias, batch_first=True).double()
    back.load_state_dict({k: torch.from_numpy(v) for k, v in torch_state_dict(ours).items()}, strict=True)
    np.testing.assert_allclose(back(*(torch.from_numpy(a) for a in (query, key, value)), need_weights=False)[0]
                               .detach().numpy(), gf.to_numpy(y), rtol=1e-10, atol=1e-12)


def _unchanged_after(model, load):
    before = {k: gf.to_numpy(v).copy() for k, v in model.state_dict().items()}
    load()
    for key, value in model.state_dict().items():
        np.testing.assert_array_equal(gf.to_numpy(value), before[key])


def test_decoder_and_separate_projection_states_that_do_not_fit_are_refused_naming_key_expected_and_actual():
    t = torch.nn
    decoder = L.TransformerDecoderBlock(8, 2, mlp_ratio=2.0).to("cpu", "float64")
    wider = t.TransformerDecoderLayer(8, 2, dim_feedforward=12, batch_first=True).double().state_dict()

    def wrong_width():
        with pytest.raises(InteropError, match=r"linear1.weight: PyTorch \(12, 8\) gives \(12, 8\), "
                                               r"the model's mlp.body.1.weight is \(16, 8\)"):
            load_torch_state_dict(decoder, wider)
    _unchanged_after(decoder, wrong_width)

    own_memory = L.TransformerDecoderBlock(8, 2, mlp_ratio=2.0, memory_dim=6).to("cpu", "float64")
    packed = t.TransformerDecoderLayer(8, 2, dim_feedforward=16, batch_first=True).double().state_dict()

    def packed_for_separate():
        with pytest.raises(InteropError, match=r"missing keys: \['multihead_attn.q_proj_weight'") as error:
            load_torch_state_dict(own_memory, packed)
        assert "unexpected keys: ['multihead_attn.in_proj_weight']" in str(error.value)
    _unchanged_after(own_memory, packed_for_separate)

    attention = L.MultiHeadAttention(8, 2, kdim=6, vdim=4).to("cpu", "float64")
    state = dict(t.MultiheadAttention(8, 2, kdim=6, vdim=4, batch_first=True).double().state_dict())
    state["in_proj_bias"] = state["in_proj_bias"][:20]
    state["k_proj_weight"] = torch.zeros(8, 5, dtype=torch.float64)

    def short_bias_and_narrow_key():
        with pytest.raises(InteropError, match=r"in_proj_bias: PyTorch \(20,\), the model's \['q_proj.bias', "
                                               r"'k_proj.bias', 'v_proj.bias'\] need \(24,\)") as error:
            load_torch_state_dict(attention, state)
        assert "k_proj_weight: PyTorch (8, 5) gives (8, 5), the model's k_proj.weight is (8, 6)" in str(error.value)
    _unchanged_after(attention, short_bias_and_narrow_key)

    extra = t.MultiheadAttention(8, 2, kdim=6, vdim=4, add_bias_kv=True, batch_first=True).double().state_dict()

    def extra_bias_kv():
        with pytest.raises(InteropError, match=r"unexpected keys: \['bias_k', 'bias_v'\]"):
            load_torch_state_dict(attention, extra)
    _unchanged_after(attention, extra_bias_kv)
