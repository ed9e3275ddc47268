"""The optimizer interface: parameter groups, per-parameter step counts, flat multi-tensor updates.

    optimizer = Adam(model, lr=1e-3, weight_decay=1e-4, clip_norm=1.0)
    ...backprop...
    optimizer.step()        # clip (if asked), then update every parameter that has a gradient
    optimizer.zero_grad()

``params`` is a Layer, an iterable of Parameters, or a list of *parameter groups* in PyTorch's
form, each a dict with ``"params"`` and any hyper-parameters of the optimizer that differ for
that group (the others come from the constructor's arguments)::

    AdamW([{"params": weights}, {"params": biases_and_norms, "weight_decay": 0.0}], lr=1e-3)

(:func:`weight_decay_groups` builds that split for a model.) The groups, with every
hyper-parameter resolved, are ``optimizer.param_groups``; change a group's values there.

``lr`` (for the optimizer or a group) is a float or a schedule: any callable
``schedule(step) -> float`` (see :mod:`gradflow.optim.schedules`), called with the optimizer's
step counter ``step_count``. Setting ``optimizer.lr`` sets that constant lr for every group.

**Step counts are per parameter**, as in ``torch.optim``: a parameter whose gradient is
``None`` at a step is skipped and its count does not advance, so Adam's bias correction and
Adagrad's ``lr_decay`` use the number of updates *that parameter* has had
(``param_steps[i]``). ``step_count`` counts calls of :meth:`step` that updated anything (it
drives schedules).

**Multi-tensor updates.** At its first step the optimizer packs the parameters of each group,
device and dtype into a :class:`~gradflow.optim.flat.FlatBuffer`: values, gradients and slots
become views of flat arrays, so a step is a fixed number of array operations per group
(independent of how many parameter arrays the model has; gradient clipping too). When some
parameter of a group has no gradient, or the counts differ, that group is updated segment by
segment instead (the same update rule on the views), which is exact for each parameter.
State slots live in ``parameter.state`` (as views), so ``model.to(device)`` moves them with the
weights; the buffers are rebuilt when the arrays are replaced.

Every update is in place and calls ``p.mark_modified()``, so a backprop whose forward ran
before the step can tell that its weights changed.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable
from typing import Any

from .. import backend
from ..backend import Array
from ..core import Layer, Parameter, _device_name as _where
from ..validation import CheckedArguments
from .clip import clip_arrays_by_norm, clip_arrays_by_value, norm_of_arrays
from .flat import FlatBuffer, bucket_key, device_context

LearningRate = "float | Callable[[int], float]"


def check_hyper(owner: str, name: str, value: float, low: float, high: float | None = None,
                low_inclusive: bool = True, high_inclusive: bool = False) -> float:
    """Validate one finite hyper-parameter against [low, high) (bounds configurable); returns it as float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{owner}: {name} must be a number, got {type(value).__name__}")
    value = float(value)
    ok_low = value >= low if low_inclusive else value > low
    ok_high = True if high is None else (value <= high if high_inclusive else value < high)
    if not (ok_low and ok_high) or not math.isfinite(value):
        left = "[" if low_inclusive else "("
        right = "]" if high_inclusive else ")"
        upper = "inf" if high is None else f"{high:g}"
        raise ValueError(f"{owner}: {name} must be in {left}{low:g}, {upper}{right}, got {value}")
    return value


def check_betas(owner: str, betas: Any) -> tuple[float, float]:
    """A pair (β₁, β₂), each in [0, 1)."""
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise TypeError(f"{owner}: betas must be a pair (beta1, beta2), got {betas!r}")
    return (check_hyper(owner, "betas[0]", betas[0], 0.0, 1.0), check_hyper(owner, "betas[1]", betas[1], 0.0, 1.0))


def check_flag(owner: str, name: str, value: Any) -> bool:
    """``value`` when it is a bool, else a TypeError naming ``owner`` and ``name``."""
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")
    return value


class Optimizer(CheckedArguments):
    """Base class of every optimizer.

    params: a Layer, an iterable of Parameters, or a list of parameter groups (dicts with
    ``"params"`` and per-group hyper-parameters). lr: a float > 0 or a schedule
    ``step -> lr``. weight_decay: λ ≥ 0 (how it applies is the subclass's rule). clip_norm:
    when given, gradients are scaled so that their global ``norm_type``-norm is at most this
    before each update. clip_value: when given, every gradient entry is clamped to
    ``[−clip_value, clip_value]`` first. maximize: ascend the objective (the gradient's sign
    is flipped before anything else). norm_type: the norm ``clip_norm`` uses (2, 1, any
    p > 0, or ``math.inf``). flat: ``True`` updates each group's flat buffer in one go (a fixed
    number of array operations per step, however many parameter arrays). ``False`` updates
    parameter by parameter (the same rule on the same views), which saves the one ``concat``
    that packs fresh gradients: on a CPU, where calls are cheap and bytes are not, that copy is
    one extra pass over the gradients (about 0.2 ms per step for a 784-512-512-10 MLP in
    float32). ``None`` (the default) chooses per device and dtype: flat on a GPU, and on the
    host while the parameter arrays are small (fewer than
    :data:`~gradflow.optim.flat.HOST_FLAT_MAX_MEAN_SIZE` elements on average).

    Subclasses set ``slot_names`` (every state slot they may keep) and implement
    ``_validated(hyper)`` (check and return one group's hyper-parameters), ``_slots(group)``
    (the slots a group needs, with their initial values) and
    ``_update(group, value, grad, state, step, lr)``, which updates ``value`` in place from
    ``grad`` and the ``state`` arrays; ``step`` is the parameter's step count including this
    step (1 at the first). The same ``_update`` runs on flat buffers and on single segments.
    """

    #: Every slot name this optimizer may keep in ``parameter.state`` (load_state_dict checks them).
    slot_names: tuple[str, ...] = ()

    def __init__(
        self,
        params: "Layer | Iterable[Parameter] | Iterable[dict[str, Any]]",
        lr: Any,
        weight_decay: float = 0.0,
        clip_norm: float | None = None,
        clip_value: float | None = None,
        maximize: bool = False,
        norm_type: float = 2.0,
        flat: bool | None = None,
        **hyper: Any,
    ):
        name = type(self).__name__
        groups = _parse_groups(name, params)
        self.params: list[Parameter] = [p for group, _ in groups for p in group]
        if not self.params:
            raise ValueError(f"{name}: got no parameters to optimize")
        seen: dict[int, int] = {}
        for i, p in enumerate(self.params):
            if not isinstance(p, Parameter):
                raise TypeError(f"{name}: expected Parameters (or a Layer), got {type(p).__name__}")
            if id(p) in seen:
                raise ValueError(
                    f"{name}: parameter {i} ({p!r}) is the same Parameter as parameter {seen[id(p)]}; "
                    "list each parameter once (it would be updated twice per step)"
                )
            seen[id(p)] = i
        self.defaults = self._validated({"lr": lr, "weight_decay": weight_decay, "maximize": maximize, **hyper})
        self.clip_norm = None if clip_norm is None else check_hyper(name, "clip_norm", clip_norm, 0.0, low_inclusive=False)
        self.clip_value = None if clip_value is None else check_hyper(name, "clip_value", clip_value, 0.0, low_inclusive=False)
        self.norm_type = _check_norm_type(name, norm_type)
        if flat is not None and not isinstance(flat, bool):
            raise TypeError(f"{name}: flat must be True, False or None (chosen per device), got {flat!r}")
        self.flat = flat
        self.param_groups: list[dict[str, Any]] = []
        for members, overrides in groups:
            unknown = sorted(set(overrides) - set(self.defaults))
            if unknown:
                raise ValueError(f"{name}: parameter group option(s) {unknown} unknown; a group may set "
                                 f"'params' and {sorted(self.defaults)}")
            resolved = self._validated({**self.defaults, **overrides})
            self.param_groups.append({"params": members, **resolved})
        for key, value in self.defaults.items():  # the defaults, readable as attributes
            if key != "lr":
                setattr(self, key, value)
        if "betas" in self.defaults:
            self.beta1, self.beta2 = self.defaults["betas"]
        self.step_count = 0
        self.param_steps: list[int] = [0] * len(self.params)
        self._index = {id(p): i for i, p in enumerate(self.params)}
        self._buckets: list[tuple[int, list[int], FlatBuffer]] | None = None

    # -- hyper-parameters --------------------------------------------------------------------
    def _validated(self, hyper: dict[str, Any]) -> dict[str, Any]:
        """Check one group's hyper-parameters (the base ones here; subclasses add theirs)."""
        name = type(self).__name__
        lr = hyper["lr"]
        if callable(lr):
            # A schedule may start at 0 (warm-up), never below it.
            check_hyper(name, "lr(0) of the schedule", lr(0), 0.0)
        else:
            lr = check_hyper(name, "lr", lr, 0.0, low_inclusive=False)
        return dict(hyper, lr=lr, weight_decay=check_hyper(name, "weight_decay", hyper["weight_decay"], 0.0),
                    maximize=check_flag(name, "maximize", hyper["maximize"]))

    @property
    def schedule(self) -> Callable[[int], float] | None:
        """The default lr when it is a schedule (fit feeds its ``observe``; checkpoints save its state)."""
        lr = self.defaults["lr"]
        return lr if callable(lr) else None

    @property
    def base_lr(self) -> float:
        """The lr given at construction (a schedule's value at step 0)."""
        lr = self.defaults["lr"]
        return float(lr(0)) if callable(lr) else lr

    @property
    def lr(self) -> float:
        """The learning rate the next step will use (of the first group). Setting it sets a
        constant lr for every group (replacing any schedule)."""
        return self._group_lr(self.param_groups[0])

    @lr.setter
    def lr(self, value: float) -> None:
        value = check_hyper(type(self).__name__, "lr", value, 0.0, low_inclusive=False)
        self.defaults["lr"] = value
        for group in self.param_groups:
            group["lr"] = value

    def _group_lr(self, group: dict[str, Any]) -> float:
        lr = group["lr"]
        return float(lr(self.step_count)) if callable(lr) else lr

    # -- the step ----------------------------------------------------------------------------
    #: Whether a fused kernel may run for the arrays being updated: :meth:`step` sets it once per
    #: bucket (``backend.fused.available`` of the bucket's flat value), so ``_update`` skips the
    #: per-call check where no kernel can run (NumPy, torch, strict); True for direct calls.
    _fused_here: bool = True

    def step(self) -> None:
        """Clip (when configured) and update every parameter that has a gradient, in place."""
        with_grad = [p for p in self.params if p.grad is not None]
        if not with_grad:
            return
        for p in with_grad:  # all checked before any is updated, so a bad one changes nothing
            g, v = p.grad, p.value
            if (type(g) is not type(v) or g.shape != v.shape or (g.dtype is not v.dtype and g.dtype != v.dtype)
                    or getattr(g, "device", None) != getattr(v, "device", None)):
                self._bad_gradient(p)
        param_groups = self.param_groups
        lrs = []
        for group in param_groups:
            lr = group["lr"]
            if callable(lr):
                lr = float(lr(self.step_count))
                if not 0.0 <= lr < math.inf:
                    raise ValueError(
                        f"{type(self).__name__}: the lr schedule gave {lr} at step {self.step_count}; "
                        "it must be finite and >= 0 (nothing was updated)"
                    )
            lrs.append(lr)
        work = self._plan()
        if self.clip_value is not None or self.clip_norm is not None:
            grads = [grad for _, _, _, segments in work for _, grad, _, _, _ in segments]
            if self.clip_value is not None:
                clip_arrays_by_value(grads, self.clip_value)
            if self.clip_norm is not None:
                clip_arrays_by_norm(grads, self.clip_norm, self.norm_type)
        self.step_count += 1
        param_steps = self.param_steps
        update = self._update
        fused_available = backend.fused.available
        for group_index, indices, bucket, segments in work:
            group, lr = param_groups[group_index], lrs[group_index]
            self._fused_here = fused_available(bucket.value)
            if bucket.on_host:  # no device to make current (entering its null context costs ~1 µs)
                for value, grad, state, step, _ in segments:
                    update(group, value, grad, state, step, lr)
            else:
                with bucket.device:
                    for value, grad, state, step, _ in segments:
                        update(group, value, grad, state, step, lr)
            bucket_params = bucket.params
            for _, _, _, _, members in segments:
                for position in members:
                    i = indices[position]
                    if param_steps[i] == 0:
                        bucket.publish(position)
                    param_steps[i] += 1
                    bucket_params[position].mark_modified()
        self._fused_here = True

    def _plan(self) -> list[tuple[int, list[int], FlatBuffer, list[tuple[Array, Array, dict[str, Array], int, Any]]]]:
        """What to update: per bucket, one flat segment (every parameter has a gradient and the
        same step count) or one segment per parameter that has a gradient."""
        buckets = self._current_buckets()
        param_steps, param_groups, choice = self.param_steps, self.param_groups, self.flat
        work = []
        for group_index, indices, bucket in buckets:
            bucket_params = bucket.params
            positions = [position for position, p in enumerate(bucket_params) if p.grad is not None]
            if not positions:
                continue
            steps = [param_steps[i] for i in indices]
            bucket.ensure_slots(self._slots(param_groups[group_index]), steps)
            flat = bucket.flat_pays if choice is None else choice
            count = len(steps)
            if flat and len(positions) == count and steps.count(steps[0]) == count:
                grad = bucket.gather_grads()
                segments = [(bucket.value, grad, bucket.slots, steps[0] + 1, bucket.positions)]
            else:
                segment, singles = bucket.segment, bucket.singles
                segments = []
                for position in positions:
                    value, state = segment(position)
                    segments.append((value, bucket_params[position].grad, state, steps[position] + 1,
                                     singles[position]))
            work.append((group_index, indices, bucket, segments))
        return work

    def _current_buckets(self) -> list[tuple[int, list[int], FlatBuffer]]:
        """The flat buffers, (re)built when missing or when any array they own was replaced."""
        buckets = self._buckets
        if buckets is not None:
            param_steps = self.param_steps
            for _, indices, bucket in buckets:
                if not bucket.is_current(param_steps, indices):
                    break
            else:
                return buckets
        buckets = []
        for group_index, group in enumerate(self.param_groups):
            by_key: dict[tuple[str, str], list[int]] = {}
            for p in group["params"]:
                by_key.setdefault(bucket_key(p), []).append(self._index[id(p)])
            for indices in by_key.values():
                steps = [self.param_steps[i] for i in indices]
                bucket = FlatBuffer([self.params[i] for i in indices], self._slots(group), steps)
                buckets.append((group_index, indices, bucket))
        self._buckets = buckets
        return buckets

    def flat_buffers(self) -> list[FlatBuffer]:
        """The flat buffers (one per parameter group, device and dtype), built now if they do not
        exist yet. Data parallel training all-reduces their gradient arrays in place
        (:meth:`gradflow.distributed.GradientReducer.use_optimizer_buffers`), so the step after it
        finds every gradient already packed."""
        return [bucket for _, _, bucket in self._current_buckets()]

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (``grad = None``)."""
        for p in self.params:
            p.grad = None

    def _bad_gradient(self, p: Parameter) -> None:
        index = next(i for i, q in enumerate(self.params) if q is p)
        g = p.grad
        got = (f"a {type(g).__name__}" if not backend.is_array(g) else
               f"shape {tuple(g.shape)}, dtype {backend.dtype_name(g.dtype)} on {_where(g)}")
        raise ValueError(
            f"{type(self).__name__}.step: the gradient of parameter {index} has {got}; expected the parameter's "
            f"shape {p.shape}, dtype {backend.dtype_name(p.dtype)} on {_where(p.value)} (nothing was updated)"
        )

    def _slots(self, group: dict[str, Any]) -> dict[str, float]:
        """The state slots a group needs, with their initial values."""
        return {}

    def _update(self, group: dict[str, Any], value: Array, grad: Array, state: dict[str, Array], step: int,
                lr: float) -> None:
        raise NotImplementedError

    @staticmethod
    def _direction(group: dict[str, Any], value: Array, grad: Array, lr: float, decoupled: bool = False) -> Array:
        """The gradient the rule uses: ``−∇`` when maximizing, plus ``λθ`` (coupled weight decay);
        with ``decoupled``, ``θ ← θ(1 − ηλ)`` in place instead."""
        g = -grad if group["maximize"] else grad
        decay = group["weight_decay"]
        if decay:
            if decoupled:
                value *= 1.0 - lr * decay
            else:
                g = g + decay * value
        return g

    # -- state -------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """``{"step": int, "param_steps": [int per parameter], "group_lrs": [float, or None for a
        schedule, per group], "slots": {"<param index>.<slot>": array}}`` (the arrays as they are:
        views of the flat buffers; only this optimizer's slot names)."""
        slots = {f"{i}.{name}": array for i, p in enumerate(self.params) for name, array in p.state.items()
                 if name in self.slot_names}  # another optimizer of the same parameters may keep others
        group_lrs = [None if callable(group["lr"]) else group["lr"] for group in self.param_groups]
        return {"step": self.step_count, "param_steps": list(self.param_steps), "group_lrs": group_lrs, "slots": slots}

    def check_state_dict(self, state: Any) -> tuple[int, list[int], list[float | None], list[tuple[Parameter, str, Any]]]:
        """Validate ``state`` for :meth:`load_state_dict` without changing anything; returns the
        parsed (step, per-parameter steps, constant lr per group (None: keep), [(parameter, slot
        name, array)]). Raises ValueError
        (TypeError for wrong types) naming the entry at fault."""
        name = f"{type(self).__name__}.load_state_dict"
        if not isinstance(state, dict):
            raise TypeError(f"{name}: expected a dict with 'step' and 'slots', got {type(state).__name__}")
        unknown = sorted(set(state) - {"step", "param_steps", "group_lrs", "slots"})
        if unknown:
            raise ValueError(f"{name}: unknown key(s) {unknown}; expected 'step', 'param_steps', 'group_lrs' and 'slots'")
        step = state.get("step", 0)
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"{name}: step must be an int >= 0, got {step!r}")
        step = int(step)
        slots = state.get("slots", {})
        if not isinstance(slots, dict):
            raise TypeError(f"{name}: slots must be a dict of arrays, got {type(slots).__name__}")
        parsed = []
        for key, array in slots.items():
            index, _, slot = str(key).partition(".")
            if not index.isdigit() or int(index) >= len(self.params):
                raise ValueError(f"{name}: slot {key!r} names no parameter (the optimizer has {len(self.params)})")
            if slot not in self.slot_names:
                raise ValueError(f"{name}: slot {key!r}: {type(self).__name__} keeps no slot {slot!r}; "
                                 f"its slots are {list(self.slot_names)}")
            if not backend.is_array(array) or not hasattr(array, "shape"):
                raise TypeError(f"{name}: slot {key!r} must be an array, got {type(array).__name__}")
            p = self.params[int(index)]
            if tuple(array.shape) != p.shape:
                raise ValueError(f"{name}: slot {key!r} has shape {tuple(array.shape)}, parameter has {p.shape}")
            if not backend.is_floating(array.dtype):
                raise TypeError(f"{name}: slot {key!r} has dtype {backend.dtype_name(array.dtype)}; expected floating-point")
            parsed.append((p, slot, array))
        param_steps = state.get("param_steps")
        if param_steps is None:  # a state from before per-parameter counts: those with slots moved
            with_slots = {id(p) for p, _, _ in parsed}
            param_steps = [step if id(p) in with_slots else 0 for p in self.params]
        else:
            if not isinstance(param_steps, (list, tuple)) or len(param_steps) != len(self.params):
                raise ValueError(f"{name}: param_steps must be a list of {len(self.params)} ints, got {param_steps!r}")
            for i, count in enumerate(param_steps):
                if isinstance(count, bool) or not isinstance(count, numbers.Integral) or not 0 <= count <= step:
                    raise ValueError(f"{name}: param_steps[{i}] must be an int in [0, step={step}], got {count!r}")
            param_steps = [int(count) for count in param_steps]
        group_lrs = state.get("group_lrs")
        if group_lrs is None:
            group_lrs = [None] * len(self.param_groups)
        elif not isinstance(group_lrs, (list, tuple)) or len(group_lrs) != len(self.param_groups):
            raise ValueError(f"{name}: group_lrs must be a list of {len(self.param_groups)} lrs (one per group), "
                             f"got {group_lrs!r}")
        else:
            group_lrs = [None if lr is None else check_hyper(name, f"group_lrs[{i}]", lr, 0.0, low_inclusive=False)
                         for i, lr in enumerate(group_lrs)]
        return step, param_steps, group_lrs, parsed

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore slots, step counts and the groups' constant lrs; checks everything (types,
        step counts, slot names, parameter indices, shapes, lrs) before changing anything."""
        step, param_steps, group_lrs, parsed = self.check_state_dict(state)
        copies = []
        for p, slot, array in parsed:  # copies made before anything is replaced
            with device_context(p.value):
                sent = p.device.send(array, p.value.dtype)
                copies.append((p, slot, sent if sent is not array else backend.namespace(sent).asarray(sent, copy=True)))
        for p in self.params:
            p.state.clear()
        for p, slot, array in copies:
            p.state[slot] = array
        self.step_count = step
        self.param_steps = param_steps
        for group, lr in zip(self.param_groups, group_lrs):
            if lr is not None and not callable(group["lr"]):  # a schedule stays a schedule
                group["lr"] = lr
        self._buckets = None

    def to(self, device: Any) -> "Optimizer":
        """Move every slot to ``device`` (``model.to`` already does this for its parameters)."""
        target = backend.device(device)
        for p in self.params:
            for name, array in list(p.state.items()):
                p.state[name] = target.send(array)
        return self

    def __repr__(self) -> str:
        groups = f", groups={len(self.param_groups)}" if len(self.param_groups) > 1 else ""
        return f"{type(self).__name__}(lr={self.lr:g}, params={len(self.params)}{groups})"


def _parse_groups(owner: str, params: Any) -> list[tuple[list[Parameter], dict[str, Any]]]:
    """[(parameters, overrides)] from a Layer, an iterable of Parameters, or a list of group dicts."""
    if isinstance(params, Layer):
        return [(params.parameters(), {})]
    if isinstance(params, Parameter):
        raise TypeError(f"{owner}: params must be a Layer, an iterable of Parameters or a list of groups; "
                        "wrap a single Parameter in a list")
    items = list(params)
    if not any(isinstance(item, dict) for item in items):
        return [(items, {})]
    groups = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise TypeError(f"{owner}: parameter group {i} must be a dict with 'params', got {type(item).__name__}")
        if "params" not in item:
            raise ValueError(f"{owner}: parameter group {i} has no 'params'")
        members = item["params"]
        members = members.parameters() if isinstance(members, Layer) else (
            [members] if isinstance(members, Parameter) else list(members))
        if not members:
            raise ValueError(f"{owner}: parameter group {i} has no parameters")
        groups.append((members, {k: v for k, v in item.items() if k != "params"}))
    return groups


def _check_norm_type(owner: str, norm_type: Any) -> float:
    if isinstance(norm_type, bool) or not isinstance(norm_type, (int, float)) or not norm_type > 0:
        raise ValueError(f"{owner}: norm_type must be a number > 0 or math.inf, got {norm_type!r}")
    return float(norm_type)


def weight_decay_groups(model: Layer, weight_decay: float,
                        exclude: Callable[[str, Parameter], bool] | None = None) -> list[dict[str, Any]]:
    """Parameter groups that decay weights but not biases and norm scales (the usual recipe).

    model: the Layer. weight_decay: λ for the decayed group. exclude: ``(name, parameter) ->
    bool``, True for parameters that get ``weight_decay=0``; by default every parameter with at
    most one axis (biases, LayerNorm/BatchNorm scales and shifts). Returns
    ``[{"params": decayed, "weight_decay": λ}, {"params": others, "weight_decay": 0.0}]``
    (empty groups left out), for any optimizer's ``params``.
    """
    exclude = exclude or (lambda name, p: len(p.shape) <= 1)
    decayed, others = [], []
    for name, p in model.named_parameters():
        (others if exclude(name, p) else decayed).append(p)
    groups = [{"params": decayed, "weight_decay": weight_decay}, {"params": others, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


__all__ = ["Optimizer", "check_hyper", "check_betas", "check_flag", "weight_decay_groups", "norm_of_arrays",
           "device_context"]
