"""Cases for the sequence layers — Dropout, LayerNorm, Embedding, RNN/LSTM/GRU, attention, the
transformer block and positional encodings — each with a NumPy float64 reference written from
the equations, not from gradflow's code."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from gradflow import layers as L
from tests.cases import LayerCase

RNG = np.random.default_rng(7)


# --------------------------------------------------------------------------------------------
# References
# --------------------------------------------------------------------------------------------


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def layer_norm_ref(x, gamma, beta, axes, eps=1e-5):
    mean = x.mean(axis=axes, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + eps)
    return y if gamma is None else y * gamma + beta


def recurrent_ref(kind, params, x, *, num_layers=1, bidirectional=False, batch_first=True,
                  return_sequences=True, state=None):
    """(y, h_n, c_n) of a stacked (bi)directional RNN/LSTM/GRU, one sample-batched step at a time."""
    if not batch_first:
        x = x.transpose(1, 0, 2)
    N, T, _ = x.shape
    D = 2 if bidirectional else 1
    H = params["weight_hh_l0"].shape[0]
    if state is None:
        h0 = np.zeros((num_layers * D, N, H))
        c0 = np.zeros((num_layers * D, N, H))
    elif kind == "lstm":
        h0, c0 = state
    else:
        h0, c0 = state, np.zeros((num_layers * D, N, H))
    h_n, c_n = np.zeros_like(h0), np.zeros_like(c0)
    sequence = x
    for k in range(num_layers):
        outputs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            Wi, Wh = params["weight_ih" + sfx], params["weight_hh" + sfx]
            bi, bh = params["bias_ih" + sfx], params["bias_hh" + sfx]
            h, c = h0[k * D + d], c0[k * D + d]
            out = np.zeros((N, T, H))
            for t in (range(T - 1, -1, -1) if d else range(T)):
                a = sequence[:, t] @ Wi + bi
                b = h @ Wh + bh
                if kind == "rnn":
                    h = np.tanh(a + b)
                elif kind == "lstm":
                    z = a + b
                    i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
                    c = f * c + i * g
                    h = o * np.tanh(c)
                else:
                    r = sigmoid(a[:, :H] + b[:, :H])
                    u = sigmoid(a[:, H:2 * H] + b[:, H:2 * H])
                    n = np.tanh(a[:, 2 * H:] + r * b[:, 2 * H:])
                    h = (1 - u) * n + u * h
                out[:, t] = h
            h_n[k * D + d], c_n[k * D + d] = h, c
            outputs.append(out)
        sequence = np.concatenate(outputs, axis=-1)
    if return_sequences:
        y = sequence if batch_first else sequence.transpose(1, 0, 2)
    else:
        y = np.concatenate([h_n[(num_layers - 1) * D + d] for d in range(D)], axis=-1)
    return y, h_n, c_n


def attention_ref(p, x, heads, causal=False, key_padding_mask=None, prefix=""):
    N, T, E = x.shape
    d = E // heads
    qkv = x @ p[prefix + "qkv.weight"].T + p[prefix + "qkv.bias"]
    q, k, v = qkv[..., :E], qkv[..., E:2 * E], qkv[..., 2 * E:]
    out = np.zeros((N, T, E))
    for n in range(N):
        allowed = np.ones((T, T), dtype=bool)
        if causal:
            allowed &= np.tril(np.ones((T, T), dtype=bool))
        if key_padding_mask is not None:
            allowed &= ~key_padding_mask[n][None, :]
        for head in range(heads):
            cols = slice(head * d, (head + 1) * d)
            scores = q[n, :, cols] @ k[n, :, cols].T / math.sqrt(d)
            weights = np.zeros((T, T))
            for t in range(T):
                if allowed[t].any():
                    e = np.exp(scores[t, allowed[t]] - scores[t, allowed[t]].max())
                    weights[t, allowed[t]] = e / e.sum()
            out[n, :, cols] = weights @ v[n, :, cols]
    return out @ p[prefix + "out.weight"].T + p[prefix + "out.bias"]


def gelu_ref(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def block_ref(p, x, heads, causal=False, key_padding_mask=None):
    a = layer_norm_ref(x, p["attention.body.0.weight"], p["attention.body.0.bias"], (-1,))
    h = x + attention_ref(p, a, heads, causal, key_padding_mask, prefix="attention.body.1.")
    m = layer_norm_ref(h, p["mlp.body.0.weight"], p["mlp.body.0.bias"], (-1,))
    hidden = gelu_ref(m @ p["mlp.body.1.weight"].T + p["mlp.body.1.bias"])
    return h + hidden @ p["mlp.body.3.weight"].T + p["mlp.body.3.bias"]


def sinusoid_ref(T, dim, base=10000.0):
    pe = np.zeros((T, dim))
    for t in range(T):
        for j in range(dim):
            angle = t / base ** (2 * (j // 2) / dim)
            pe[t, j] = math.sin(angle) if j % 2 == 0 else math.cos(angle)
    return pe


# --------------------------------------------------------------------------------------------
# Builders
# --------------------------------------------------------------------------------------------


def reset_dropout(layer):
    """Restart every Dropout generator inside ``layer``: the same masks on every forward."""
    for _, sub in layer.sublayers():
        if isinstance(sub, L.Dropout):
            sub.reset_rng()


def layer_norm_with_affine(shape, seed):
    """A LayerNorm whose γ and β are random, so the reference really tests the affine part."""

    def make():
        layer = L.LayerNorm(shape)
        rng = np.random.default_rng(seed)
        layer.load_state_dict({"weight": 1 + 0.5 * rng.normal(size=layer.weight.shape),
                               "bias": rng.normal(size=layer.bias.shape)})
        return layer

    return make


def recurrent_case(name, kind, x, *, H=3, num_layers=1, bidirectional=False, batch_first=True,
                   return_sequences=True, state=None, seed=0, **extra):
    cls = {"rnn": L.RNN, "lstm": L.LSTM, "gru": L.GRU}[kind]
    options = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                   return_sequences=return_sequences)

    def reference(p, x, state=None):
        return recurrent_ref(kind, p, x, state=state, **options)[0]

    kwargs = {} if state is None else {"state": state}
    return LayerCase(name, lambda: cls(x.shape[-1], H, rng=seed, **options), x, reference, call_kwargs=kwargs, **extra)


def states(kind, layers_times_directions, N, H, seed):
    rng = np.random.default_rng(seed)
    h0 = 0.5 * rng.normal(size=(layers_times_directions, N, H))
    return (h0, 0.5 * rng.normal(size=h0.shape)) if kind == "lstm" else h0


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

X_SEQ = RNG.normal(size=(2, 4, 3))          # (N, T, F)
X_SEQ1 = RNG.normal(size=(3, 1, 2))         # a single time step
X_TIME_MAJOR = RNG.normal(size=(5, 2, 3))   # (T, N, F) for batch_first=False
X_EMBED = RNG.normal(size=(2, 5, 6))        # (N, T, E)
X_NORM = RNG.normal(size=(3, 2, 5)) * 2 + 1
IDS = np.array([[1, 4, 1, 0], [6, 4, 4, 2], [3, 1, 5, 6]])  # duplicates on purpose
ONE_VISIBLE = np.array([[True, True, False, True, True], [True, True, True, True, False]])  # one key each
SOME_PADDED = np.array([[False, False, False, True, True], [False, False, False, False, False]])
FIRST_KEY_PADDED = np.array([[True, False, False, False, False], [False, False, False, False, True]])

SEQ_BAD = [
    ("wrong feature size", np.ones((2, 4, 5)), ValueError, r"\(3, 3.*expected input with 3 features on axis -1, got shape \(2, 4, 5\)"),
    ("2-D input", np.ones((2, 3)), ValueError, r"expected a 3-D input, got shape \(2, 3\)"),
    ("empty sequence", np.ones((2, 0, 3)), ValueError, r"at least one step"),
    ("integer input", np.ones((2, 4, 3), dtype=np.int64), TypeError, r"floating-point input.*int64"),
]

LAYER_CASES = [
    # -- Dropout ---------------------------------------------------------------------------------
    LayerCase("dropout_eval_is_identity", lambda: L.Dropout(0.4), X_NORM, lambda p, x: x, train=False),
    LayerCase("dropout_train", lambda: L.Dropout(0.3, seed=5), X_NORM, None, train=True,
              before_forward=reset_dropout, parity=False,
              bad_inputs=[("integer input", np.ones((3, 2), dtype=np.int64), TypeError, r"Dropout\(p=0.3\).*floating-point")]),
    # -- LayerNorm -------------------------------------------------------------------------------
    LayerCase("layer_norm_last_axis", layer_norm_with_affine(5, 1), X_NORM,
              lambda p, x: layer_norm_ref(x, p["weight"], p["bias"], (-1,)),
              bad_inputs=[("wrong trailing size", np.ones((3, 4)), ValueError, r"LayerNorm\(5.*trailing axes are \(5,\), got shape \(3, 4\)")]),
    LayerCase("layer_norm_two_axes", layer_norm_with_affine((2, 5), 2), X_NORM,
              lambda p, x: layer_norm_ref(x, p["weight"], p["bias"], (-2, -1))),
    LayerCase("layer_norm_no_affine", lambda: L.LayerNorm(5, eps=1e-3, elementwise_affine=False), X_NORM,
              lambda p, x: layer_norm_ref(x, None, None, (-1,), eps=1e-3)),
    # -- Embedding -------------------------------------------------------------------------------
    LayerCase("embedding", lambda: L.Embedding(7, 3, rng=0), IDS, lambda p, x: p["weight"][x],
              check_input_gradient=False,
              bad_inputs=[
                  ("float ids", np.ones((2, 3)), TypeError, r"Embedding\(7, 3\).*integer ids, got dtype float32"),
                  ("id too large", np.array([[0, 7]]), ValueError, r"Embedding\(7, 3\).*ids must lie in \[0, 6\], got values in \[0, 7\]"),
                  ("negative id", np.array([[-1, 2]]), ValueError, r"ids must lie in \[0, 6\], got values in \[-1, 2\]"),
                  ("python list", [[1, 2]], TypeError, r"Embedding.*integer array of ids, got list"),
              ]),
    LayerCase("embedding_1d_ids_padding_unused", lambda: L.Embedding(5, 4, padding_idx=0, rng=1),
              np.array([4, 1, 1, 3]), lambda p, x: p["weight"][x], check_input_gradient=False),
    # -- Recurrent -------------------------------------------------------------------------------
    recurrent_case("rnn", "rnn", X_SEQ, bad_inputs=SEQ_BAD),
    recurrent_case("rnn_single_step", "rnn", X_SEQ1, H=2),
    recurrent_case("rnn_two_layer_bidirectional_last_step", "rnn", X_SEQ, H=2, num_layers=2,
                   bidirectional=True, return_sequences=False),
    recurrent_case("lstm", "lstm", X_SEQ, bad_inputs=[
        *SEQ_BAD,
        ("state of the wrong shape", np.ones((2, 4, 3)), ValueError, r"LSTM.*expected state h0 of shape \(1, 2, 3\).*got \(1, 3, 3\)",
         {"state": (np.zeros((1, 3, 3)), np.zeros((1, 3, 3)))}),
        ("state without the cell", np.ones((2, 4, 3)), TypeError, r"LSTM.*expected the state as a pair \(h0, c0\)",
         {"state": np.zeros((1, 2, 3))}),
    ]),
    recurrent_case("lstm_single_step_with_state", "lstm", X_SEQ1, H=2, state=states("lstm", 1, 3, 2, 1)),
    recurrent_case("lstm_two_layer_bidirectional_with_state", "lstm", X_SEQ, H=2, num_layers=2, bidirectional=True,
                   state=states("lstm", 4, 2, 2, 2), seed=3, max_full=24),
    recurrent_case("lstm_time_major_last_step", "lstm", X_TIME_MAJOR, batch_first=False, return_sequences=False),
    recurrent_case("gru", "gru", X_SEQ, state=states("gru", 1, 2, 3, 3), bad_inputs=[
        ("state of the wrong dtype", np.ones((2, 4, 3)), TypeError, r"GRU.*state h0 of dtype float32.*got float64",
         {"state": lambda dev: dev.send(np.zeros((1, 2, 3)), "float64")}),
    ]),
    recurrent_case("gru_single_step", "gru", X_SEQ1, H=2),
    recurrent_case("gru_two_layer_bidirectional_time_major", "gru", X_TIME_MAJOR, H=2, num_layers=2,
                   bidirectional=True, batch_first=False, seed=4, max_full=24),
    recurrent_case("gru_bidirectional_last_step", "gru", X_SEQ, bidirectional=True, return_sequences=False),
    # -- Attention -------------------------------------------------------------------------------
    LayerCase("attention", lambda: L.MultiHeadAttention(6, 2, rng=0), X_EMBED,
              lambda p, x: attention_ref(p, x, 2),
              bad_inputs=[
                  ("wrong feature size", np.ones((2, 5, 4)), ValueError, r"MultiHeadAttention\(embed_dim=6.*6 features.*\(2, 5, 4\)"),
                  ("mask of the wrong shape", np.ones((2, 5, 6)), ValueError,
                   r"MultiHeadAttention.*key_padding_mask of shape \(N, T\) = \(2, 5\), got \(2, 4\)",
                   {"key_padding_mask": np.zeros((2, 4), dtype=bool)}),
                  ("float mask", np.ones((2, 5, 6)), TypeError, r"MultiHeadAttention.*bool key_padding_mask.*float32",
                   {"key_padding_mask": np.zeros((2, 5))}),
              ]),
    LayerCase("attention_single_head_single_step", lambda: L.MultiHeadAttention(6, 1, rng=1), X_EMBED[:, :1],
              lambda p, x: attention_ref(p, x, 1)),
    LayerCase("attention_causal", lambda: L.MultiHeadAttention(6, 3, causal=True, rng=2), X_EMBED,
              lambda p, x: attention_ref(p, x, 3, causal=True)),
    LayerCase("attention_mask_hides_all_but_one_key", lambda: L.MultiHeadAttention(6, 2, rng=3), X_EMBED,
              lambda p, x, key_padding_mask: attention_ref(p, x, 2, key_padding_mask=key_padding_mask),
              call_kwargs={"key_padding_mask": ONE_VISIBLE}),
    LayerCase("attention_causal_first_key_padded_sees_nothing", lambda: L.MultiHeadAttention(6, 2, causal=True, rng=4),
              X_EMBED, lambda p, x, key_padding_mask: attention_ref(p, x, 2, True, key_padding_mask),
              call_kwargs={"key_padding_mask": FIRST_KEY_PADDED}),
    LayerCase("attention_dropout", lambda: L.MultiHeadAttention(6, 2, dropout=0.25, seed=3, rng=5), X_EMBED,
              None, train=True, before_forward=reset_dropout, parity=False),
    # -- Transformer block and positions ------------------------------------------------------------
    LayerCase("transformer_block", lambda: L.TransformerEncoderBlock(6, 2, mlp_ratio=2, rng=0), X_EMBED,
              lambda p, x: block_ref(p, x, 2), max_full=64,
              bad_inputs=[("wrong feature size", np.ones((2, 5, 5)), ValueError, r"TransformerEncoderBlock.*6 features.*\(2, 5, 5\)")]),
    LayerCase("transformer_block_causal_padded", lambda: L.TransformerEncoderBlock(6, 3, mlp_ratio=1.5, causal=True, rng=1),
              X_EMBED, lambda p, x, key_padding_mask: block_ref(p, x, 3, True, key_padding_mask),
              call_kwargs={"key_padding_mask": SOME_PADDED}, max_full=64,
              bad_inputs=[("mask of the wrong shape", np.ones((2, 5, 6)), ValueError, r"key_padding_mask of shape \(N, T\) = \(2, 5\), got \(5, 2\)",
                           {"key_padding_mask": np.zeros((5, 2), dtype=bool)})]),
    LayerCase("transformer_block_dropout", lambda: L.TransformerEncoderBlock(6, 2, mlp_ratio=1, dropout=0.2, attention_dropout=0.1, seed=4, rng=2),
              X_EMBED, None, train=True, before_forward=reset_dropout, parity=False, max_full=64),
    LayerCase("learned_positional_encoding", lambda: L.LearnedPositionalEncoding(7, 6, rng=0), X_EMBED,
              lambda p, x: x + p["weight"][:x.shape[1]],
              bad_inputs=[("sequence too long", np.ones((1, 8, 6)), ValueError, r"LearnedPositionalEncoding.*8 steps, more than max_len=7")]),
    LayerCase("sinusoidal_positional_encoding_odd_dim", lambda: L.SinusoidalPositionalEncoding(5), RNG.normal(size=(2, 6, 5)),
              lambda p, x: x + sinusoid_ref(x.shape[1], 5)),
]
