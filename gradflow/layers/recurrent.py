"""Recurrent layers — RNN (tanh), LSTM and GRU — with backpropagation through time.

One scheme for all three. For each layer of the stack and each direction, the input projection
of every time step is one GEMM, ``P = X W_ih + b_ih`` with X reshaped to (T·N, F); then a loop
over time steps (never over samples) applies the cell. BPTT runs the loop backwards, storing the
δ of each step's pre-activations; the weight gradients are then again single GEMMs over all
steps: ``dW_hh = Σ_t h_{t-1}ᵀ dZ_t`` and ``dW_ih = Xᵀ dP``, and ``dX = dP W_ih^T``.

Weights follow PyTorch's gate layout (LSTM: i, f, g, o; GRU: r, z, n) and names
(``weight_ih_l0``, ``bias_hh_l1_reverse``...), stored transposed for ``x @ W``: a PyTorch
``weight_ih_l0`` of shape (G·H, F) is our ``weight_ih_l0.T``.

States. ``layer(x, train, state=s0)`` starts from ``s0`` (zeros by default): an array
(L·D, N, H) for RNN and GRU, a pair ``(h0, c0)`` of such arrays for LSTM, with L = num_layers
and D = 2 if bidirectional else 1 (PyTorch's layout). With ``return_state=True`` the call
returns ``((y, final_state), backprop)``; that backprop takes ``(dy, d_final_state)`` (either
part may be ``None``) and returns ``(dx, d_initial_state)``. So a long sequence can be split
into chunks, each chunk starting from the previous one's final state, and the δ carried back
across the chunk boundary: for a unidirectional layer, two half-sequence calls give exactly the
output and gradients of one full call (a reverse direction needs the whole sequence).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .. import backend
from ..backend import Array, DeviceError
from ..core import Layer, Parameter, _device_name, check_delta, check_input

State = Any  # an array (RNN, GRU) or a pair of arrays (LSTM)


class _Recurrent(Layer):
    """The stack, directions, states and input GEMMs; subclasses give the cell (``_scan``)."""

    gates = 1
    has_cell_state = False

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        num_layers: int = 1,
        *,
        bidirectional: bool = False,
        batch_first: bool = True,
        return_sequences: bool = True,
        rng: Any = None,
        device: Any = "cpu",
        dtype: str = "float32",
    ):
        name = type(self).__name__
        for label, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name}: {label} must be a positive int, got {value!r}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bidirectional = bool(bidirectional)
        self.batch_first = bool(batch_first)
        self.return_sequences = bool(return_sequences)
        self.directions = 2 if self.bidirectional else 1
        from .. import init as _init

        generator = _init.generator(rng)
        dev = backend.device(device)
        H, G = hidden_size, self.gates
        bound = 1.0 / math.sqrt(H)  # PyTorch's U(−1/√H, 1/√H) for every weight and bias
        # cells[k][d] = (weight_ih, weight_hh, bias_ih, bias_hh) of layer k, direction d
        self._cells: list[list[tuple[Parameter, Parameter, Parameter, Parameter]]] = []
        for k in range(num_layers):
            features = input_size if k == 0 else H * self.directions
            row = []
            for d in range(self.directions):
                suffix = f"_l{k}" + ("_reverse" if d else "")
                shapes = {"weight_ih": (features, G * H), "weight_hh": (H, G * H), "bias_ih": (G * H,), "bias_hh": (G * H,)}
                params = []
                for label, shape in shapes.items():
                    p = Parameter(dev.send(generator.uniform(-bound, bound, size=shape), dtype))
                    setattr(self, label + suffix, p)
                    params.append(p)
                row.append(tuple(params))
            self._cells.append(row)

    # -- checks ------------------------------------------------------------------------------------
    def _check_state(self, state: Any, x: Array, batch: int) -> tuple[Array, ...]:
        parts = tuple(state) if self.has_cell_state and isinstance(state, (tuple, list)) else (state,)
        expected_parts = 2 if self.has_cell_state else 1
        if len(parts) != expected_parts:
            what = "a pair (h0, c0)" if self.has_cell_state else "one array h0"
            raise TypeError(f"{self.describe()}: expected the state as {what}, got {type(state).__name__}")
        shape = (self.num_layers * self.directions, batch, self.hidden_size)
        for label, part in zip(("h0", "c0"), parts):
            if not backend.is_array(part):
                raise TypeError(f"{self.describe()}: expected state {label} as an array, got {type(part).__name__}")
            if not backend.same_device(part, x):
                raise DeviceError(f"{self.describe()}: state {label} is on {_device_name(part)} but the input on {_device_name(x)}")
            if part.dtype != x.dtype:
                raise TypeError(
                    f"{self.describe()}: expected state {label} of dtype {backend.dtype_name(x.dtype)} (the input's), "
                    f"got {backend.dtype_name(part.dtype)}"
                )
            if tuple(part.shape) != shape:
                raise ValueError(
                    f"{self.describe()}: expected state {label} of shape {shape} (num_layers·directions, batch, hidden), "
                    f"got {tuple(part.shape)}"
                )
        return parts

    # -- forward and BPTT --------------------------------------------------------------------------
    def forward(self, x: Array, train: bool, state: State = None, return_state: bool = False):
        check_input(self, x, ndim=3, features=self.input_size, like=self._cells[0][0][0].value)
        xp = backend.namespace(x)
        batch_axis, time_axis = (0, 1) if self.batch_first else (1, 0)
        N, T = x.shape[batch_axis], x.shape[time_axis]
        if T == 0:
            raise ValueError(f"{self.describe()}: expected a sequence of at least one step, got shape {tuple(x.shape)}")
        initial = self._check_state(state, x, N) if state is not None else None
        H, D, L = self.hidden_size, self.directions, self.num_layers

        def zeros() -> Array:
            return xp.zeros((N, H), dtype=x.dtype, device=x.device)

        inputs = xp.permute_dims(x, (1, 0, 2)) if self.batch_first else x  # time-major (T, N, F)
        layer_inputs, backwards, finals = [], [], []
        input_weights = [[cell[0].value for cell in row] for row in self._cells]  # as used in forward
        for k in range(L):
            flat = xp.reshape(inputs, (T * N, inputs.shape[-1]))
            layer_inputs.append(flat)
            outputs, row = [], []
            for d in range(D):
                w_ih, w_hh, b_ih, b_hh = self._cells[k][d]
                if initial is None:
                    starts = [zeros() for _ in range(2 if self.has_cell_state else 1)]
                else:
                    starts = [part[k * D + d, ...] for part in initial]
                projection = xp.reshape(flat @ w_ih.value + b_ih.value, (T, N, self.gates * H))
                sequence, last, backward = self._scan(projection, w_hh, b_hh, starts, reverse=d == 1, xp=xp)
                outputs.append(sequence)
                row.append(backward)
                finals.append(last)
            backwards.append(row)
            inputs = outputs[0] if D == 1 else xp.concat(outputs, axis=-1)

        final_h = xp.stack([last[0] for last in finals], axis=0)  # (L·D, N, H)
        final_state = (final_h, xp.stack([last[1] for last in finals], axis=0)) if self.has_cell_state else final_h
        if self.return_sequences:
            y = xp.permute_dims(inputs, (1, 0, 2)) if self.batch_first else inputs
        else:  # the last step of each top-layer direction: forward at T−1, reverse at 0
            top = [finals[(L - 1) * D + d][0] for d in range(D)]
            y = top[0] if D == 1 else xp.concat(top, axis=-1)
        y_shape = tuple(y.shape)

        def backprop_all(dy: Array | None, d_final: Any) -> tuple[Array, State]:
            if dy is not None:
                check_delta(self, dy, y_shape)
            d_last_h = [None] * (L * D)
            d_last_c = [None] * (L * D)
            if d_final is not None:
                parts = tuple(d_final) if self.has_cell_state else (d_final, None)
                for i in range(L * D):
                    d_last_h[i] = None if parts[0] is None else parts[0][i, ...]
                    d_last_c[i] = None if parts[1] is None else parts[1][i, ...]
            d_sequence = None
            if dy is not None and self.return_sequences:
                d_sequence = xp.permute_dims(dy, (1, 0, 2)) if self.batch_first else dy
            elif dy is not None:
                for d in range(D):
                    piece = dy[:, d * H:(d + 1) * H]
                    i = (L - 1) * D + d
                    d_last_h[i] = piece if d_last_h[i] is None else d_last_h[i] + piece
            d_initial_h, d_initial_c = [None] * (L * D), [None] * (L * D)
            for k in reversed(range(L)):
                d_inputs = None
                for d in range(D):
                    w_ih, _, b_ih, _ = self._cells[k][d]
                    d_out = None if d_sequence is None else (d_sequence if D == 1 else d_sequence[..., d * H:(d + 1) * H])
                    d_projection, d_starts = backwards[k][d](d_out, d_last_h[k * D + d], d_last_c[k * D + d])
                    d_initial_h[k * D + d] = d_starts[0]
                    if self.has_cell_state:
                        d_initial_c[k * D + d] = d_starts[1]
                    d_flat = xp.reshape(d_projection, (T * N, self.gates * H))
                    w_ih.accumulate(layer_inputs[k].T @ d_flat)
                    b_ih.accumulate(xp.sum(d_flat, axis=0))
                    part = d_flat @ input_weights[k][d].T
                    d_inputs = part if d_inputs is None else d_inputs + part
                d_sequence = xp.reshape(d_inputs, (T, N, d_inputs.shape[-1]))
            dx = xp.permute_dims(d_sequence, (1, 0, 2)) if self.batch_first else d_sequence
            d_h0 = xp.stack(d_initial_h, axis=0)
            d_state = (d_h0, xp.stack(d_initial_c, axis=0)) if self.has_cell_state else d_h0
            return dx, d_state

        if not return_state:
            return y, lambda dy: backprop_all(dy, None)[0]

        def backprop_with_state(delta: Any) -> tuple[Array, State]:
            dy, d_final = delta if isinstance(delta, (tuple, list)) else (delta, None)
            if dy is None and d_final is None:
                raise ValueError(f"{self.describe()}: backprop got neither an output δ nor a final-state δ")
            return backprop_all(dy, d_final)

        return (y, final_state), backprop_with_state

    def _scan(self, projection: Array, w_hh: Parameter, b_hh: Parameter, starts: list[Array], reverse: bool, xp: Any):
        """Run the cell over time. projection: (T, N, G·H) = x_t W_ih + b_ih for every step.

        Returns (outputs (T, N, H) in time order, final (h, [c]), backward) where
        ``backward(d_outputs or None, d_h_final or None, d_c_final or None)`` adds the gradients
        of ``w_hh`` and ``b_hh`` and returns (d_projection (T, N, G·H), [d_h0, (d_c0)]).
        """
        raise NotImplementedError

    def extra_repr(self) -> str:
        parts = [f"{self.input_size}, {self.hidden_size}"]
        if self.num_layers != 1:
            parts.append(f"num_layers={self.num_layers}")
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


# The time loops below are written for few array operations per step (each costs a few µs of
# dispatch, which dominates for small hidden sizes): per-step results go into Python lists and
# are stacked once, and whatever the backward loop needs that does not depend on the δ is
# computed for all steps at once before it.


class RNN(_Recurrent):
    """Elman RNN with tanh: ``h_t = tanh(x_t W_ih + b_ih + h_{t−1} W_hh + b_hh)``.

    Shapes (batch_first): x (N, T, F) -> y (N, T, D·H), or (N, D·H) with
    ``return_sequences=False``; state h (L·D, N, H). See the module docstring for states.

    BPTT: with ``δh_t = dy_t + δh_{t+1}`` flowing back, ``dz_t = δh_t ⊙ (1 − h_t²)``,
    ``δh_{t−1} ← dz_t W_hhᵀ``; ``dW_hh = Σ_t h_{t−1}ᵀ dz_t``, ``db_hh = db_ih = Σ_t dz_t``,
    ``dW_ih = Σ_t x_tᵀ dz_t``, ``dx_t = dz_t W_ihᵀ``.
    """

    gates = 1

    def _scan(self, projection, w_hh, b_hh, starts, reverse, xp):
        T, N, H = projection.shape
        W = w_hh.value
        projection += b_hh.value  # b_hh acts exactly like b_ih here
        h0 = h = starts[0]
        hs: list[Any] = [None] * T
        for t in _steps(T, reverse):
            z = h @ W
            z += projection[t, ...]
            h = hs[t] = xp.tanh(z)
        outputs = xp.stack(hs, axis=0)

        def backward(d_outputs, d_h_last, d_c_last):
            slope = 1.0 - outputs * outputs  # tanh' at every step
            d_z = xp.empty_like(outputs)
            d_h = d_h_last if d_h_last is not None else xp.zeros((N, H), dtype=outputs.dtype, device=outputs.device)
            for t in _steps(T, not reverse):
                if d_outputs is not None:
                    d_h = d_h + d_outputs[t, ...]
                d_z[t, ...] = d_h * slope[t, ...]
                d_h = d_z[t, ...] @ W.T
            d_flat = xp.reshape(d_z, (T * N, H))
            w_hh.accumulate(xp.reshape(_previous(xp, outputs, h0, reverse), (T * N, H)).T @ d_flat)
            b_hh.accumulate(xp.sum(d_flat, axis=0))
            return d_z, [d_h]

        return outputs, (h,), backward


class LSTM(_Recurrent):
    """Long short-term memory (Hochreiter & Schmidhuber 1997), PyTorch's gate order i, f, g, o.

    ``z_t = x_t W_ih + b_ih + h_{t−1} W_hh + b_hh`` split into four blocks of H;
    ``i, f, o = σ(z_i), σ(z_f), σ(z_o)``, ``g = tanh(z_g)``;
    ``c_t = f ⊙ c_{t−1} + i ⊙ g``, ``h_t = o ⊙ tanh(c_t)``.
    All four gates are one tanh: σ(z) = ½(1 + tanh(z/2)).

    Shapes (batch_first): x (N, T, F) -> y (N, T, D·H), or (N, D·H) with
    ``return_sequences=False``; state (h, c), each (L·D, N, H). ``forget_bias`` is added to the
    forget gate's bias at initialisation (0 as in PyTorch; 1 keeps early gradients from vanishing).

    BPTT, with δh_t = dy_t + δh_{t+1} and δc_t carried back:
    ``δc_t ← δc_t + δh_t ⊙ o ⊙ (1 − tanh²c_t)``; ``δi = δc_t ⊙ g``, ``δf = δc_t ⊙ c_{t−1}``,
    ``δg = δc_t ⊙ i``, ``δo = δh_t ⊙ tanh c_t``; ``dz = δgate ⊙ gate'`` (σ' = σ(1 − σ),
    tanh' = 1 − g²); then ``δc_{t−1} = δc_t ⊙ f`` and ``δh_{t−1} = dz W_hhᵀ``. Weight gradients as
    for :class:`RNN`.
    """

    gates = 4
    has_cell_state = True

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, *, forget_bias: float = 0.0, **options: Any):
        super().__init__(input_size, hidden_size, num_layers, **options)
        self.forget_bias = float(forget_bias)
        if self.forget_bias:  # added to b_ih's f block (Gers et al. 2000; Jozefowicz et al. 2015 use 1)
            for row in self._cells:
                for _, _, b_ih, _ in row:
                    b_ih.value[hidden_size:2 * hidden_size] += self.forget_bias

    def _scan(self, projection, w_hh, b_hh, starts, reverse, xp):
        T, N, G = projection.shape
        H = G // 4
        dtype, dev = projection.dtype, projection.device
        # One tanh for all gates: u = tanh(half ⊙ z), gate = half ⊙ u + (1 − half), with half = ½
        # on the σ blocks (σ(z) = ½ + ½ tanh(z/2)) and 1 on the g block; ∂gate/∂z = half² (1 − u²).
        # The ½ is folded into the projection and into a scaled copy of W_hh.
        half = xp.full((G,), 0.5, dtype=dtype, device=dev)
        half[2 * H:3 * H] = 1.0
        offset = 1.0 - half
        W = w_hh.value
        W_half = W * half
        projection += b_hh.value
        projection *= half
        h0, c0 = h, c = starts
        gate_list: list[Any] = [None] * T
        cell_list: list[Any] = [None] * T
        tanh_list: list[Any] = [None] * T
        hs: list[Any] = [None] * T
        for t in _steps(T, reverse):
            z = h @ W_half
            z += projection[t, ...]
            a = gate_list[t] = xp.tanh(z) * half + offset
            c = cell_list[t] = a[:, H:2 * H] * c + a[:, :H] * a[:, 2 * H:3 * H]
            tanh_c = tanh_list[t] = xp.tanh(c)
            h = hs[t] = a[:, 3 * H:] * tanh_c
        outputs = xp.stack(hs, axis=0)

        def backward(d_outputs, d_h_last, d_c_last):
            gates, cells, tanh_cells = (xp.stack(items, axis=0) for items in (gate_list, cell_list, tanh_list))
            # Everything the loop needs that does not depend on δ, for all steps at once.
            u = (gates - offset) / half
            derivative = (1.0 - u * u) * (half * half)  # ∂gate/∂z
            i, f, g, o = (gates[..., k * H:(k + 1) * H] for k in range(4))
            d_from_c = xp.reshape(xp.concat([g, _previous(xp, cells, c0, reverse), i], axis=-1) * derivative[..., :3 * H],
                                  (T, N, 3, H))  # δz_{i,f,g} = δc ⊙ (g, c_{t−1}, i) ⊙ gate'
            d_from_h = tanh_cells * derivative[..., 3 * H:]  # δz_o = δh ⊙ tanh c ⊙ σ'
            c_from_h = o * (1.0 - tanh_cells * tanh_cells)  # δc += δh ⊙ o ⊙ tanh'(c)
            d_z = xp.empty((T, N, G), dtype=dtype, device=dev)
            d_z_blocks = xp.reshape(d_z, (T, N, 4, H))  # a view: the gate blocks as an axis
            d_h = d_h_last if d_h_last is not None else xp.zeros((N, H), dtype=dtype, device=dev)
            d_c = d_c_last if d_c_last is not None else xp.zeros((N, H), dtype=dtype, device=dev)
            for t in _steps(T, not reverse):
                if d_outputs is not None:
                    d_h = d_h + d_outputs[t, ...]
                d_c = d_c + d_h * c_from_h[t, ...]
                d_z_blocks[t, :, :3, :] = d_c[:, None, :] * d_from_c[t, ...]
                d_z_blocks[t, :, 3, :] = d_h * d_from_h[t, ...]
                d_c = d_c * f[t, ...]
                d_h = d_z[t, ...] @ W.T
            d_flat = xp.reshape(d_z, (T * N, G))
            w_hh.accumulate(xp.reshape(_previous(xp, outputs, h0, reverse), (T * N, H)).T @ d_flat)
            b_hh.accumulate(xp.sum(d_flat, axis=0))
            return d_z, [d_h, d_c]

        return outputs, (h, c), backward


class GRU(_Recurrent):
    """Gated recurrent unit (Cho et al. 2014) in PyTorch's form, gate order r, z, n.

    With ``p_t = x_t W_ih + b_ih`` and ``q_t = h_{t−1} W_hh + b_hh``, each split into r, z, n:
    ``r = σ(p_r + q_r)``, ``z = σ(p_z + q_z)``, ``n = tanh(p_n + r ⊙ q_n)``,
    ``h_t = (1 − z) ⊙ n + z ⊙ h_{t−1}``.

    Shapes (batch_first): x (N, T, F) -> y (N, T, D·H), or (N, D·H) with
    ``return_sequences=False``; state h (L·D, N, H).

    BPTT, with δh_t = dy_t + δh_{t+1}: ``δn = δh_t ⊙ (1 − z) ⊙ (1 − n²)``,
    ``δz = δh_t ⊙ (h_{t−1} − n) ⊙ z(1 − z)``, ``δr = δn ⊙ q_n ⊙ r(1 − r)``;
    ``dp = [δr, δz, δn]``, ``dq = [δr, δz, δn ⊙ r]``;
    ``δh_{t−1} = δh_t ⊙ z + dq W_hhᵀ``; ``dW_hh = Σ_t h_{t−1}ᵀ dq_t``, ``db_hh = Σ_t dq_t``,
    ``dW_ih = Σ_t x_tᵀ dp_t``.
    """

    gates = 3

    def _scan(self, projection, w_hh, b_hh, starts, reverse, xp):
        T, N, G = projection.shape
        H = G // 3
        dtype, dev = projection.dtype, projection.device
        # σ(z) = ½ + ½ tanh(z/2): the ½ of the r and z blocks is folded into W_hh, b_hh and P.
        half = xp.full((G,), 0.5, dtype=dtype, device=dev)
        half[2 * H:] = 1.0
        W = w_hh.value
        W_half, bias_half = W * half, b_hh.value * half
        projection *= half
        h0 = h = starts[0]
        rz_list: list[Any] = [None] * T
        qn_list: list[Any] = [None] * T
        n_list: list[Any] = [None] * T
        hs: list[Any] = [None] * T
        for t in _steps(T, reverse):
            q = h @ W_half
            q += bias_half
            p = projection[t, ...]
            rz = rz_list[t] = 0.5 * xp.tanh(p[:, :2 * H] + q[:, :2 * H]) + 0.5
            q_n = qn_list[t] = q[:, 2 * H:]
            n = n_list[t] = xp.tanh(p[:, 2 * H:] + rz[:, :H] * q_n)
            h = hs[t] = n + rz[:, H:] * (h - n)
        outputs = xp.stack(hs, axis=0)

        def backward(d_outputs, d_h_last, d_c_last):
            reset_update, hidden_n, candidates = (xp.stack(items, axis=0) for items in (rz_list, qn_list, n_list))
            r, z = reset_update[..., :H], reset_update[..., H:]
            slope_rz = reset_update * (1.0 - reset_update)  # σ'
            n_from_h = (1.0 - z) * (1.0 - candidates * candidates)  # δn = δh ⊙ (1 − z) ⊙ tanh'
            r_from_n = hidden_n * slope_rz[..., :H]  # δr = δn ⊙ q_n ⊙ σ'
            z_from_h = (_previous(xp, outputs, h0, reverse) - candidates) * slope_rz[..., H:]
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
                d_h = d_h * z[t, ...] + d_q[t, ...] @ W.T
            d_flat = xp.reshape(d_q, (T * N, G))
            w_hh.accumulate(xp.reshape(_previous(xp, outputs, h0, reverse), (T * N, H)).T @ d_flat)
            b_hh.accumulate(xp.sum(d_flat, axis=0))
            d_projection = xp.concat([d_q[..., :2 * H], d_p_n], axis=-1)
            return d_projection, [d_h]

        return outputs, (h,), backward
