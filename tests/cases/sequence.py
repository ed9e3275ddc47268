"""Cases for the sequence layers — Dropout, LayerNorm, Embedding, RNN/LSTM/GRU, attention, the
transformer block and positional encodings — each with a NumPy float64 reference written from
the equations, not from gradflow's code."""

from __future__ import annotations

import math

import numpy as np
from scipy.special import erf

from gradflow import layers as L
from gradflow.backend import DeviceError
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
                  return_sequences=True, state=None, nonlinearity="tanh", lengths=None, padding_mask=None,
                  dropout_masks=None):
    """(y, h_n, c_n) of a stacked (bi)directional RNN/LSTM/GRU, one sample-batched step at a time.

    Biases default to 0 when ``params`` has none (bias=False); a ``weight_hr`` projects h
    (proj_size). ``lengths`` or ``padding_mask`` (N, T, True = padded): a padded step keeps the
    states and outputs 0. ``dropout_masks[k - 1]`` (N, T, features) multiplies layer k's input.
    """
    if not batch_first:
        x = x.transpose(1, 0, 2)
    N, T, _ = x.shape
    D = 2 if bidirectional else 1
    G = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    H = params["weight_ih_l0"].shape[0] // G  # PyTorch's shapes: weight_ih (G·H, F), weight_hh (G·H, P)
    P = params["weight_hh_l0"].shape[1]
    keep = np.ones((N, T), dtype=bool)
    if lengths is not None:
        keep = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    elif padding_mask is not None:
        keep = ~np.asarray(padding_mask)
    if state is None:
        h0 = np.zeros((num_layers * D, N, P))
        c0 = np.zeros((num_layers * D, N, H))
    elif kind == "lstm":
        h0, c0 = state
    else:
        h0, c0 = state, np.zeros((num_layers * D, N, H))
    h_n, c_n = np.zeros_like(h0), np.zeros_like(c0)
    sequence = x
    for k in range(num_layers):
        if k and dropout_masks is not None:
            sequence = sequence * dropout_masks[k - 1]
        outputs = []
        for d in range(D):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            Wi, Wh = params["weight_ih" + sfx], params["weight_hh" + sfx]
            bi, bh = params.get("bias_ih" + sfx, 0.0), params.get("bias_hh" + sfx, 0.0)
            Wr = params.get("weight_hr" + sfx)
            h, c = h0[k * D + d], c0[k * D + d]
            out = np.zeros((N, T, P))
            for t in (range(T - 1, -1, -1) if d else range(T)):
                a = sequence[:, t] @ Wi.T + bi
                b = h @ Wh.T + bh
                if kind == "rnn":
                    new_h, new_c = (np.maximum(a + b, 0) if nonlinearity == "relu" else np.tanh(a + b)), c
                elif kind == "lstm":
                    z = a + b
                    i, f, g, o = sigmoid(z[:, :H]), sigmoid(z[:, H:2 * H]), np.tanh(z[:, 2 * H:3 * H]), sigmoid(z[:, 3 * H:])
                    new_c = f * c + i * g
                    new_h = o * np.tanh(new_c)
                    if Wr is not None:
                        new_h = new_h @ Wr.T
                else:
                    r = sigmoid(a[:, :H] + b[:, :H])
                    u = sigmoid(a[:, H:2 * H] + b[:, H:2 * H])
                    n = np.tanh(a[:, 2 * H:] + r * b[:, 2 * H:])
                    new_h, new_c = (1 - u) * n + u * h, c
                real = keep[:, t][:, None]
                h, c = np.where(real, new_h, h), np.where(real, new_c, c)
                out[:, t] = np.where(real, h, 0.0)
            h_n[k * D + d], c_n[k * D + d] = h, c
            outputs.append(out)
        sequence = np.concatenate(outputs, axis=-1)
    if return_sequences:
        y = sequence if batch_first else sequence.transpose(1, 0, 2)
    else:
        y = np.concatenate([h_n[(num_layers - 1) * D + d] for d in range(D)], axis=-1)
    return y, h_n, c_n


def cell_ref(kind, params, x, state=None, nonlinearity="tanh"):
    """One step of a cell: the layer reference on a one-step sequence."""
    named = {key + "_l0": value for key, value in params.items()}
    if state is not None:
        state = tuple(s[None] for s in state) if kind == "lstm" else state[None]
    y, h_n, c_n = recurrent_ref(kind, named, x[:, None, :], state=state, nonlinearity=nonlinearity)
    return y[:, 0], h_n[0], c_n[0]


def mha_ref(p, query, heads, key=None, value=None, causal=False, key_padding_mask=None, attn_mask=None,
            prefix="", weights_out=None):
    """Multi-head attention from the equations, one sample, head and query row at a time.

    Projections: packed ``qkv`` (columns [Q | K | V]) or separate ``q_proj``/``k_proj``/``v_proj``.
    attn_mask: (T, S) or (N·heads, T, S); bool True = hidden, float = added to the scores.
    A query that sees no key gets all-zero weights. weights_out: a list that receives P (N, h, T, S).
    """
    N, T, E = query.shape
    d = E // heads
    key = query if key is None else key
    value = key if value is None else value
    S = key.shape[1]
    if prefix + "qkv.weight" in p:
        W, b = p[prefix + "qkv.weight"], p.get(prefix + "qkv.bias", np.zeros(3 * E))
        q = query @ W[:E].T + b[:E]          # W (3E, E): rows [queries | keys | values]
        k = key @ W[E:2 * E].T + b[E:2 * E]
        v = value @ W[2 * E:].T + b[2 * E:]
    else:
        q = query @ p[prefix + "q_proj.weight"].T + p[prefix + "q_proj.bias"]
        k = key @ p[prefix + "k_proj.weight"].T + p[prefix + "k_proj.bias"]
        v = value @ p[prefix + "v_proj.weight"].T + p[prefix + "v_proj.bias"]
    out = np.zeros((N, T, E))
    all_weights = np.zeros((N, heads, T, S))
    for n in range(N):
        for head in range(heads):
            allowed = np.ones((T, S), dtype=bool)
            added = np.zeros((T, S))
            if causal:
                allowed &= np.arange(T)[:, None] >= np.arange(S)[None, :]
            if key_padding_mask is not None:
                allowed &= ~key_padding_mask[n][None, :]
            if attn_mask is not None:
                mask = attn_mask if attn_mask.ndim == 2 else attn_mask[n * heads + head]
                if mask.dtype == bool:
                    allowed &= ~mask
                else:
                    added = mask
            cols = slice(head * d, (head + 1) * d)
            scores = q[n, :, cols] @ k[n, :, cols].T / math.sqrt(d) + added
            allowed &= np.isfinite(scores)
            weights = np.zeros((T, S))
            for t in range(T):
                if allowed[t].any():
                    e = np.exp(scores[t, allowed[t]] - scores[t, allowed[t]].max())
                    weights[t, allowed[t]] = e / e.sum()
            all_weights[n, head] = weights
            out[n, :, cols] = weights @ v[n, :, cols]
    if weights_out is not None:
        weights_out.append(all_weights)
    return out @ p[prefix + "out.weight"].T + p[prefix + "out.bias"]


def attention_ref(p, x, heads, causal=False, key_padding_mask=None, prefix=""):
    return mha_ref(p, x, heads, causal=causal, key_padding_mask=key_padding_mask, prefix=prefix)


def gelu_ref(x):
    return 0.5 * x * (1 + erf(x / math.sqrt(2)))


def relu_ref(x):
    return np.maximum(x, 0)


def sublayer_ref(x, norm, f, norm_first):
    """pre-norm ``x + f(LN(x))`` or post-norm ``LN(x + f(x))``; norm = (γ, β)."""
    if norm_first:
        return x + f(layer_norm_ref(x, *norm, (-1,)))
    return layer_norm_ref(x + f(x), *norm, (-1,))


def mlp_ref(p, a, activation=gelu_ref):
    return activation(a @ p["mlp.body.1.weight"].T + p["mlp.body.1.bias"]) @ p["mlp.body.3.weight"].T + p["mlp.body.3.bias"]


def norm_params(p, name):
    return p[name + ".body.0.weight"], p[name + ".body.0.bias"]


def block_ref(p, x, heads, causal=False, key_padding_mask=None, attn_mask=None, norm_first=True, activation=gelu_ref):
    h = sublayer_ref(x, norm_params(p, "attention"), lambda a: mha_ref(
        p, a, heads, causal=causal, key_padding_mask=key_padding_mask, attn_mask=attn_mask, prefix="attention.body.1."),
        norm_first)
    return sublayer_ref(h, norm_params(p, "mlp"), lambda a: mlp_ref(p, a, activation), norm_first)


def decoder_ref(p, x, heads, memory, key_padding_mask=None, attn_mask=None, memory_key_padding_mask=None,
                memory_mask=None, causal=True, norm_first=True, activation=gelu_ref):
    h = sublayer_ref(x, norm_params(p, "attention"), lambda a: mha_ref(
        p, a, heads, causal=causal, key_padding_mask=key_padding_mask, attn_mask=attn_mask, prefix="attention.body.1."),
        norm_first)
    g = sublayer_ref(h, norm_params(p, "cross_attention"), lambda a: mha_ref(
        p, a, heads, key=memory, key_padding_mask=memory_key_padding_mask, attn_mask=memory_mask,
        prefix="cross_attention.body.1."), norm_first)
    return sublayer_ref(g, norm_params(p, "mlp"), lambda a: mlp_ref(p, a, activation), norm_first)


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
                   return_sequences=True, state=None, seed=0, options=None, call=None, with_reference=True, **extra):
    """A registry case of RNN/LSTM/GRU; ``options`` go to the constructor (and the reference
    where it takes them: nonlinearity), ``call`` to the call (lengths, padding_mask)."""
    cls = {"rnn": L.RNN, "lstm": L.LSTM, "gru": L.GRU}[kind]
    layout = dict(num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first,
                  return_sequences=return_sequences)
    options = dict(options or {})
    nonlinearity = options.get("nonlinearity", "tanh")

    def reference(p, x, **kwargs):
        return recurrent_ref(kind, p, x, nonlinearity=nonlinearity, **layout, **kwargs)[0]

    kwargs = dict(call or {})
    if state is not None:
        kwargs["state"] = state
    return LayerCase(name, lambda: cls(x.shape[-1], H, rng=seed, **layout, **options), x,
                     reference if with_reference else None, call_kwargs=kwargs, **extra)


def cell_case(name, kind, x, *, H=3, state=None, seed=0, options=None, **extra):
    cls = {"rnn": L.RNNCell, "lstm": L.LSTMCell, "gru": L.GRUCell}[kind]
    options = dict(options or {})
    nonlinearity = options.get("nonlinearity", "tanh")

    def reference(p, x, state=None):
        return cell_ref(kind, p, x, state, nonlinearity)[0]

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
MEMORY = RNG.normal(size=(2, 3, 6))        # (N, S, E): keys/values of cross-attention
MEMORY_K4 = RNG.normal(size=(2, 3, 4))     # (N, S, kdim=4)
VALUE_V5 = RNG.normal(size=(2, 3, 5))      # (N, S, vdim=5)
MEMORY_PADDED = np.array([[False, False, True], [False, False, False]])
FLOAT_MASK = np.where(RNG.random((5, 5)) < 0.3, -np.inf, RNG.normal(size=(5, 5)))  # additive, some keys hidden
FLOAT_MASK[:, 0] = 0.0  # every query sees key 0 (the all-hidden row is a bool case below)
BOOL_MASK_PER_HEAD = RNG.random((4, 5, 3)) < 0.4  # (N·heads, T, S) for 2 heads, cross-attention
BOOL_MASK_PER_HEAD[1, 2] = True                   # sample 0, head 1, query 2 sees no key: zeros
CROSS_FLOAT_MASK = RNG.normal(size=(5, 3))
CAUSAL_BOOL = np.triu(np.ones((5, 5), dtype=bool), 1)  # True above the diagonal = hidden (PyTorch's)


def on_other_device(host, dtype=None):
    """A callable(device) for bad_inputs: ``host`` sent to a device other than the test's."""
    from gradflow import backend

    return lambda dev: backend.device("strict" if dev.name == "cpu" else "cpu").send(host, dtype)


def mask_bad_inputs(name, x, shape, other):
    """Rows for a mask argument ``name``: wrong shape, integer dtype, float64 on a float32 layer,
    another device (``other``: the case's other call kwargs)."""
    good = np.zeros(shape, dtype=bool)
    return [
        (f"{name} of the wrong shape", x, ValueError, rf"expected {name} of shape .*got \(7, 7\)",
         {**other, name: np.zeros((7, 7), dtype=bool)}),
        (f"integer {name}", x, TypeError, rf"expected {name} of dtype bool.*got dtype int64",
         {**other, name: np.zeros(shape, dtype=np.int64)}),
        (f"float64 {name} on a float32 layer", x, TypeError, rf"expected {name} of dtype bool.*got dtype float64",
         {**other, name: lambda dev: dev.send(np.zeros(shape), "float64")}),
        (f"{name} on another device", x, DeviceError, rf"{name} is on .* but the query on",
         {**other, name: on_other_device(good)}),
        (f"{name} as a list", x, TypeError, rf"expected {name} as a bool", {**other, name: good.tolist()}),
    ]


FIRST_KEY_PADDED = np.array([[True, False, False, False, False], [False, False, False, False, True]])

# Inputs of the option cases, from their own generator (the ones above keep their values).
RNG_CELL = np.random.default_rng(17)
X_PAD = RNG_CELL.normal(size=(3, 5, 2))     # (N, T, F); padded steps hold values that must not matter
LENGTHS = np.array([5, 2, 3])
GAPS = np.array([[False, True, False, False, True], [True, True, False, False, False]])  # not a prefix mask
X_STEP = RNG_CELL.normal(size=(4, 3))       # (N, F): one step for the cells


def _other(device):
    """Another device than ``device`` (for state-placement rows)."""
    from gradflow import backend as _backend

    return _backend.device("strict" if device.name == "cpu" else "cpu")


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
    # options (issue 14): ReLU, no biases, projections, padded batches, dropout between layers, cells
    recurrent_case("rnn_relu", "rnn", X_SEQ, options={"nonlinearity": "relu"}, bad_inputs=[
        ("state as a tuple", np.ones((2, 4, 3)), TypeError, r"RNN\(3, 3, nonlinearity='relu'\): expected the state as one array h0, got a tuple",
         {"state": (np.zeros((1, 2, 3)),)}),
        ("state as a python list", np.ones((2, 4, 3)), TypeError, r"RNN.*expected the state as one array h0, got a list",
         {"state": np.zeros((1, 2, 3)).tolist()}),
        ("integer state", np.ones((2, 4, 3)), TypeError, r"RNN.*state h0 of dtype float32.*got int64",
         {"state": np.zeros((1, 2, 3), dtype=np.int64)}),
        ("state on another device", np.ones((2, 4, 3)), DeviceError, r"RNN.*state h0 is on .* but the input on",
         {"state": lambda dev: _other(dev).send(np.zeros((1, 2, 3)), "float32")}),
        ("state without the layer axis (broadcastable)", np.ones((2, 4, 3)), ValueError,
         r"RNN.*expected state h0 of shape \(1, 2, 3\).*got \(2, 3\)", {"state": np.zeros((2, 3))}),
    ]),
    recurrent_case("rnn_relu_no_bias_two_layer", "rnn", X_SEQ, num_layers=2, seed=5,
                   options={"nonlinearity": "relu", "bias": False}),
    recurrent_case("lstm_no_bias_bidirectional", "lstm", X_SEQ, bidirectional=True, seed=6, options={"bias": False}),
    recurrent_case("gru_no_bias_with_state", "gru", X_SEQ, state=states("gru", 1, 2, 3, 4), seed=7, options={"bias": False}),
    recurrent_case("lstm_proj_with_state", "lstm", X_SEQ, H=4, seed=8, options={"proj_size": 2},
                   state=(states("lstm", 1, 2, 2, 5)[0], states("lstm", 1, 2, 4, 6)[1]), bad_inputs=[
        ("c0 of the projected size", np.ones((2, 4, 3)), ValueError, r"LSTM\(3, 4, proj_size=2\).*state c0 of shape \(1, 2, 4\).*got \(1, 2, 2\)",
         {"state": (np.zeros((1, 2, 2)), np.zeros((1, 2, 2)))}),
        ("state as a triple", np.ones((2, 4, 3)), TypeError, r"LSTM.*expected the state as a pair \(h0, c0\) of arrays, got a tuple of 3",
         {"state": (np.zeros((1, 2, 2)), np.zeros((1, 2, 4)), np.zeros((1, 2, 4)))}),
        ("one array for the pair", np.ones((2, 4, 3)), TypeError, r"LSTM.*expected the state as a pair \(h0, c0\) of arrays, got \w+",
         {"state": np.zeros((2, 1, 2, 2))}),
    ]),
    recurrent_case("lstm_proj_two_layer_bidirectional_last_step", "lstm", X_SEQ, H=3, num_layers=2, bidirectional=True,
                   return_sequences=False, seed=9, options={"proj_size": 2}, max_full=24),
    recurrent_case("lstm_lengths_two_layer_bidirectional", "lstm", X_PAD, num_layers=2, bidirectional=True, H=2, seed=10,
                   call={"lengths": LENGTHS}, max_full=24, bad_inputs=[
        ("a length of zero", np.ones((3, 5, 2)), ValueError, r"LSTM.*lengths must lie in \[1, 5\].*got values in \[0, 5\]",
         {"lengths": [5, 0, 3]}),
        ("a length beyond the sequence", np.ones((3, 5, 2)), ValueError, r"LSTM.*lengths must lie in \[1, 5\].*\[2, 6\]",
         {"lengths": np.array([6, 2, 3])}),
        ("lengths for another batch", np.ones((3, 5, 2)), ValueError, r"LSTM.*expected lengths of shape \(N,\) = \(3,\), got \(2,\)",
         {"lengths": [5, 2]}),
        ("float lengths", np.ones((3, 5, 2)), TypeError, r"LSTM.*expected integer lengths, got dtype float32",
         {"lengths": np.array([5.0, 2.0, 3.0])}),
        ("lengths and a padding mask", np.ones((3, 5, 2)), ValueError, r"LSTM.*give lengths or padding_mask, not both",
         {"lengths": [5, 2, 3], "padding_mask": np.zeros((3, 5), dtype=bool)}),
    ]),
    recurrent_case("lstm_proj_lengths", "lstm", X_PAD, H=3, seed=11, options={"proj_size": 2}, call={"lengths": LENGTHS}),
    recurrent_case("gru_lengths_bidirectional_last_step", "gru", X_PAD, bidirectional=True, return_sequences=False, seed=12,
                   call={"lengths": LENGTHS}),
    recurrent_case("rnn_padding_mask_time_major", "rnn", X_TIME_MAJOR, batch_first=False, bidirectional=True, seed=13,
                   call={"padding_mask": GAPS}, bad_inputs=[
        ("mask of the wrong shape", np.ones((5, 2, 3)), ValueError, r"RNN.*padding_mask of shape \(N, T\) = \(2, 5\), got \(5, 2\)",
         {"padding_mask": np.zeros((5, 2), dtype=bool)}),
        ("float mask", np.ones((5, 2, 3)), TypeError, r"RNN.*bool padding_mask \(True = padded\), got dtype float32",
         {"padding_mask": np.zeros((2, 5))}),
    ]),
    recurrent_case("gru_padding_mask_two_layer", "gru", X_PAD, num_layers=2, H=2, seed=14,
                   call={"padding_mask": ~(np.arange(5)[None, :] < LENGTHS[:, None])}),
    recurrent_case("lstm_dropout_between_layers", "lstm", X_SEQ, num_layers=3, H=2, seed=15, train=True,
                   options={"dropout": 0.4, "seed": 3}, before_forward=reset_dropout, parity=False, max_full=24,
                   with_reference=False),  # the masks differ by device: tests/layers/test_sequence.py checks them
    recurrent_case("gru_dropout_eval_is_plain", "gru", X_SEQ, num_layers=2, seed=16, options={"dropout": 0.5, "seed": 1}),
    cell_case("rnn_cell", "rnn", X_STEP, bad_inputs=[
        ("3-D input", np.ones((2, 4, 3)), ValueError, r"RNNCell\(3, 3\): expected a 2-D input, got shape \(2, 4, 3\)"),
        ("wrong feature size", np.ones((4, 2)), ValueError, r"RNNCell.*3 features on axis -1, got shape \(4, 2\)"),
        ("state with the layer axis", np.ones((4, 3)), ValueError, r"RNNCell.*state h0 of shape \(4, 3\).*got \(1, 4, 3\)",
         {"state": np.zeros((1, 4, 3))}),
    ]),
    cell_case("rnn_cell_relu_no_bias_with_state", "rnn", X_STEP, H=2, seed=1, state=0.5 * RNG_CELL.normal(size=(4, 2)),
              options={"nonlinearity": "relu", "bias": False}),
    cell_case("lstm_cell_with_state", "lstm", X_STEP, seed=2,
              state=(0.5 * RNG_CELL.normal(size=(4, 3)), 0.5 * RNG_CELL.normal(size=(4, 3))), bad_inputs=[
        ("state without the cell", np.ones((4, 3)), TypeError, r"LSTMCell\(3, 3\): expected the state as a pair \(h0, c0\)",
         {"state": np.zeros((4, 3))}),
        ("c0 of the wrong dtype", np.ones((4, 3)), TypeError, r"LSTMCell.*state c0 of dtype float32.*got float64",
         {"state": lambda dev: (dev.send(np.zeros((4, 3)), "float32"), dev.send(np.zeros((4, 3)), "float64"))}),
    ]),
    cell_case("lstm_cell_no_bias", "lstm", X_STEP, H=2, seed=3, options={"bias": False}),
    cell_case("gru_cell_with_state", "gru", X_STEP, seed=4, state=0.5 * RNG_CELL.normal(size=(4, 3)), bad_inputs=[
        ("1-D input", np.ones(3), ValueError, r"GRUCell\(3, 3\): expected a 2-D input, got shape \(3,\)"),
    ]),
    # -- Attention -------------------------------------------------------------------------------
    LayerCase("attention", lambda: L.MultiHeadAttention(6, 2, rng=0), X_EMBED,
              lambda p, x: attention_ref(p, x, 2),
              bad_inputs=[
                  ("wrong feature size", np.ones((2, 5, 4)), ValueError, r"MultiHeadAttention\(embed_dim=6.*6 features.*\(2, 5, 4\)"),
                  ("mask of the wrong shape", np.ones((2, 5, 6)), ValueError,
                   r"MultiHeadAttention.*key_padding_mask of shape \(N, S\) = \(2, 5\), got \(2, 4\)",
                   {"key_padding_mask": np.zeros((2, 4), dtype=bool)}),
                  ("float mask", np.ones((2, 5, 6)), TypeError, r"MultiHeadAttention.*key_padding_mask of dtype bool.*float32",
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
    # -- Cross-attention and masks (issue 14) ------------------------------------------------------
    LayerCase("attention_cross_key_is_value", lambda: L.MultiHeadAttention(6, 2, rng=6), X_EMBED,
              lambda p, x, key: mha_ref(p, x, 2, key=key), call_kwargs={"key": MEMORY}, inputs=("key",),
              bad_inputs=[
                  ("key with the wrong feature size", X_EMBED, ValueError, r"expected key with 6 features on axis -1, got shape \(2, 3, 4\)",
                   {"key": MEMORY_K4}),
                  ("key of another batch size", X_EMBED, ValueError, r"key has batch size 1 but the query 2", {"key": MEMORY[:1]}),
                  ("key on another device", X_EMBED, DeviceError, r"expected key on device", {"key": on_other_device(MEMORY, "float32")}),
                  ("value without key", X_EMBED, ValueError, r"got a value but no key", {"value": MEMORY}),
                  *mask_bad_inputs("key_padding_mask", X_EMBED, (2, 3), {"key": MEMORY})[:4],
              ]),
    LayerCase("attention_cross_key_and_value_float_mask", lambda: L.MultiHeadAttention(6, 3, rng=7), X_EMBED,
              lambda p, x, key, value, attn_mask: mha_ref(p, x, 3, key=key, value=value, attn_mask=attn_mask),
              call_kwargs={"key": MEMORY, "value": MEMORY[:, ::-1] * 0.5, "attn_mask": CROSS_FLOAT_MASK}, inputs=("key", "value")),
    LayerCase("attention_kdim_vdim_padded_per_head_bool_mask",
              lambda: L.MultiHeadAttention(6, 2, kdim=4, vdim=5, rng=8), X_EMBED,
              lambda p, x, key, value, key_padding_mask, attn_mask: mha_ref(
                  p, x, 2, key=key, value=value, key_padding_mask=key_padding_mask, attn_mask=attn_mask),
              call_kwargs={"key": MEMORY_K4, "value": VALUE_V5, "key_padding_mask": MEMORY_PADDED,
                           "attn_mask": BOOL_MASK_PER_HEAD}, inputs=("key", "value"),
              bad_inputs=[
                  ("no key", X_EMBED, ValueError, r"kdim/vdim differ from embed_dim, so key= \(and value=\) are required", {}),
                  ("no value", X_EMBED, ValueError, r"vdim \(5\) differs from kdim \(4\), so value= is required", {"key": MEMORY_K4}),
                  ("value of the wrong length", X_EMBED, ValueError, r"expected value of shape \(N, S, vdim\) = \(2, 3, 5\).*got \(2, 2, 5\)",
                   {"key": MEMORY_K4, "value": VALUE_V5[:, :2]}),
              ]),
    LayerCase("attention_float_mask", lambda: L.MultiHeadAttention(6, 2, rng=9), X_EMBED,
              lambda p, x, attn_mask: mha_ref(p, x, 2, attn_mask=attn_mask), call_kwargs={"attn_mask": FLOAT_MASK},
              bad_inputs=mask_bad_inputs("attn_mask", X_EMBED, (5, 5), {})),
    LayerCase("attention_causal_and_bool_mask", lambda: L.MultiHeadAttention(6, 2, causal=True, rng=10), X_EMBED,
              lambda p, x, attn_mask: mha_ref(p, x, 2, causal=True, attn_mask=attn_mask),
              call_kwargs={"attn_mask": RNG.random((4, 5, 5)) < 0.3}),
    # -- Transformer block and positions ------------------------------------------------------------
    LayerCase("transformer_block", lambda: L.TransformerEncoderBlock(6, 2, mlp_ratio=2, rng=0), X_EMBED,
              lambda p, x: block_ref(p, x, 2), max_full=64,
              bad_inputs=[("wrong feature size", np.ones((2, 5, 5)), ValueError, r"TransformerEncoderBlock.*6 features.*\(2, 5, 5\)")]),
    LayerCase("transformer_block_causal_padded", lambda: L.TransformerEncoderBlock(6, 3, mlp_ratio=1.5, causal=True, rng=1),
              X_EMBED, lambda p, x, key_padding_mask: block_ref(p, x, 3, True, key_padding_mask),
              call_kwargs={"key_padding_mask": SOME_PADDED}, max_full=64,
              bad_inputs=[("mask of the wrong shape", np.ones((2, 5, 6)), ValueError, r"key_padding_mask of shape \(N, S\) = \(2, 5\), got \(5, 2\)",
                           {"key_padding_mask": np.zeros((5, 2), dtype=bool)})]),
    LayerCase("transformer_block_dropout", lambda: L.TransformerEncoderBlock(6, 2, mlp_ratio=1, dropout=0.2, attention_dropout=0.1, seed=4, rng=2),
              X_EMBED, None, train=True, before_forward=reset_dropout, parity=False, max_full=64),
    LayerCase("transformer_block_post_norm_relu_masked",
              lambda: L.TransformerEncoderBlock(6, 2, mlp_ratio=2, norm_first=False, activation="relu", rng=3), X_EMBED,
              lambda p, x, attn_mask, key_padding_mask: block_ref(p, x, 2, attn_mask=attn_mask, key_padding_mask=key_padding_mask,
                                                                  norm_first=False, activation=relu_ref),
              call_kwargs={"attn_mask": CAUSAL_BOOL, "key_padding_mask": SOME_PADDED}, max_full=64,
              bad_inputs=mask_bad_inputs("attn_mask", X_EMBED, (5, 5), {"key_padding_mask": SOME_PADDED})),
    LayerCase("transformer_decoder_block", lambda: L.TransformerDecoderBlock(6, 2, mlp_ratio=2, rng=4), X_EMBED,
              lambda p, x, memory: decoder_ref(p, x, 2, memory), call_kwargs={"memory": MEMORY}, inputs=("memory",), max_full=64,
              bad_inputs=[
                  ("no memory", X_EMBED, TypeError, r"TransformerDecoderBlock.*memory is required", {}),
                  ("memory with the wrong feature size", X_EMBED, ValueError,
                   r"TransformerDecoderBlock.*expected memory with 6 features on axis -1, got shape \(2, 3, 4\)", {"memory": MEMORY_K4}),
                  ("memory on another device", X_EMBED, DeviceError, r"TransformerDecoderBlock.*expected memory on device",
                   {"memory": on_other_device(MEMORY, "float32")}),
                  *mask_bad_inputs("memory_mask", X_EMBED, (5, 3), {"memory": MEMORY})[:1],
                  ("memory_mask of the wrong dtype", X_EMBED, TypeError, r"expected memory_mask of dtype bool.*got dtype int64",
                   {"memory": MEMORY, "memory_mask": np.zeros((5, 3), dtype=np.int64)}),
                  ("memory_key_padding_mask of the wrong shape", X_EMBED, ValueError,
                   r"expected memory_key_padding_mask of shape \(N, S\) = \(2, 3\), got \(2, 5\)",
                   {"memory": MEMORY, "memory_key_padding_mask": SOME_PADDED}),
                  ("attn_mask on another device", X_EMBED, DeviceError, r"attn_mask is on .* but the query on",
                   {"memory": MEMORY, "attn_mask": on_other_device(CAUSAL_BOOL)}),
              ]),
    LayerCase("transformer_decoder_block_post_norm_relu_memory_dim_masked",
              lambda: L.TransformerDecoderBlock(6, 3, memory_dim=4, mlp_ratio=1.5, norm_first=False, activation="relu", rng=5),
              X_EMBED, lambda p, x, memory, key_padding_mask, memory_key_padding_mask, memory_mask: decoder_ref(
                  p, x, 3, memory, key_padding_mask=key_padding_mask, memory_key_padding_mask=memory_key_padding_mask,
                  memory_mask=memory_mask, norm_first=False, activation=relu_ref),
              call_kwargs={"memory": MEMORY_K4, "key_padding_mask": SOME_PADDED, "memory_key_padding_mask": MEMORY_PADDED,
                           "memory_mask": CROSS_FLOAT_MASK}, inputs=("memory",), max_full=64),
    LayerCase("transformer_decoder_block_dropout",
              lambda: L.TransformerDecoderBlock(6, 2, mlp_ratio=1, dropout=0.2, attention_dropout=0.1, seed=4, rng=6),
              X_EMBED, None, train=True, call_kwargs={"memory": MEMORY}, inputs=("memory",), before_forward=reset_dropout,
              parity=False, max_full=64),
    LayerCase("learned_positional_encoding", lambda: L.LearnedPositionalEncoding(7, 6, rng=0), X_EMBED,
              lambda p, x: x + p["weight"][:x.shape[1]],
              bad_inputs=[("sequence too long", np.ones((1, 8, 6)), ValueError, r"LearnedPositionalEncoding.*8 steps, more than max_len=7")]),
    LayerCase("sinusoidal_positional_encoding_odd_dim", lambda: L.SinusoidalPositionalEncoding(5), RNG.normal(size=(2, 6, 5)),
              lambda p, x: x + sinusoid_ref(x.shape[1], 5)),
]
