"""Sequence layers beyond the registry: scatter-add fallback, embedding padding, dropout masks and
RNG state, recurrent states across calls and their δ, PyTorch agreement, attention masks, keyword
routing through containers, and vanishing gradients."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

import gradflow as gf
from gradflow import backend
from gradflow import layers as L
from gradflow.testing import gradcheck
from tests.cases.sequence import recurrent_ref

ROOT = Path(__file__).resolve().parents[2]


def host(x):
    return backend.to_numpy(x).astype(np.float64)


# --------------------------------------------------------------------------------------------
# scatter-add and Embedding
# --------------------------------------------------------------------------------------------


def test_scatter_add_rows_fallback_matches_fast_path_with_duplicates_on_every_device(device):
    rng = np.random.default_rng(0)
    indices = np.array([3, 0, 3, 3, 5, 0, 1])
    values = rng.normal(size=(7, 4))
    expected = np.zeros((6, 4))
    np.add.at(expected, indices, values)
    assert expected[3].tolist() == pytest.approx((values[0] + values[2] + values[3]).tolist())
    results = {}
    for portable in (False, True):
        target = device.zeros((6, 4), "float64")
        out = backend.scatter_add_rows(target, device.send(indices), device.send(values, "float64"), portable=portable)
        assert out is target
        results[portable] = host(out)
        np.testing.assert_allclose(results[portable], expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[True], results[False], rtol=1e-12, atol=1e-12)


def test_embedding_padding_row_is_zero_and_gets_no_gradient_on_every_device(device):
    layer = L.Embedding(6, 3, padding_idx=2, rng=0).to(device, "float64")
    ids = np.array([[2, 1, 2], [5, 1, 0]])
    weight = host(layer.weight.value)
    assert np.all(weight[2] == 0)
    y, backprop = layer(device.send(ids), train=True)
    assert np.all(host(y)[0, [0, 2]] == 0)
    dy = np.random.default_rng(1).normal(size=(2, 3, 3))
    assert backprop(device.send(dy, "float64")) is None  # ids have no δ
    expected = np.zeros((6, 3))
    np.add.at(expected, ids.reshape(-1), dy.reshape(-1, 3))
    expected[2] = 0
    np.testing.assert_allclose(host(layer.weight.grad), expected, rtol=1e-12, atol=1e-12)


def test_embedding_gradients_of_two_calls_add_up():
    layer = L.Embedding(4, 2, rng=0)
    for ids in (np.array([[0, 1]]), np.array([[1, 3]])):
        _, backprop = layer(gf.device("cpu").send(ids), train=True)
        backprop(np.ones((1, 2, 2), dtype=np.float32))
    np.testing.assert_array_equal(host(layer.weight.grad)[:, 0], [1, 2, 0, 1])


def test_embedding_rejects_bad_padding_index():
    with pytest.raises(ValueError, match=r"Embedding: padding_idx must be an int in \[0, 4\), got 4"):
        L.Embedding(4, 2, padding_idx=4)


def test_sequential_starting_with_embedding_returns_no_input_delta():
    model = gf.Sequential(L.Embedding(5, 4, rng=0), L.LSTM(4, 3, return_sequences=False, rng=1), L.Linear(3, 2, rng=2))
    y, backprop = model(gf.device("cpu").send(np.array([[1, 2, 3], [4, 0, 0]])), train=True)
    assert backprop(np.ones((2, 2), dtype=np.float32)) is None
    assert all(p.grad is not None for p in model.parameters())


# --------------------------------------------------------------------------------------------
# Dropout
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("p", [-0.1, 1.0, 1.5, "0.5", True])
def test_dropout_rejects_p_outside_zero_one(p):
    with pytest.raises(ValueError, match=r"Dropout: p must be a number in \[0, 1\)"):
        L.Dropout(p)


def test_dropout_keeps_about_one_minus_p_and_scales_kept_entries_on_every_device(device):
    layer = L.Dropout(0.3, seed=1)
    x = device.send(np.full((200, 100), 2.0), "float32")
    y, backprop = layer(x, train=True)
    values = host(y)
    kept = values != 0
    np.testing.assert_allclose(values[kept], 2.0 / 0.7, rtol=1e-6)
    assert abs(kept.mean() - 0.7) < 0.01  # 20,000 draws: the standard error is 0.003
    np.testing.assert_array_equal(host(backprop(device.send(np.ones((200, 100)), "float32"))) != 0, kept)
    assert backend.device_of(y) == device


def test_dropout_is_identity_in_eval_mode_and_with_train_false(device):
    layer = L.Dropout(0.5)
    x = device.send(np.arange(6.0).reshape(2, 3), "float32")
    assert layer(x, train=False)[0] is x
    layer.eval()
    assert layer(x)[0] is x
    np.testing.assert_array_equal(host(layer.predict(x)), host(x))


def test_dropout_reset_rng_repeats_the_mask_and_successive_calls_differ():
    layer = L.Dropout(0.5, seed=3)
    x = np.ones((8, 8), dtype=np.float32)
    first = layer(x, train=True)[0]
    second = layer(x, train=True)[0]
    assert not np.array_equal(first, second)
    layer.reset_rng()
    np.testing.assert_array_equal(layer(x, train=True)[0], first)
    layer.reset_rng(seed=4)
    assert not np.array_equal(layer(x, train=True)[0], first)


def test_dropout_layers_without_a_seed_draw_different_masks_reproducibly():
    x = np.ones((6, 6), dtype=np.float32)
    gf.seed(5)
    first, second = L.Dropout(0.5), L.Dropout(0.5)
    assert not np.array_equal(first(x, train=True)[0], second(x, train=True)[0])
    gf.seed(5)
    again = L.Dropout(0.5)
    first.reset_rng()
    np.testing.assert_array_equal(again(x, train=True)[0], first(x, train=True)[0])


def test_dropout_state_round_trips_through_json_and_resumes_the_stream():
    layer = L.Dropout(0.5, seed=9)
    x = np.ones((4, 16), dtype=np.float32)
    layer(x, train=True)
    saved = json.loads(json.dumps(layer.get_state()))
    expected = [layer(x, train=True)[0] for _ in range(2)]
    fresh = L.Dropout(0.5, seed=0)
    fresh.set_state(saved)
    for mask in expected:
        np.testing.assert_array_equal(fresh(x, train=True)[0], mask)


def test_dropout_masks_agree_between_host_devices():
    """NumPy, strict and torch all draw from the same host PCG64 stream."""
    masks = []
    for name in ("cpu", "strict"):
        dev = gf.device(name)
        masks.append(host(L.Dropout(0.5, seed=2)(dev.send(np.ones((5, 7)), "float32"), train=True)[0]))
    np.testing.assert_array_equal(masks[0], masks[1])


# --------------------------------------------------------------------------------------------
# Recurrent layers: states across calls, δ of the initial state, PyTorch
# --------------------------------------------------------------------------------------------

RECURRENT = {"rnn": L.RNN, "lstm": L.LSTM, "gru": L.GRU}


def _state_to(dev, state, dtype="float64"):
    if isinstance(state, tuple):
        return tuple(dev.send(s, dtype) for s in state)
    return dev.send(state, dtype)


def _host_state(state):
    return tuple(host(s) for s in state) if isinstance(state, tuple) else (host(state),)


@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_two_half_sequence_calls_equal_one_full_call_with_gradients(kind, device):
    N, T, F, H = 2, 6, 3, 4
    rng = np.random.default_rng(0)
    x_host = rng.normal(size=(N, T, F))
    dy_host = rng.normal(size=(N, T, H))
    x, dy = device.send(x_host, "float64"), device.send(dy_host, "float64")

    full = RECURRENT[kind](F, H, num_layers=2, rng=1).to(device, "float64")
    (y_full, final_full), back_full = full(x, True, return_state=True)
    dx_full, d0_full = back_full((dy, None))

    split = RECURRENT[kind](F, H, num_layers=2, rng=1).to(device, "float64")
    (y1, middle), back1 = split(x[:, :3, :], True, return_state=True)
    (y2, final), back2 = split(x[:, 3:, :], True, state=middle, return_state=True)
    dx2, d_middle = back2((dy[:, 3:, :], None))
    dx1, d0 = back1((dy[:, :3, :], d_middle))

    np.testing.assert_allclose(np.concatenate([host(y1), host(y2)], axis=1), host(y_full), rtol=1e-12, atol=1e-12)
    for a, b in zip(_host_state(final), _host_state(final_full)):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(np.concatenate([host(dx1), host(dx2)], axis=1), host(dx_full), rtol=1e-10, atol=1e-12)
    for a, b in zip(_host_state(d0), _host_state(d0_full)):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
    for (name, p), (_, q) in zip(split.named_parameters(), full.named_parameters()):
        np.testing.assert_allclose(host(p.grad), host(q.grad), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_final_state_matches_reference_and_its_delta_reaches_the_initial_state(kind, device):
    N, T, F, H, layers = 2, 3, 2, 3, 2
    rng = np.random.default_rng(1)
    x_host = rng.normal(size=(N, T, F))
    h0 = rng.normal(size=(2 * layers, N, H))
    state_host = (h0, rng.normal(size=h0.shape)) if kind == "lstm" else h0
    layer = RECURRENT[kind](F, H, layers, bidirectional=True, rng=2).to(device, "float64")
    x = device.send(x_host, "float64")
    (y, final), _ = layer(x, True, state=_state_to(device, state_host), return_state=True)
    params = {k: host(v) for k, v in layer.state_dict().items()}
    y_ref, h_ref, c_ref = recurrent_ref(kind, params, x_host, num_layers=layers, bidirectional=True, state=state_host)
    np.testing.assert_allclose(host(y), y_ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_host_state(final)[0], h_ref, rtol=1e-12, atol=1e-12)
    if kind == "lstm":
        np.testing.assert_allclose(_host_state(final)[1], c_ref, rtol=1e-12, atol=1e-12)

    # δ of the initial state (h0, and c0 for the LSTM) against finite differences, through the
    # outputs and the final state both.
    for part in range(2 if kind == "lstm" else 1):
        def call(value, part=part):
            parts = list(state_host) if kind == "lstm" else [state_host]
            parts = [device.send(p, "float64") for p in parts]
            parts[part] = value
            state = tuple(parts) if kind == "lstm" else parts[0]
            (out, fin), backprop = layer(x, True, state=state, return_state=True)
            fin_h = fin[0] if kind == "lstm" else fin
            xp = backend.namespace(out)
            with device:  # raw array math on a GPU runs in its context
                joined = xp.concat([xp.reshape(out, (-1,)), xp.reshape(fin_h, (-1,))])

            def back(w):
                n = 1
                for s in out.shape:
                    n *= s
                with device:
                    dy = xp.reshape(w[:n], tuple(out.shape))
                    d_h = xp.reshape(w[n:], tuple(fin_h.shape))
                d_final = (d_h, None) if kind == "lstm" else d_h
                d_initial = backprop((dy, d_final))[1]
                return d_initial[part] if kind == "lstm" else d_initial

            return joined, back

        start = (state_host[part] if kind == "lstm" else state_host)
        gradcheck(call, device.send(start, "float64"))


def test_return_state_backprop_takes_only_a_final_state_delta():
    layer = L.GRU(2, 3, rng=0).to("cpu", "float64")
    x = np.random.default_rng(0).normal(size=(2, 4, 2))
    (_, final), backprop = layer(x, True, return_state=True)
    dx, d_h0 = backprop((None, np.ones_like(final)))
    assert dx.shape == x.shape and d_h0.shape == final.shape
    (_, final), backprop = layer(x, True, return_state=True)  # a backprop runs once: a fresh forward
    with pytest.raises(ValueError, match=r"GRU.*neither an output δ nor a final-state δ"):
        backprop((None, None))


def test_recurrent_backprop_rejects_delta_of_the_wrong_shape():
    layer = L.LSTM(2, 3, return_sequences=False, rng=0)
    _, backprop = layer(np.ones((2, 5, 2), dtype=np.float32), True)
    with pytest.raises(ValueError, match=r"LSTM\(2, 3, return_sequences=False\): backprop expected a δ of shape \(2, 3\)"):
        backprop(np.ones((2, 5, 3), dtype=np.float32))


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_recurrent_layers_match_torch_nn_forward_and_gradients(kind):
    torch = pytest.importorskip("torch")
    N, T, F, H, layers = 3, 5, 4, 6, 2
    ours = RECURRENT[kind](F, H, layers, bidirectional=True, rng=0).to("cpu", "float64")
    theirs = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[kind](
        F, H, layers, bidirectional=True, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        for name, p in ours.named_parameters():  # PyTorch's names and shapes
            getattr(theirs, name).copy_(torch.from_numpy(host(p.value).copy()))
    rng = np.random.default_rng(3)
    x = rng.normal(size=(N, T, F))
    dy = rng.normal(size=(N, T, 2 * H))
    y, backprop = ours(x, True)
    x_t = torch.tensor(x, requires_grad=True)
    y_t = theirs(x_t)[0]
    (y_t * torch.from_numpy(dy)).sum().backward()
    dx = backprop(dy)
    np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(host(p.grad), getattr(theirs, name).grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


def test_lstm_forget_bias_is_added_to_the_forget_block_only():
    plain = L.LSTM(2, 3, rng=0)
    biased = L.LSTM(2, 3, forget_bias=1.0, rng=0)
    diff = host(biased.bias_ih_l0.value) - host(plain.bias_ih_l0.value)
    np.testing.assert_allclose(diff, [0, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0], atol=1e-6)


def test_moving_a_recurrent_layer_moves_every_weight(device):
    layer = L.LSTM(2, 3, num_layers=2, bidirectional=True, rng=0).to(device)
    assert all(p.device == device for p in layer.parameters())
    y, backprop = layer(device.send(np.ones((1, 2, 2)), "float32"), True)
    backprop(y)
    assert all(backend.device_of(p.grad) == device for p in layer.parameters())


# --------------------------------------------------------------------------------------------
# Attention and the transformer block
# --------------------------------------------------------------------------------------------


def test_attention_ignores_padded_keys_and_future_positions(device):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6))
    mask = np.array([[False, False, False, True, True], [False] * 5])
    layer = L.MultiHeadAttention(6, 2, causal=True, rng=0).to(device, "float64")
    kwargs = {"key_padding_mask": device.send(mask)}
    y = host(layer(device.send(x, "float64"), False, **kwargs)[0])
    changed = x.copy()
    changed[0, 3:] += 10.0  # padded keys of sample 0
    changed[1, 4] += 10.0  # the last step of sample 1: the future of every other step
    y2 = host(layer(device.send(changed, "float64"), False, **kwargs)[0])
    np.testing.assert_allclose(y2[0, :3], y[0, :3], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(y2[1, :4], y[1, :4], rtol=1e-12, atol=1e-12)
    assert not np.allclose(y2[1, 4], y[1, 4])


def test_attention_query_that_sees_no_key_outputs_the_bias_only():
    layer = L.MultiHeadAttention(4, 2, causal=True, rng=0).to("cpu", "float64")
    x = np.random.default_rng(0).normal(size=(1, 3, 4))
    y, backprop = layer(x, True, key_padding_mask=np.array([[True, False, False]]))
    np.testing.assert_allclose(y[0, 0], host(layer.out.bias.value), atol=1e-15)
    dx = backprop(np.ones_like(y))
    assert np.all(np.isfinite(dx))


def test_attention_rejects_embed_dim_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"embed_dim \(6\) must be divisible by num_heads \(4\)"):
        L.MultiHeadAttention(6, 4)


def test_attention_matches_torch_multihead_attention():
    torch = pytest.importorskip("torch")
    ours = L.MultiHeadAttention(8, 2, rng=0).to("cpu", "float64")
    theirs = torch.nn.MultiheadAttention(8, 2, batch_first=True, dtype=torch.float64)
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.from_numpy(host(ours.qkv.weight.value).copy()))
        theirs.in_proj_bias.copy_(torch.from_numpy(host(ours.qkv.bias.value)))
        theirs.out_proj.weight.copy_(torch.from_numpy(host(ours.out.weight.value).copy()))
        theirs.out_proj.bias.copy_(torch.from_numpy(host(ours.out.bias.value)))
    x = np.random.default_rng(1).normal(size=(2, 5, 8))
    mask = np.array([[False, False, True, False, True], [False] * 5])
    x_t = torch.from_numpy(x)
    expected = theirs(x_t, x_t, x_t, key_padding_mask=torch.from_numpy(mask), need_weights=False)[0]
    np.testing.assert_allclose(ours(x, False, key_padding_mask=mask)[0], expected.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_sequential_routes_keywords_to_the_layers_that_take_them():
    attention = L.MultiHeadAttention(4, 1, rng=0)
    model = gf.Sequential(L.LayerNorm(4), attention, L.Dropout(0.1))
    x = np.random.default_rng(0).normal(size=(2, 3, 4)).astype(np.float32)
    mask = np.array([[False, False, True], [False, False, False]])
    y = model.predict(x, key_padding_mask=mask)
    expected = attention.predict(model[0].predict(x), key_padding_mask=mask)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    with pytest.raises(TypeError, match=r"Sequential: no layer inside takes the keyword argument\(s\) \['mask'\]"):
        model(x, True, mask=mask)


def test_transformer_block_dropout_is_off_in_eval_and_on_in_training():
    block = L.TransformerEncoderBlock(8, 2, dropout=0.5, rng=0)
    x = np.random.default_rng(0).normal(size=(2, 4, 8)).astype(np.float32)
    np.testing.assert_array_equal(block.predict(x), block.predict(x))
    assert not np.allclose(block(x, True)[0], block.predict(x))


def test_sinusoidal_encoding_is_created_on_the_input_device(device):
    x = device.send(np.zeros((1, 4, 6)), "float32")
    y = L.SinusoidalPositionalEncoding(6)(x)[0]
    assert backend.device_of(y) == device and y.dtype == x.dtype
    np.testing.assert_allclose(host(y)[0, :, 0], np.sin(np.arange(4)), rtol=1e-6)


# --------------------------------------------------------------------------------------------
# Vanishing gradients
# --------------------------------------------------------------------------------------------


def _load_example(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "examples" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tanh_rnn_gradient_vanishes_orders_of_magnitude_faster_than_lstm_and_gru():
    example = _load_example("vanishing_gradients")
    decay = {}
    for name, make in example.NETWORKS.items():
        norms = example.gradient_norms(make, steps=100, hidden=32)
        decay[name] = norms[0] / norms[-1]  # ‖∂L/∂h_0‖ / ‖∂L/∂h_99‖
    assert decay["RNN (tanh)"] < 1e-20  # the RNN forgets the first step entirely
    assert decay["RNN (tanh)"] < 1e-4 * decay["LSTM"]  # measured: 2e-26 vs 2e-20
    assert decay["RNN (tanh)"] < 1e-4 * decay["GRU"]  # measured: 2e-26 vs 2e-21
    assert decay["LSTM, forget bias 1"] > 1e-10  # measured: 5e-8


def test_evaluate_accuracy_counts_every_position_of_a_sequence():
    from gradflow.train import evaluate

    class Echo(gf.Layer):  # logits that predict class (id mod 3) at every position
        def forward(self, x, train):
            xp = backend.namespace(x)
            return xp.astype(xp.reshape(x, (*x.shape, 1)) % 3 == xp.arange(3), xp.float32), None

    ids = np.array([[0, 1, 2, 4], [5, 1, 0, 3]])
    labels = ids % 3
    labels[0, 0] = 1  # one wrong position out of 8
    assert evaluate(Echo(), None, (ids, labels))["accuracy"] == pytest.approx(7 / 8)


# --------------------------------------------------------------------------------------------
# Recurrent options (issue 14) against torch.nn in float64, and the cells
# --------------------------------------------------------------------------------------------

TORCH_LAYERS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}


def _copy_into_torch(ours, theirs):
    torch = pytest.importorskip("torch")
    with torch.no_grad():
        for name, p in ours.named_parameters():  # PyTorch's names and shapes
            getattr(theirs, name).copy_(torch.from_numpy(host(p.value).copy()))


def _torch_run(kind, theirs, x, state, dy, d_final, lengths=None):
    """Outputs, final states and the gradients of x, the initial state and every parameter."""
    torch = pytest.importorskip("torch")
    theirs.zero_grad()
    x_t = torch.tensor(x, requires_grad=True)
    parts = [torch.tensor(s, requires_grad=True) for s in (state if kind == "lstm" else (state,))]
    source = x_t
    if lengths is not None:
        source = torch.nn.utils.rnn.pack_padded_sequence(x_t, torch.tensor(lengths), batch_first=True, enforce_sorted=False)
    out, final = theirs(source, tuple(parts) if kind == "lstm" else parts[0])
    if lengths is not None:
        out = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]
    finals = final if kind == "lstm" else (final,)
    loss = (out * torch.from_numpy(dy)).sum()
    for f, d in zip(finals, d_final if kind == "lstm" else (d_final,)):
        loss = loss + (f * torch.from_numpy(d)).sum()
    loss.backward()
    return (out.detach().numpy(), [f.detach().numpy() for f in finals], x_t.grad.numpy(), [p.grad.numpy() for p in parts],
            {name: p.grad.numpy() for name, p in theirs.named_parameters()})


def _compare_with_torch(kind, ours, theirs, N, T, F, seed=0, lengths=None, padding_mask=None):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, T, F))
    h_size, LD = ours.output_size, ours.num_layers * ours.directions
    h0 = rng.normal(size=(LD, N, h_size))
    state = (h0, rng.normal(size=(LD, N, ours.hidden_size))) if kind == "lstm" else h0
    dy = rng.normal(size=(N, T, ours.directions * h_size))
    if lengths is not None:
        dy = dy * (np.arange(T)[None, :, None] < np.asarray(lengths)[:, None, None])  # torch pads with constants
    d_final = tuple(rng.normal(size=s.shape) for s in state) if kind == "lstm" else rng.normal(size=h0.shape)
    _copy_into_torch(ours, theirs)
    y_t, finals_t, dx_t, d0_t, grads_t = _torch_run(kind, theirs, x, state, dy, d_final, lengths)
    call = {"lengths": lengths} if padding_mask is None else {"padding_mask": padding_mask}
    ours.zero_grad()
    (y, final), backprop = ours(x, state=state, return_state=True, **(call if lengths is not None else {}))
    dx, d0 = backprop((dy, d_final))
    tol = dict(rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(host(y), y_t, **tol)
    for a, b in zip(_host_state(final), finals_t):
        np.testing.assert_allclose(a, b, **tol)
    np.testing.assert_allclose(host(dx), dx_t, **tol)
    for a, b in zip(_host_state(d0), d0_t):
        np.testing.assert_allclose(a, b, **tol)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(host(p.grad), grads_t[name], err_msg=name, **tol)


@pytest.mark.parametrize("kind,options,torch_options", [
    ("rnn", {"nonlinearity": "relu"}, {"nonlinearity": "relu"}),
    ("rnn", {"nonlinearity": "relu", "bias": False}, {"nonlinearity": "relu", "bias": False}),
    ("lstm", {"bias": False}, {"bias": False}),
    ("gru", {"bias": False}, {"bias": False}),
    ("lstm", {"proj_size": 2}, {"proj_size": 2}),
    ("lstm", {"proj_size": 3, "bias": False}, {"proj_size": 3, "bias": False}),
    ("gru", {"dropout": 0.5, "seed": 0}, {"dropout": 0.5}),  # eval mode: no dropout in either
])
def test_recurrent_options_match_torch_nn_outputs_states_and_gradients(kind, options, torch_options):
    torch = pytest.importorskip("torch")
    N, T, F, H, layers = 3, 5, 4, 5, 2
    ours = RECURRENT[kind](F, H, layers, bidirectional=True, rng=0, **options).to("cpu", "float64")
    theirs = getattr(torch.nn, TORCH_LAYERS[kind])(F, H, layers, bidirectional=True, batch_first=True,
                                                   dtype=torch.float64, **torch_options)
    if "dropout" in options:
        ours.eval()
        theirs.eval()
    _compare_with_torch(kind, ours, theirs, N, T, F)


@pytest.mark.parametrize("kind", sorted(RECURRENT))
@pytest.mark.parametrize("options", [{}, {"proj_size": 2}], ids=["plain", "proj"])
def test_padded_batches_match_torch_pack_padded_sequence(kind, options):
    torch = pytest.importorskip("torch")
    if options and kind != "lstm":
        pytest.skip("proj_size is an LSTM option")
    N, T, F, H, layers = 4, 6, 3, 4, 2
    lengths = [6, 2, 4, 1]
    ours = RECURRENT[kind](F, H, layers, bidirectional=True, rng=1, **options).to("cpu", "float64")
    theirs = getattr(torch.nn, TORCH_LAYERS[kind])(F, H, layers, bidirectional=True, batch_first=True,
                                                   dtype=torch.float64, **options)
    _compare_with_torch(kind, ours, theirs, N, T, F, seed=2, lengths=lengths)
    # the same through padding_mask (True = padded)
    mask = ~(np.arange(T)[None, :] < np.array(lengths)[:, None])
    _compare_with_torch(kind, ours, theirs, N, T, F, seed=2, lengths=lengths, padding_mask=mask)


@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_padded_steps_change_neither_states_nor_gradients(kind, device):
    N, T, F, H = 3, 5, 2, 3
    rng = np.random.default_rng(4)
    x = rng.normal(size=(N, T, F))
    mask = np.array([[False, True, False, True, True], [False] * 5, [True, False, False, True, False]])
    layer = RECURRENT[kind](F, H, 2, bidirectional=True, rng=3).to(device, "float64")
    results = []
    for fill in (0.0, 7.0):  # what the padded steps hold must not matter
        layer.zero_grad()
        x_filled = np.where(mask[:, :, None], fill, x)
        (y, final), backprop = layer(device.send(x_filled, "float64"), True, padding_mask=device.send(mask),
                                     return_state=True)
        if fill == 0.0:  # a backprop runs once: one δ for both fills
            dy = device.send(rng.normal(size=tuple(y.shape)), "float64")
        dx, _ = backprop((dy, None))
        results.append((host(y), _host_state(final), host(dx), {n: host(p.grad) for n, p in layer.named_parameters()}))
    (y0, f0, dx0, g0), (y1, f1, dx1, g1) = results
    np.testing.assert_array_equal(y0, y1)
    assert np.all(y0[mask] == 0)  # padded outputs are 0
    assert np.all(dx0[mask] == 0)  # and padded inputs get no δ
    np.testing.assert_array_equal(dx0, dx1)
    for a, b in zip(f0, f1):
        np.testing.assert_array_equal(a, b)
    for name in g0:
        np.testing.assert_allclose(g0[name], g1[name], rtol=1e-12, atol=1e-12, err_msg=name)
    # a sample with every step real gives what it gives alone, unpadded
    alone = RECURRENT[kind](F, H, 2, bidirectional=True, rng=3).to(device, "float64")
    y_alone = host(alone(device.send(x[1:2], "float64"), True)[0])
    np.testing.assert_allclose(y0[1:2], y_alone, rtol=1e-12, atol=1e-12)


def _dropout_masks(layer, device, T, N, p, seed):
    """The masks the layer's dropout draws, from a twin Dropout on the same device, batch-major."""
    twin = L.Dropout(p, seed=seed)
    features = layer.directions * layer.output_size
    masks = []
    for _ in range(layer.num_layers - 1):
        ones = device.send(np.ones((T, N, features)), "float64")
        masks.append(host(twin(ones, True)[0]).transpose(1, 0, 2))
    return masks


def test_dropout_between_layers_uses_seeded_masks_and_matches_a_reference_and_torch(device):
    N, T, F, H, p = 2, 4, 3, 3, 0.4
    layer = L.LSTM(F, H, 3, bidirectional=True, dropout=p, seed=5, rng=0).to(device, "float64")
    x = np.random.default_rng(0).normal(size=(N, T, F))
    masks = _dropout_masks(layer, device, T, N, p, 5)
    assert any(np.any(m == 0) for m in masks) and all(set(np.unique(m)) <= {0.0, 1 / (1 - p)} for m in masks)
    params = {k: host(v) for k, v in layer.state_dict().items()}
    y, backprop = layer(device.send(x, "float64"), True)
    expected = recurrent_ref("lstm", params, x, num_layers=3, bidirectional=True, dropout_masks=masks)[0]
    np.testing.assert_allclose(host(y), expected, rtol=1e-12, atol=1e-12)
    # reproducible: the same seed gives the same masks; the stream moves on between calls
    again = L.LSTM(F, H, 3, bidirectional=True, dropout=p, seed=5, rng=0).to(device, "float64")
    np.testing.assert_array_equal(host(again(device.send(x, "float64"), True)[0]), host(y))
    assert not np.array_equal(host(again(device.send(x, "float64"), True)[0]), host(y))
    # off in eval mode and with train=False
    plain = recurrent_ref("lstm", params, x, num_layers=3, bidirectional=True)[0]
    np.testing.assert_allclose(host(layer.predict(device.send(x, "float64"))), plain, rtol=1e-12, atol=1e-12)
    # gradients against torch.nn, one torch layer per level with the same masks in between
    torch = pytest.importorskip("torch")
    dy = np.random.default_rng(1).normal(size=tuple(y.shape))
    layer.zero_grad()
    dx = host(backprop(device.send(dy, "float64")))
    x_t = torch.tensor(x, requires_grad=True)
    sequence, levels = x_t, []
    for k in range(3):
        level = torch.nn.LSTM(F if k == 0 else 2 * H, H, bidirectional=True, batch_first=True, dtype=torch.float64)
        with torch.no_grad():
            for name, q in level.named_parameters():
                getattr(level, name).copy_(torch.from_numpy(params[name.replace("_l0", f"_l{k}")].copy()))
        if k:
            sequence = sequence * torch.from_numpy(masks[k - 1])
        sequence = level(sequence)[0]
        levels.append(level)
    (sequence * torch.from_numpy(dy)).sum().backward()
    np.testing.assert_allclose(host(y), sequence.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    for k, level in enumerate(levels):
        for name, q in level.named_parameters():
            ours_name = name.replace("_l0", f"_l{k}")
            np.testing.assert_allclose(host(getattr(layer, ours_name).grad), q.grad.numpy(), rtol=1e-10, atol=1e-12,
                                       err_msg=ours_name)


@pytest.mark.parametrize("kind,options", [("rnn", {}), ("rnn", {"nonlinearity": "relu", "bias": False}),
                                          ("lstm", {}), ("lstm", {"bias": False}), ("gru", {}), ("gru", {"bias": False})])
def test_cells_match_torch_nn_cells(kind, options):
    torch = pytest.importorskip("torch")
    cls = {"rnn": L.RNNCell, "lstm": L.LSTMCell, "gru": L.GRUCell}[kind]
    N, F, H = 3, 4, 5
    ours = cls(F, H, rng=0, **options).to("cpu", "float64")
    theirs = getattr(torch.nn, TORCH_LAYERS[kind] + "Cell")(F, H, dtype=torch.float64, **options)
    _copy_into_torch(ours, theirs)
    rng = np.random.default_rng(5)
    x = rng.normal(size=(N, F))
    state = (rng.normal(size=(N, H)), rng.normal(size=(N, H))) if kind == "lstm" else rng.normal(size=(N, H))
    dy = rng.normal(size=(N, H))
    d_state = (rng.normal(size=(N, H)), rng.normal(size=(N, H))) if kind == "lstm" else rng.normal(size=(N, H))
    x_t = torch.tensor(x, requires_grad=True)
    parts = [torch.tensor(s, requires_grad=True) for s in (state if kind == "lstm" else (state,))]
    out = theirs(x_t, tuple(parts) if kind == "lstm" else parts[0])
    outs = out if kind == "lstm" else (out,)
    loss = (outs[0] * torch.from_numpy(dy)).sum()
    for o, d in zip(outs, d_state if kind == "lstm" else (d_state,)):
        loss = loss + (o * torch.from_numpy(d)).sum()
    loss.backward()
    (y, new_state), backprop = ours(x, True, state=state, return_state=True)
    dx, d0 = backprop((dy, d_state))
    np.testing.assert_allclose(y, outs[0].detach().numpy(), rtol=1e-10, atol=1e-12)
    for a, b in zip(_host_state(new_state), outs):
        np.testing.assert_allclose(a, b.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, x_t.grad.numpy(), rtol=1e-10, atol=1e-12)
    for a, b in zip(_host_state(d0), parts):
        np.testing.assert_allclose(a, b.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name, p in ours.named_parameters():
        np.testing.assert_allclose(host(p.grad), getattr(theirs, name).grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_a_hand_written_cell_loop_equals_the_layer_with_gradients(kind, device):
    N, T, F, H = 2, 4, 3, 3
    rng = np.random.default_rng(6)
    x_host, dy_host = rng.normal(size=(N, T, F)), rng.normal(size=(N, T, H))
    layer = RECURRENT[kind](F, H, rng=0).to(device, "float64")
    cell = {"rnn": L.RNNCell, "lstm": L.LSTMCell, "gru": L.GRUCell}[kind](F, H, rng=1).to(device, "float64")
    cell.load_state_dict({name.replace("_l0", ""): value for name, value in layer.state_dict().items()})
    x, dy = device.send(x_host, "float64"), device.send(dy_host, "float64")
    y, backprop = layer(x, True)
    dx = host(backprop(dy))
    state, outputs, backs = None, [], []
    for t in range(T):
        (h, state), back = cell(x[:, t, :], True, state=state, return_state=True)
        outputs.append(host(h))
        backs.append(back)
    np.testing.assert_allclose(np.stack(outputs, axis=1), host(y), rtol=1e-12, atol=1e-12)
    d_state, d_steps = None, [None] * T
    for t in reversed(range(T)):
        d_x_t, d_state = backs[t]((dy[:, t, :], d_state))
        d_steps[t] = host(d_x_t)
    np.testing.assert_allclose(np.stack(d_steps, axis=1), dx, rtol=1e-10, atol=1e-12)
    for name, p in cell.named_parameters():
        np.testing.assert_allclose(host(p.grad), host(getattr(layer, name + "_l0").grad), rtol=1e-10, atol=1e-12,
                                   err_msg=name)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_initial_state_delta_with_lengths_and_projection_matches_finite_differences(kind, device):
    N, T, F, H = 3, 4, 2, 3
    rng = np.random.default_rng(7)
    options = {"proj_size": 2} if kind == "lstm" else {}
    layer = RECURRENT[kind](F, H, 2, bidirectional=True, rng=2, **options).to(device, "float64")
    P = layer.output_size
    x = device.send(rng.normal(size=(N, T, F)), "float64")
    h0 = rng.normal(size=(4, N, P))
    c0 = rng.normal(size=(4, N, H))
    lengths = [4, 1, 2]

    def call(value):
        state = (value, device.send(c0, "float64")) if kind == "lstm" else value
        (out, fin), backprop = layer(x, True, state=state, lengths=lengths, return_state=True)
        fin_h = fin[0] if kind == "lstm" else fin
        xp = backend.namespace(out)
        joined = xp.concat([xp.reshape(out, (-1,)), xp.reshape(fin_h, (-1,))])

        def back(w):
            n = int(np.prod(out.shape))
            dy = xp.reshape(w[:n], tuple(out.shape))
            d_h = xp.reshape(w[n:], tuple(fin_h.shape))
            d_initial = backprop((dy, (d_h, None) if kind == "lstm" else d_h))[1]
            return d_initial[0] if kind == "lstm" else d_initial

        return joined, back

    with device:  # the helper concatenates outside any layer call
        gradcheck(call, device.send(h0, "float64"))


@pytest.mark.parametrize("kind", sorted(RECURRENT))
def test_input_grad_false_skips_the_input_delta_and_keeps_every_gradient(kind):
    rng = np.random.default_rng(8)
    x, dy = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 8))
    grads = []
    for input_grad in (True, False):
        layer = RECURRENT[kind](3, 4, 2, bidirectional=True, rng=0).to("cpu", "float64")
        model = gf.Sequential(layer)
        y, backprop = model(x, True, input_grad=input_grad)
        dx = backprop(dy)
        assert (dx is None) == (not input_grad)
        grads.append({name: host(p.grad) for name, p in layer.named_parameters()})
    for name in grads[0]:
        np.testing.assert_array_equal(grads[0][name], grads[1][name], err_msg=name)
