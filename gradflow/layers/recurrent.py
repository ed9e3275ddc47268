"""Recurrent layers — RNN (tanh or ReLU), LSTM and GRU — with backpropagation through time, and
their one-step cells (RNNCell, LSTMCell, GRUCell) for hand-written loops.

One scheme for all three. For each layer of the stack and each direction, the input projection
of every time step is one GEMM, ``P = X W_ihᵀ + b_ih`` with X reshaped to (T·N, F); then a loop
over time steps (never over samples) applies the cell: one GEMM ``h_{t−1} W_hhᵀ`` and the gate
arithmetic per step. BPTT runs the loop backwards, storing the δ of each step's
pre-activations; the weight gradients are then again single GEMMs over all steps:
``dW_hh = Σ_t dZ_tᵀ h_{t−1}`` and ``dW_ih = dPᵀ X``, and ``dX = dP W_ih``.

Weights follow PyTorch exactly: gate order (LSTM: i, f, g, o; GRU: r, z, n), names
(``weight_ih_l0``, ``bias_hh_l1_reverse``, ``weight_hr_l0``...) and shapes: weight_ih (G·H, F),
weight_hh (G·H, P), weight_hr (P, H). So a ``torch.nn.LSTM`` state dict (as NumPy arrays) loads
by name with ``load_state_dict``. The GEMMs read the transposes as views (``x @ W.T``).

States. ``layer(x, train, state=s0)`` starts from ``s0`` (zeros by default): an array
(L·D, N, H) for RNN and GRU, a pair ``(h0, c0)`` of such arrays for LSTM (h0 is (L·D, N, P)
with ``proj_size=P``), with L = num_layers and D = 2 if bidirectional else 1 (PyTorch's layout).
With ``return_state=True`` the call returns ``((y, final_state), backprop)``; that backprop
takes ``(dy, d_final_state)`` (either part may be ``None``; for an LSTM ``d_final_state`` is a
pair ``(δh, δc)`` whose parts may be ``None``) and returns ``(dx, d_initial_state)``. Each δ must
have exactly the shape, dtype, device and array type of what it is the δ of (nothing
broadcasts). So a long sequence can be split into chunks, each chunk starting from the previous
one's final state, and the δ carried back across the chunk boundary: for a unidirectional
layer, two half-sequence calls give exactly the output and gradients of one full call (a
reverse direction needs the whole sequence).

Variable lengths. ``lengths`` (N ints in [1, T]) or ``padding_mask`` (bool (N, T), True =
padded step, the convention of attention's ``key_padding_mask``) mark padded steps: at a padded
step the states are carried over unchanged, the output is 0, and nothing flows back through
it, so padded steps change neither states nor gradients. With ``lengths`` this is exactly
PyTorch's ``pack_padded_sequence`` (the reverse direction starts at each sample's last real
step; ``return_sequences=False`` gives each sample's final state). Padded input entries must be
finite (they are multiplied by zero in the gradients).
"""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from ..backend import Array, DeviceError
from ..core import Layer, Parameter, _device_name, check_delta_like, check_input
from .dropout import Dropout

State = Any  # an array (RNN, GRU) or a pair of arrays (LSTM)
# The parameters of one layer and direction: (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr);
# the biases are None with bias=False, weight_hr is None without a projection.
Weights = tuple


def _positive_int(owner: str, label: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{owner}: {label} must be a positive int, got {value!r}")


def _make_weights(owner: Layer, generator: Any, dev: Any, dtype: str, features: int, hidden: int, gates: int,
                  suffix: str, bias: bool, proj_size: int) -> Weights:
    """PyTorch's U(−1/√H, 1/√H) for every weight and bias, drawn in PyTorch's parameter order.

    Matrices are drawn as (in, out) and stored transposed, PyTorch's (out, in): the same seed
    gives the same weights as before the layout became PyTorch's."""
    H = hidden
    out = proj_size or H
    bound = 1.0 / math.sqrt(H)
    shapes = {"weight_ih": (features, gates * H), "weight_hh": (out, gates * H)}
    if bias:
        shapes.update({"bias_ih": (gates * H,), "bias_hh": (gates * H,)})
    if proj_size:
        shapes["weight_hr"] = (H, proj_size)
    made = {}
    for label, shape in shapes.items():
        drawn = generator.uniform(-bound, bound, size=shape)
        p = Parameter(dev.send(drawn.T.copy() if drawn.ndim == 2 else drawn, dtype))
        setattr(owner, label + suffix, p)
        made[label] = p
    return tuple(made.get(label) for label in ("weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_hr"))


def _check_state(layer: Layer, state: Any, x: Array, shapes: tuple[tuple[int, ...], ...], explain: str) -> tuple[Array, ...]:
    """The initial state as a tuple of arrays (one, or two for an LSTM), each checked against x."""
    pair = len(shapes) == 2
    if pair:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            got = f"a {type(state).__name__} of {len(state)}" if isinstance(state, (tuple, list)) else type(state).__name__
            raise TypeError(f"{layer.describe()}: expected the state as a pair (h0, c0) of arrays, got {got}")
        parts = tuple(state)
    else:
        if isinstance(state, (tuple, list)):
            raise TypeError(f"{layer.describe()}: expected the state as one array h0, got a {type(state).__name__}")
        parts = (state,)
    for label, part, shape in zip(("h0", "c0"), parts, shapes):
        if not backend.is_array(part) or not hasattr(part, "shape"):
            raise TypeError(f"{layer.describe()}: expected state {label} as an array, got {type(part).__name__}")
        if not backend.same_device(part, x):
            raise DeviceError(f"{layer.describe()}: state {label} is on {_device_name(part)} but the input on {_device_name(x)}")
        if part.dtype != x.dtype:
            raise TypeError(
                f"{layer.describe()}: expected state {label} of dtype {backend.dtype_name(x.dtype)} (the input's), "
                f"got {backend.dtype_name(part.dtype)}"
            )
        if tuple(part.shape) != shape:
            raise ValueError(f"{layer.describe()}: expected state {label} of shape {shape} ({explain}), got {tuple(part.shape)}")
    return parts


def _split_state_delta(layer: Layer, d_final: Any, final: Any, pair: bool) -> tuple[Any, Any]:
    """(δh, δc) of the final state, each checked like an output δ (``None`` parts allowed)."""
    if d_final is None:
        return None, None
    if pair:
        if not isinstance(d_final, (tuple, list)) or len(d_final) != 2:
            got = f"a {type(d_final).__name__} of {len(d_final)}" if isinstance(d_final, (tuple, list)) else type(d_final).__name__
            raise TypeError(
                f"{layer.describe()}: backprop expected the final-state δ as a pair (δh, δc) (either may be None), got {got}"
            )
        d_h, d_c = d_final
        if d_h is not None:
            check_delta_like(layer, d_h, final[0], "δ of the final state h")
        if d_c is not None:
            check_delta_like(layer, d_c, final[1], "δ of the final state c")
        return d_h, d_c
    check_delta_like(layer, d_final, final, "δ of the final state h")
    return d_final, None


def _split_delta(layer: Layer, delta: Any) -> tuple[Any, Any]:
    """``(dy, d_final_state)`` from what a ``return_state=True`` backprop was given."""
    if isinstance(delta, (tuple, list)):
        if len(delta) != 2:
            raise TypeError(
                f"{layer.describe()}: backprop expected (dy, d_final_state), a pair, got a {type(delta).__name__} of {len(delta)}"
            )
        dy, d_final = delta
    else:
        dy, d_final = delta, None
    if dy is None and d_final is None:
        raise ValueError(f"{layer.describe()}: backprop got neither an output δ nor a final-state δ")
    return dy, d_final


def _keep_steps(layer: Layer, x: Array, N: int, T: int, lengths: Any, padding_mask: Any, xp: Any) -> Array | None:
    """A bool (T, N, 1) array on x's device, True at real steps; None when nothing is padded."""
    if lengths is not None and padding_mask is not None:
        raise ValueError(f"{layer.describe()}: give lengths or padding_mask, not both")
    if lengths is not None:
        # lengths live on the host, as in PyTorch
        host = backend.host_integer_array(lengths, f"{layer.describe()}: lengths")
        if host.shape != (N,):
            raise ValueError(f"{layer.describe()}: expected lengths of shape (N,) = ({N},), got {host.shape}")
        if N and (host.min() < 1 or host.max() > T):
            raise ValueError(
                f"{layer.describe()}: lengths must lie in [1, {T}] (the sequence length), "
                f"got values in [{int(host.min())}, {int(host.max())}]"
            )
        sent = backend.device_of(x).send(host)
        return xp.arange(T, dtype=sent.dtype, device=x.device)[:, None, None] < sent[None, :, None]  # (T, N, 1)
    if padding_mask is not None:
        mask = padding_mask
        if not backend.is_array(mask) or not hasattr(mask, "dtype"):
            raise TypeError(f"{layer.describe()}: expected padding_mask as a bool array, got {type(mask).__name__}")
        if not backend.same_device(mask, x):
            raise DeviceError(f"{layer.describe()}: padding_mask is on {_device_name(mask)} but the input on {_device_name(x)}")
        if mask.dtype != xp.bool:
            raise TypeError(f"{layer.describe()}: expected a bool padding_mask (True = padded), got dtype {backend.dtype_name(mask.dtype)}")
        if tuple(mask.shape) != (N, T):
            raise ValueError(f"{layer.describe()}: expected padding_mask of shape (N, T) = {(N, T)}, got {tuple(mask.shape)}")
        return xp.logical_not(xp.permute_dims(mask, (1, 0)))[..., None]
    return None


class _Recurrent(Layer):
    """The stack, directions, states, dropout, padding and input GEMMs; subclasses give the cell
    (``_scan``)."""

    gates = 1
    has_cell_state = False
    skips_input_grad = True

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bias: bool = True,
        dropout: float = 0.0,
        bidirectional: bool = False,
        batch_first: bool = True,
        return_sequences: bool = True,
        proj_size: int = 0,
        seed: int | None = None,
        rng: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        name = type(self).__name__
        for label, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            _positive_int(name, label, value)
        if isinstance(proj_size, bool) or not isinstance(proj_size, int) or not 0 <= proj_size < hidden_size:
            raise ValueError(f"{name}: proj_size must be an int in [0, hidden_size={hidden_size}), got {proj_size!r}")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"{name}: dropout must be a number in [0, 1), got {dropout!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.proj_size = proj_size
        self.bias = bool(bias)
        self.dropout = float(dropout)
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.return_sequences = bool(return_sequences)
        self.directions = 2 if self.bidirectional else 1
        self.output_size = proj_size or hidden_size  # per direction
        # between stacked layers only, as PyTorch (nothing to do for one layer)
        self.layer_dropout = Dropout(self.dropout, seed=seed) if self.dropout > 0 and num_layers > 1 else None
        from .. import init as _init

        generator = _init.generator(rng)
        dev = backend.device(device)
        # cells[k][d] = (weight_ih, weight_hh, bias_ih, bias_hh, weight_hr) of layer k, direction d
        self._cells: list[list[Weights]] = []
        for k in range(num_layers):
            features = input_size if k == 0 else self.output_size * self.directions
            self._cells.append([
                _make_weights(self, generator, dev, dtype, features, hidden_size, self.gates,
                              f"_l{k}" + ("_reverse" if d else ""), self.bias, proj_size)
                for d in range(self.directions)
            ])

    def _state_shapes(self, batch: int) -> tuple[tuple[int, ...], ...]:
        LD = self.num_layers * self.directions
        h = (LD, batch, self.output_size)
        return (h, (LD, batch, self.hidden_size)) if self.has_cell_state else (h,)

    # -- forward and BPTT --------------------------------------------------------------------------
    def forward(self, x: Array, train: bool, state: State = None, return_state: bool = False,
                lengths: Any = None, padding_mask: Array | None = None, input_grad: bool = True):
        """Run the stack over ``x``; see the class and module docstrings for every argument.

        x: (N, T, F) with ``batch_first`` (else (T, N, F)), the layer's dtype and device.
        state: the initial state (zeros when ``None``). return_state: also return the final
        state, and take ``(dy, d_final_state)`` in backprop. lengths: N ints in [1, T] (host
        list/tuple/array, or an array on any device: read on the host). padding_mask: bool
        (N, T) on x's device, True at padded steps. Give at most one of lengths/padding_mask.
        input_grad=False: the caller will not use δx (x is data), so backprop skips that GEMM and
        returns ``None`` in its place.
        """
        check_input(self, x, ndim=3, features=self.input_size, like=self._cells[0][0][0].value)
        xp = backend.namespace(x)
        batch_axis, time_axis = (0, 1) if self.batch_first else (1, 0)
        N, T = x.shape[batch_axis], x.shape[time_axis]
        if T == 0:
            raise ValueError(f"{self.describe()}: expected a sequence of at least one step, got shape {tuple(x.shape)}")
        initial = (_check_state(self, state, x, self._state_shapes(N), "num_layers·directions, batch, hidden")
                   if state is not None else None)
        keep = _keep_steps(self, x, N, T, lengths, padding_mask, xp)
        H, P, D, L = self.hidden_size, self.output_size, self.directions, self.num_layers

        inputs = xp.permute_dims(x, (1, 0, 2)) if self.batch_first else x  # time-major (T, N, F)
        layer_inputs, backwards, finals, drop_backs = [], [], [], []
        input_weights = [[cell[0].value for cell in row] for row in self._cells]  # as used in forward
        for k in range(L):
            if k and self.layer_dropout is not None:
                inputs, drop_back = self.layer_dropout(inputs, train)
                drop_backs.append(drop_back)
            flat = xp.reshape(inputs, (T * N, inputs.shape[-1]))
            layer_inputs.append(flat)
            outputs, row = [], []
            for d in range(D):
                cell = self._cells[k][d]
                if initial is None:
                    starts = [xp.zeros((N, P), dtype=x.dtype, device=x.device)]
                    if self.has_cell_state:
                        starts.append(xp.zeros((N, H), dtype=x.dtype, device=x.device))
                else:
                    starts = [part[k * D + d, ...] for part in initial]
                projection = xp.reshape(_project(self, flat, cell, xp), (T, N, self.gates * H))
                sequence, last, backward = self._scan(projection, cell, starts, d == 1, xp, keep)
                if keep is not None:  # padded steps output 0 (as pad_packed_sequence)
                    sequence = xp.where(keep, sequence, xp.zeros((), dtype=x.dtype, device=x.device))
                outputs.append(sequence)
                row.append(backward)
                finals.append(last)
            backwards.append(row)
            inputs = outputs[0] if D == 1 else xp.concat(outputs, axis=-1)

        final_h = xp.stack([last[0] for last in finals], axis=0)  # (L·D, N, P)
        final_state = (final_h, xp.stack([last[1] for last in finals], axis=0)) if self.has_cell_state else final_h
        if self.return_sequences:
            y = xp.permute_dims(inputs, (1, 0, 2)) if self.batch_first else inputs
        else:  # the final state of each top-layer direction: forward at its last step, reverse at 0
            top = [finals[(L - 1) * D + d][0] for d in range(D)]
            y = top[0] if D == 1 else xp.concat(top, axis=-1)

        def backprop_all(dy: Array | None, d_final: Any) -> tuple[Array, State]:
            if dy is not None:
                check_delta_like(self, dy, y, "δ")
            d_final_h, d_final_c = _split_state_delta(self, d_final, final_state, self.has_cell_state)
            # every check is done: gradients may change from here on
            d_last_h = [None if d_final_h is None else d_final_h[i, ...] for i in range(L * D)]
            d_last_c = [None if d_final_c is None else d_final_c[i, ...] for i in range(L * D)]
            d_sequence = None
            if dy is not None and self.return_sequences:
                d_sequence = xp.permute_dims(dy, (1, 0, 2)) if self.batch_first else dy
            elif dy is not None:
                for d in range(D):
                    piece = dy[:, d * P:(d + 1) * P]
                    i = (L - 1) * D + d
                    d_last_h[i] = piece if d_last_h[i] is None else d_last_h[i] + piece
            d_initial_h, d_initial_c = [None] * (L * D), [None] * (L * D)
            for k in reversed(range(L)):
                d_inputs = None
                for d in range(D):
                    w_ih, _, b_ih, _, _ = self._cells[k][d]
                    d_out = None if d_sequence is None else (d_sequence if D == 1 else d_sequence[..., d * P:(d + 1) * P])
                    if d_out is not None and keep is not None:
                        d_out = xp.where(keep, d_out, xp.zeros((), dtype=d_out.dtype, device=d_out.device))
                    d_projection, d_starts, d_bias = backwards[k][d](d_out, d_last_h[k * D + d], d_last_c[k * D + d])
                    d_initial_h[k * D + d] = d_starts[0]
                    if self.has_cell_state:
                        d_initial_c[k * D + d] = d_starts[1]
                    d_flat = xp.reshape(d_projection, (T * N, self.gates * H))
                    w_ih.accumulate(d_flat.T @ layer_inputs[k])
                    if b_ih is not None:
                        b_ih.accumulate(xp.sum(d_flat, axis=0) if d_bias is None else d_bias)
                    if k == 0 and not input_grad:
                        continue
                    part = d_flat @ input_weights[k][d]
                    d_inputs = part if d_inputs is None else d_inputs + part
                if d_inputs is None:
                    d_sequence = None
                    break
                d_sequence = xp.reshape(d_inputs, (T, N, d_inputs.shape[-1]))
                if k:
                    d_sequence = drop_backs[k - 1](d_sequence) if drop_backs else d_sequence
            if d_sequence is None:
                dx = None
            else:
                dx = xp.permute_dims(d_sequence, (1, 0, 2)) if self.batch_first else d_sequence
            d_h0 = xp.stack(d_initial_h, axis=0)
            d_state = (d_h0, xp.stack(d_initial_c, axis=0)) if self.has_cell_state else d_h0
            return dx, d_state

        if not return_state:
            return y, lambda dy: backprop_all(dy, None)[0]

        def backprop_with_state(delta: Any) -> tuple[Array, State]:
            return backprop_all(*_split_delta(self, delta))

        return (y, final_state), backprop_with_state

    def _scan(self, projection: Array, cell: Weights, starts: list[Array], reverse: bool, xp: Any, keep: Array | None):
        """Run the cell over time. projection: (T, N, G·H) = x_t W_ihᵀ + b_ih for every step (the
        scan may modify it in place). keep: bool (T, N, 1), False at padded steps, or None.

        Returns (outputs (T, N, P) in time order, final (h, [c]), backward) where
        ``backward(d_outputs or None, d_h_final or None, d_c_final or None)`` adds the gradients
        of the recurrent weights (W_hh, b_hh, W_hr) and returns (d_projection (T, N, G·H),
        [d_h0, (d_c0)], d_bias): d_bias is Σ_t d_projection_t (b_ih's gradient) where the scan
        has it already, else None. d_outputs is already zero at padded steps.
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            parts.append(f"nonlinearity={self.nonlinearity!r}")
        if not self.bias:
            parts.append("bias=False")
        if self.proj_size:
            parts.append(f"proj_size={self.proj_size}")
        if self.dropout:
            parts.append(f"dropout={self.dropout:g}")
        if self.bidirectional:
            parts.append("bidirectional=True")
        if not self.batch_first:
            parts.append("batch_first=False")
        if not self.return_sequences:
            parts.append("return_sequences=False")
        if getattr(self, "forget_bias", 0.0):
            parts.append(f"forget_bias={self.forget_bias:g}")
        return ", ".join(parts)


def _steps(T: int, reverse: bool) -> range:
    return range(T - 1, -1, -1) if reverse else range(T)


def _previous(xp: Any, sequence: Array, start: Array, reverse: bool) -> Array:
    """The state entering each step, by time position: (T, N, H) from the outputs and the start."""
    if reverse:
        return xp.concat([sequence[1:, ...], start[None, ...]], axis=0)
    return xp.concat([start[None, ...], sequence[:-1, ...]], axis=0)


def _masked(xp: Any, keep: Array | None, values: Array) -> Array:
    """``values`` with padded steps set to 0 (unchanged without padding)."""
    if keep is None:
        return values
    return xp.where(keep, values, xp.zeros((), dtype=values.dtype, device=values.device))


def _project(layer: Layer, flat: Array, cell: Weights, xp: Any) -> Array:
    """The input projection of every step, (T·N, G·H): ``x W_ihᵀ + b_ih`` in one GEMM, or for an
    LSTM already in the form its scan reads (see :func:`_lstm_projection`)."""
    if layer.gates == 4:
        return _lstm_projection(flat, cell, xp)
    projection = flat @ cell[0].value.T
    if cell[2] is not None:
        projection += cell[2].value
    return projection


def _accumulate_recurrent(xp: Any, cell: Weights, outputs: Array, h0: Array, reverse: bool, d_z: Array) -> Array | None:
    """dW_hh = Σ_t dz_tᵀ h_{t−1} and db_hh = Σ_t dz_t, one GEMM and one sum over all steps.

    Returns Σ_t dz_t (None without biases), for a caller whose b_ih has the same gradient."""
    T, N, G = d_z.shape
    d_flat = xp.reshape(d_z, (T * N, G))
    previous = _previous(xp, outputs, h0, reverse)
    cell[1].accumulate(d_flat.T @ xp.reshape(previous, (T * N, previous.shape[-1])))
    if cell[3] is None:
        return None
    d_bias = xp.sum(d_flat, axis=0)
    cell[3].accumulate(xp.asarray(d_bias, copy=True))  # accumulate takes the array over
    return d_bias


# The time loops below are written for few array operations per step (each costs a few µs of
# dispatch, which dominates for small hidden sizes): per-step results go into Python lists and
# are stacked once, whatever the backward loop needs that does not depend on the δ is computed
# for all steps at once before it, and padding costs nothing when there is none.

_NONLINEARITIES = ("tanh", "relu")


class RNN(_Recurrent):
    """Elman RNN: ``h_t = φ(x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh)`` with φ = tanh or ReLU.

    Arguments: input_size F, hidden_size H, num_layers L (stacked; layer k > 0 reads the D·H
    outputs of layer k − 1); ``nonlinearity`` "tanh" (default) or "relu"; ``bias`` (False: no
    b_ih, b_hh); ``dropout`` p in [0, 1): inverted dropout on the outputs of every layer but the
    last, in training only (a :class:`Dropout` sublayer seeded with ``seed``, reproducible and
    saved with checkpoints; identity with ``train=False``); ``bidirectional``; ``batch_first``
    (x is (N, T, F), else (T, N, F)); ``return_sequences`` (False: y is the final state of the
    top layer, both directions concatenated); ``rng`` (int or generator for the weights);
    ``device``, ``dtype``. Call arguments ``state``, ``return_state``, ``lengths`` and
    ``padding_mask``: see the module docstring.

    Shapes (batch_first): x (N, T, F) -> y (N, T, D·H), or (N, D·H) with
    ``return_sequences=False``; state h (L·D, N, H). Parameters per layer k and direction:
    weight_ih_l{k}[_reverse] (H, F or D·H), weight_hh (H, H), bias_ih (H,), bias_hh (H,) (PyTorch's).

    BPTT: with ``δh_t = dy_t + δh_{t+1}`` flowing back, ``dz_t = δh_t ⊙ φ'(z_t)`` (tanh:
    1 − h_t², ReLU: [h_t > 0]), ``δh_{t−1} ← dz_t W_hh``; ``dW_hh = Σ_t dz_tᵀ h_{t−1}``,
    ``db_hh = db_ih = Σ_t dz_t``, ``dW_ih = Σ_t dz_tᵀ x_t``, ``dx_t = dz_t W_ih``.
    """

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, nonlinearity: str = "tanh",
                 **options: Any):
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"RNN: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        if "proj_size" in options:
            raise TypeError("RNN: proj_size exists for LSTM only")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, num_layers, **options)

    def _scan(self, projection, cell, starts, reverse, xp, keep):
        return _rnn_scan(projection, cell, starts, reverse, xp, keep, self.nonlinearity == "relu")


def _rnn_scan(projection, cell, starts, reverse, xp, keep, relu):
    T, N, H = projection.shape
    W = cell[1].value  # (H, H), PyTorch's layout: the step reads W.T as a view
    W_T = W.T
    if cell[3] is not None:
        projection += cell[3].value  # b_hh acts exactly like b_ih here
    h0 = h = starts[0]
    hs: list[Any] = [None] * T
    for t in _steps(T, reverse):
        z = h @ W_T
        z += projection[t, ...]
        new = xp.maximum(z, 0.0) if relu else xp.tanh(z)
        h = hs[t] = new if keep is None else xp.where(keep[t, ...], new, h)
    outputs = xp.stack(hs, axis=0)

    def backward(d_outputs, d_h_last, d_c_last):
        if relu:
            slope = xp.astype(outputs > 0, outputs.dtype)
        else:
            slope = 1.0 - outputs * outputs  # tanh' at every step
        slope = _masked(xp, keep, slope)
        passes = None if keep is None else xp.astype(xp.logical_not(keep), outputs.dtype)
        d_z = xp.empty_like(outputs)
        d_h = d_h_last if d_h_last is not None else xp.zeros((N, H), dtype=outputs.dtype, device=outputs.device)
        for t in _steps(T, not reverse):
            if d_outputs is not None:
                d_h = d_h + d_outputs[t, ...]
            d_z[t, ...] = d_h * slope[t, ...]
            d_back = d_z[t, ...] @ W
            d_h = d_back if passes is None else d_back + d_h * passes[t, ...]
        d_bias = _accumulate_recurrent(xp, cell, outputs, h0, reverse, d_z)
        return d_z, [d_h], d_bias

    return outputs, (h,), backward


class LSTM(_Recurrent):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), PyTorch's gate order i, f, g, o.

    ``z_t = x_t W_ihᵀ + b_ih + h_{t−1} W_hhᵀ + b_hh`` split into four blocks of H;
    ``i, f, o = σ(z_i), σ(z_f), σ(z_o)``, ``g = tanh(z_g)``;
    ``c_t = f ⊙ c_{t−1} + i ⊙ g``, ``m_t = o ⊙ tanh(c_t)``, ``h_t = m_t`` (or ``m_t W_hrᵀ`` with
    ``proj_size``). All four gates are one tanh: σ(z) = ½(1 + tanh(z/2)).

    Arguments as for :class:`RNN` (no nonlinearity), plus ``proj_size`` P in [0, H): 0 for none,
    else the hidden state is projected to P features by ``weight_hr_l{k}`` (P, H) (PyTorch's
    ``proj_size``: outputs and h have P features, c keeps H), and ``forget_bias`` (a finite
    number added to b_ih's forget block at initialisation; 0 as in PyTorch, 1 keeps early
    gradients from vanishing; needs ``bias=True``).

    Shapes (batch_first): x (N, T, F) -> y (N, T, D·P), or (N, D·P) with
    ``return_sequences=False``, P = proj_size or H; state (h, c) with h (L·D, N, P) and
    c (L·D, N, H). Parameters (PyTorch's shapes): weight_ih (4H, F or D·P), weight_hh (4H, P), bias_ih,
    bias_hh (4H,), weight_hr (P, H).

    BPTT, with δh_t = dy_t + δh_{t+1}, δm_t = δh_t (or δh_t W_hr) and δc_t carried back:
    ``δc_t ← δc_t + δm_t ⊙ o ⊙ (1 − tanh²c_t)``; ``δi = δc_t ⊙ g``, ``δf = δc_t ⊙ c_{t−1}``,
    ``δg = δc_t ⊙ i``, ``δo = δm_t ⊙ tanh c_t``; ``dz = δgate ⊙ gate'`` (σ' = σ(1 − σ),
    tanh' = 1 − g²); then ``δc_{t−1} = δc_t ⊙ f`` and ``δh_{t−1} = dz W_hh``;
    ``dW_hr = Σ_t δh_tᵀ m_t``. Other weight gradients as for :class:`RNN`.
    """

    gates = 4
    has_cell_state = True

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, forget_bias: float = 0.0,
                 **options: Any):
        forget_bias = _check_forget_bias("LSTM", forget_bias, options.get("bias", True))
        super().__init__(input_size, hidden_size, num_layers, **options)
        self.forget_bias = forget_bias
        if self.forget_bias:  # added to b_ih's f block (Gers et al. 2000; Jozefowicz et al. 2015 use 1)
            for row in self._cells:
                for cell in row:
                    cell[2].value[hidden_size:2 * hidden_size] += self.forget_bias

    def _scan(self, projection, cell, starts, reverse, xp, keep):
        return _lstm_scan(projection, cell, starts, reverse, xp, keep)


def _check_forget_bias(owner: str, forget_bias: Any, bias: Any) -> float:
    if isinstance(forget_bias, bool) or not isinstance(forget_bias, (int, float)) or not math.isfinite(forget_bias):
        raise ValueError(f"{owner}: forget_bias must be a finite number, got {forget_bias!r}")
    if forget_bias and not bias:
        raise ValueError(f"{owner}: forget_bias={forget_bias!r} needs bias=True (it is added to bias_ih)")
    return float(forget_bias)


def _lstm_half(xp: Any, G: int, dtype: Any, dev: Any) -> Array:
    """½ on the σ blocks (i, f, o), 1 on the g block: one tanh gives all four gates, with
    σ(z) = ½ + ½ tanh(z/2), as gate = half ⊙ tanh(half ⊙ z) + (1 − half)."""
    H = G // 4
    half = xp.full((G,), 0.5, dtype=dtype, device=dev)
    half[2 * H:3 * H] = 1.0
    return half


def _lstm_projection(flat: Array, cell: Weights, xp: Any) -> Array:
    """``half ⊙ (x W_ihᵀ + b_ih + b_hh)`` for every step in one GEMM and one addition: the
    scaling rides on a scaled copy of W_ih (G·H × F, small) instead of passes over (T·N, G·H)."""
    w_ih, _, b_ih, b_hh, _ = cell
    W = w_ih.value
    half = _lstm_half(xp, W.shape[0], W.dtype, W.device)
    projection = flat @ (W * half[:, None]).T
    if b_ih is not None:
        projection += (b_ih.value + b_hh.value) * half
    return projection


def _lstm_scan(projection, cell, starts, reverse, xp, keep):
    """projection: ``half ⊙ (x W_ihᵀ + b_ih + b_hh)`` from :func:`_lstm_projection`."""
    T, N, G = projection.shape
    H = G // 4
    dtype, dev = projection.dtype, projection.device
    # u = tanh(half ⊙ z), gate = half ⊙ u + (1 − half): the half is in the projection and in a
    # scaled copy of W_hh.
    half = _lstm_half(xp, G, dtype, dev)
    offset = 1.0 - half
    linear = xp.reshape(offset * 2.0, (4, H))  # 1 on the σ blocks, 0 on g (for the backward)
    _, w_hh, _, _, w_hr = cell
    W = w_hh.value  # (4H, P)
    W_half = (W * half[:, None]).T  # (P, 4H), a transposed view
    R = None if w_hr is None else w_hr.value  # (P, H)
    h0, c0 = h, c = starts
    gate_list: list[Any] = [None] * T
    cell_list: list[Any] = [None] * T
    tanh_list: list[Any] = [None] * T
    hs: list[Any] = [None] * T
    ms: list[Any] = [None] * T
    for t in _steps(T, reverse):
        z = h @ W_half
        z += projection[t, ...]
        a = gate_list[t] = xp.tanh(z) * half + offset
        c_new = a[:, H:2 * H] * c + a[:, :H] * a[:, 2 * H:3 * H]
        tanh_c = tanh_list[t] = xp.tanh(c_new)
        m = ms[t] = a[:, 3 * H:] * tanh_c
        h_new = m if R is None else m @ R.T
        if keep is None:
            c, h = c_new, h_new
        else:  # a padded step carries the states over
            c = xp.where(keep[t, ...], c_new, c)
            h = xp.where(keep[t, ...], h_new, h)
        cell_list[t] = c
        hs[t] = h
    outputs = xp.stack(hs, axis=0)

    def backward(d_outputs, d_h_last, d_c_last):
        gates = xp.reshape(xp.stack(gate_list, axis=0), (T, N, 4, H))  # the gate blocks as an axis
        cells, tanh_cells = xp.stack(cell_list, axis=0), xp.stack(tanh_list, axis=0)
        i, f, g, o = (gates[:, :, k, :] for k in range(4))
        # Everything the loop needs that does not depend on δ, for all steps at once, in few
        # passes: gate' = a(1 − a) on the σ blocks and 1 − g² on the g block, i.e.
        # (linear − a) ⊙ a + (1 − linear) with linear = 1, 1, 0, 1 per block; then each block
        # times what δc (i, f, g) or δm (o) meets on the way to z: g, c_{t−1}, i and tanh c.
        # The loop then multiplies each step's factors by (δc, δc, δc, δm) and stores δz in their
        # place: one contiguous product with a reused (N, 4, H) buffer is ~2x faster than two
        # strided in-place products (measured, NumPy, N 32, H 128).
        factors = linear - gates
        factors *= gates
        factors += 1.0 - linear
        factors[:, :, 0, :] *= g
        factors[:, :, 2, :] *= i
        factors[:, :, 1, :] *= _previous(xp, cells, c0, reverse)
        factors[:, :, 3, :] *= tanh_cells
        c_from_h = (1.0 - tanh_cells * tanh_cells) * o  # δc += δm ⊙ o ⊙ tanh'(c)
        passes = None
        if keep is not None:  # padded steps: no δz, and δc and δh pass unchanged
            factors = _masked(xp, keep[..., None], factors)
            c_from_h = _masked(xp, keep, c_from_h)
            f = xp.where(keep, f, xp.ones((), dtype=dtype, device=dev))
            passes = xp.astype(xp.logical_not(keep), dtype)
        d_hs = None if R is None else xp.empty(tuple(outputs.shape), dtype=dtype, device=dev)
        d_h = d_h_last if d_h_last is not None else xp.zeros(tuple(h0.shape), dtype=dtype, device=dev)
        d_c = d_c_last if d_c_last is not None else xp.zeros((N, H), dtype=dtype, device=dev)
        carried = xp.empty((N, 4, H), dtype=dtype, device=dev)  # (δc, δc, δc, δm) of the step
        for t in _steps(T, not reverse):
            if d_outputs is not None:
                d_h = d_h + d_outputs[t, ...]
            if R is None:
                d_m = d_h
            else:
                d_hs[t, ...] = d_h
                d_m = d_h @ R
            d_c = d_c + d_m * c_from_h[t, ...]
            carried[:, :3, :] = d_c[:, None, :]
            carried[:, 3, :] = d_m
            d_z_t = factors[t, ...] * carried
            factors[t, ...] = d_z_t  # δz of step t, kept for the weight gradients
            d_c = d_c * f[t, ...]
            d_back = xp.reshape(d_z_t, (N, G)) @ W
            d_h = d_back if passes is None else d_back + d_h * passes[t, ...]
        d_z = xp.reshape(factors, (T, N, G))
        if R is not None:  # dW_hr = Σ_t δh_tᵀ m_t over the real steps
            P = R.shape[0]
            d_hs = _masked(xp, keep, d_hs)
            w_hr.accumulate(xp.reshape(d_hs, (T * N, P)).T @ xp.reshape(xp.stack(ms, axis=0), (T * N, H)))
        d_bias = _accumulate_recurrent(xp, cell, outputs, h0, reverse, d_z)
        return d_z, [d_h, d_c], d_bias

    return outputs, (h, c), backward


class GRU(_Recurrent):
    """Gated recurrent unit (Cho et al. 2014) in PyTorch's form, gate order r, z, n.

    With ``p_t = x_t W_ihᵀ + b_ih`` and ``q_t = h_{t−1} W_hhᵀ + b_hh``, each split into r, z, n:
    ``r = σ(p_r + q_r)``, ``z = σ(p_z + q_z)``, ``n = tanh(p_n + r ⊙ q_n)``,
    ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}``.

    Arguments as for :class:`RNN` (no nonlinearity). Shapes (batch_first): x (N, T, F) ->
    y (N, T, D·H), or (N, D·H) with ``return_sequences=False``; state h (L·D, N, H).
    Parameters (PyTorch's shapes): weight_ih (3H, F or D·H), weight_hh (3H, H), bias_ih, bias_hh (3H,).

    BPTT, with δh_t = dy_t + δh_{t+1}: ``δn = δh_t ⊙ (1 − z) ⊙ (1 − n²)``,
    ``δz = δh_t ⊙ (h_{t−1} − n) ⊙ z(1 − z)``, ``δr = δn ⊙ q_n ⊙ r(1 − r)``;
    ``dp = [δr, δz, δn]``, ``dq = [δr, δz, δn ⊙ r]``;
    ``δh_{t−1} = δh_t ⊙ z + dq W_hh``; ``dW_hh = Σ_t dq_tᵀ h_{t−1}``, ``db_hh = Σ_t dq_t``,
    ``dW_ih = Σ_t dp_tᵀ x_t``.
    """

    gates = 3

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, **options: Any):
        if "proj_size" in options:
            raise TypeError("GRU: proj_size exists for LSTM only")
        super().__init__(input_size, hidden_size, num_layers, **options)

    def _scan(self, projection, cell, starts, reverse, xp, keep):
        return _gru_scan(projection, cell, starts, reverse, xp, keep)


def _gru_scan(projection, cell, starts, reverse, xp, keep):
    T, N, G = projection.shape
    H = G // 3
    dtype, dev = projection.dtype, projection.device
    # σ(z) = ½ + ½ tanh(z/2): the ½ of the r and z blocks is folded into W_hh, b_hh and P.
    half = xp.full((G,), 0.5, dtype=dtype, device=dev)
    half[2 * H:] = 1.0
    _, w_hh, _, b_hh, _ = cell
    W = w_hh.value  # (3H, H)
    W_half = (W * half[:, None]).T  # (H, 3H), a transposed view
    bias_half = None if b_hh is None else b_hh.value * half
    projection *= half
    h0 = h = starts[0]
    rz_list: list[Any] = [None] * T
    qn_list: list[Any] = [None] * T
    n_list: list[Any] = [None] * T
    hs: list[Any] = [None] * T
    for t in _steps(T, reverse):
        q = h @ W_half
        if bias_half is not None:
            q += bias_half
        p = projection[t, ...]
        rz = rz_list[t] = 0.5 * xp.tanh(p[:, :2 * H] + q[:, :2 * H]) + 0.5
        q_n = qn_list[t] = q[:, 2 * H:]
        n = n_list[t] = xp.tanh(p[:, 2 * H:] + rz[:, :H] * q_n)
        new = n + rz[:, H:] * (h - n)
        h = hs[t] = new if keep is None else xp.where(keep[t, ...], new, h)
    outputs = xp.stack(hs, axis=0)

    def backward(d_outputs, d_h_last, d_c_last):
        reset_update, hidden_n, candidates = (xp.stack(items, axis=0) for items in (rz_list, qn_list, n_list))
        r, z = reset_update[..., :H], reset_update[..., H:]
        slope_rz = reset_update * (1.0 - reset_update)  # σ'
        n_from_h = _masked(xp, keep, (1.0 - z) * (1.0 - candidates * candidates))  # δn = δh ⊙ (1 − z) ⊙ tanh'
        r_from_n = hidden_n * slope_rz[..., :H]  # δr = δn ⊙ q_n ⊙ σ'
        z_from_h = _masked(xp, keep, (_previous(xp, outputs, h0, reverse) - candidates) * slope_rz[..., H:])
        if keep is not None:  # at a padded step δh passes unchanged
            z = xp.where(keep, z, xp.ones((), dtype=dtype, device=dev))
        d_q = xp.empty((T, N, G), dtype=dtype, device=dev)
        d_p_n = xp.empty((T, N, H), dtype=dtype, device=dev)
        d_h = d_h_last if d_h_last is not None else xp.zeros((N, H), dtype=dtype, device=dev)
        for t in _steps(T, not reverse):
            if d_outputs is not None:
                d_h = d_h + d_outputs[t, ...]
            d_n = d_p_n[t, ...] = d_h * n_from_h[t, ...]
            d_q[t, :, :H] = d_n * r_from_n[t, ...]
            d_q[t, :, H:2 * H] = d_h * z_from_h[t, ...]
            d_q[t, :, 2 * H:] = d_n * r[t, ...]
            d_h = d_h * z[t, ...] + d_q[t, ...] @ W
        _accumulate_recurrent(xp, cell, outputs, h0, reverse, d_q)
        d_projection = xp.concat([d_q[..., :2 * H], d_p_n], axis=-1)
        return d_projection, [d_h], None

    return outputs, (h,), backward


# --------------------------------------------------------------------------------------------
# Cells: one step, for hand-written loops
# --------------------------------------------------------------------------------------------


class _Cell(Layer):
    """One step of a recurrent layer: ``cell(x_t, train, state=s)`` with x_t (N, F).

    The output is the new hidden state h' (N, H). With ``return_state=True`` the call returns
    ``((h', new_state), backprop)`` where ``backprop((dh', d_new_state))`` (either part may be
    ``None``) returns ``(dx_t, d_state)``, so a loop can carry δs back step by step. For
    RNNCell and GRUCell the state is h' itself (a δ given for both parts is added); LSTMCell's is
    the pair (h', c'). Each δ must match its array's shape, dtype, device and type exactly.
    """

    gates = 1
    has_cell_state = False

    def __init__(self, input_size: int, hidden_size: int, *, bias: bool = True, rng: Any = None,
                 device: Any = "cpu", dtype: str = "float32"):
        name = type(self).__name__
        _positive_int(name, "input_size", input_size)
        _positive_int(name, "hidden_size", hidden_size)
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bool(bias)
        from .. import init as _init

        self._cell = _make_weights(self, _init.generator(rng), backend.device(device), dtype, input_size,
                                   hidden_size, self.gates, "", self.bias, 0)

    def forward(self, x: Array, train: bool, state: State = None, return_state: bool = False):
        """x: (N, F); state: h (N, H) (LSTMCell: a pair (h, c)), zeros when ``None``."""
        cell = self._cell
        check_input(self, x, ndim=2, features=self.input_size, like=cell[0].value)
        xp = backend.namespace(x)
        N, H = x.shape[0], self.hidden_size
        shapes = ((N, H), (N, H)) if self.has_cell_state else ((N, H),)
        if state is None:
            starts = [xp.zeros((N, H), dtype=x.dtype, device=x.device) for _ in shapes]
        else:
            starts = list(_check_state(self, state, x, shapes, "batch, hidden"))
        w_ih_value = cell[0].value
        projection = _project(self, x, cell, xp)
        _, last, backward = self._scan(xp.reshape(projection, (1, N, self.gates * H)), cell, starts, False, xp, None)
        y = last[0]
        new_state = tuple(last) if self.has_cell_state else y

        def backprop_all(dy: Array | None, d_state: Any) -> tuple[Array, State]:
            if dy is not None:
                check_delta_like(self, dy, y, "δ")
            d_h, d_c = _split_state_delta(self, d_state, new_state, self.has_cell_state)
            if dy is not None:
                d_h = dy if d_h is None else dy + d_h
            d_projection, d_starts, d_bias = backward(None, d_h, d_c)
            d_flat = xp.reshape(d_projection, (N, self.gates * H))
            cell[0].accumulate(d_flat.T @ x)
            if cell[2] is not None:
                cell[2].accumulate(xp.sum(d_flat, axis=0) if d_bias is None else d_bias)
            dx = d_flat @ w_ih_value
            return dx, (tuple(d_starts) if self.has_cell_state else d_starts[0])

        if not return_state:
            return y, lambda dy: backprop_all(dy, None)[0]

        def backprop_with_state(delta: Any) -> tuple[Array, State]:
            return backprop_all(*_split_delta(self, delta))

        return (y, new_state), backprop_with_state

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}, {self.hidden_size}"]
        if getattr(self, "nonlinearity", "tanh") != "tanh":
            parts.append(f"nonlinearity={self.nonlinearity!r}")
        if not self.bias:
            parts.append("bias=False")
        if getattr(self, "forget_bias", 0.0):
            parts.append(f"forget_bias={self.forget_bias:g}")
        return ", ".join(parts)


class RNNCell(_Cell):
    """One step of :class:`RNN`: ``h' = φ(x W_ihᵀ + b_ih + h W_hhᵀ + b_hh)``, φ = tanh or ReLU.

    Arguments: input_size F, hidden_size H, ``nonlinearity`` ("tanh" or "relu"), ``bias``,
    ``rng``, ``device``, ``dtype``. Shapes: x (N, F), state h (N, H) -> h' (N, H). Parameters
    weight_ih (H, F), weight_hh (H, H), bias_ih, bias_hh (H,) (PyTorch's names and shapes).
    δ rule: ``dz = δh' ⊙ φ'``, ``dx = dz W_ih``, ``δh = dz W_hh``; ``dW_ih = dzᵀ x``,
    ``dW_hh = dzᵀ h``, ``db = Σ_n dz``. Calling protocol: see :class:`_Cell` (``return_state``).
    """

    gates = 1

    def __init__(self, input_size: int, hidden_size: int, *, nonlinearity: str = "tanh", **options: Any):
        if nonlinearity not in _NONLINEARITIES:
            raise ValueError(f"RNNCell: nonlinearity must be 'tanh' or 'relu', got {nonlinearity!r}")
        self.nonlinearity = nonlinearity
        super().__init__(input_size, hidden_size, **options)

    def _scan(self, projection, cell, starts, reverse, xp, keep):
        return _rnn_scan(projection, cell, starts, reverse, xp, keep, self.nonlinearity == "relu")


class LSTMCell(_Cell):
    """One step of :class:`LSTM`: gates ``i, f, g, o`` from ``x W_ihᵀ + b_ih + h W_hhᵀ + b_hh``,
    ``c' = f ⊙ c + i ⊙ g``, ``h' = o ⊙ tanh c'``.

    Arguments: input_size F, hidden_size H, ``bias``, ``forget_bias`` (finite, added to b_ih's
    forget block at initialisation), ``rng``, ``device``, ``dtype``. Shapes: x (N, F), state
    (h, c) each (N, H) -> h' (N, H); with ``return_state=True`` also (h', c'). Parameters
    weight_ih (4H, F), weight_hh (4H, H), bias_ih, bias_hh (4H,) (PyTorch's shapes). δ rule as in :class:`LSTM` for
    one step: ``δc ← δc' + δh' ⊙ o ⊙ tanh'(c')``, gate δs, ``δc_prev = δc ⊙ f``,
    ``δh_prev = dz W_hh``, ``dx = dz W_ih``.
    """

    gates = 4
    has_cell_state = True

    def __init__(self, input_size: int, hidden_size: int, *, forget_bias: float = 0.0, **options: Any):
        forget_bias = _check_forget_bias("LSTMCell", forget_bias, options.get("bias", True))
        super().__init__(input_size, hidden_size, **options)
        self.forget_bias = forget_bias
        if forget_bias:
            self._cell[2].value[hidden_size:2 * hidden_size] += forget_bias

    def _scan(self, projection, cell, starts, reverse, xp, keep):
        return _lstm_scan(projection, cell, starts, reverse, xp, keep)


class GRUCell(_Cell):
    """One step of :class:`GRU`: ``r = σ(p_r + q_r)``, ``z = σ(p_z + q_z)``,
    ``n = tanh(p_n + r ⊙ q_n)``, ``h' = (1 − z) ⊙ n + z ⊙ h`` with ``p = x W_ihᵀ + b_ih``,
    ``q = h W_hhᵀ + b_hh``.

    Arguments: input_size F, hidden_size H, ``bias``, ``rng``, ``device``, ``dtype``. Shapes:
    x (N, F), state h (N, H) -> h' (N, H). Parameters weight_ih (3H, F), weight_hh (3H, H),
    bias_ih, bias_hh (3H,). δ rule as in :class:`GRU` for one step.
    """

    gates = 3

    def _scan(self, projection, cell, starts, reverse, xp, keep):
        return _gru_scan(projection, cell, starts, reverse, xp, keep)
