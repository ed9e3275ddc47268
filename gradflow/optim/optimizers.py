"""SGD, Adam, AdamW, RMSprop, Adagrad, NAdam, RAdam, Adamax, Adadelta and Lion.

Each docstring writes out the update rule, as ``torch.optim`` computes it (the tests compare
with ``torch.optim`` in float64, and with NumPy references for Lion, which torch lacks).
Notation: θ the parameter, ∇ its gradient, η the lr, λ the weight decay, t the parameter's own
step count (1 at its first update). ``g`` is the gradient the rule uses: ``g = ∇`` (``−∇`` with
``maximize=True``), plus ``λθ`` for coupled (L2) weight decay; decoupled weight decay
(AdamW, Lion, and NAdam/RAdam with ``decoupled_weight_decay=True``) instead shrinks the weights
first, ``θ ← θ(1 − ηλ)``. Updates are in place and keep the parameter's dtype.

Every optimizer takes, besides its own arguments: ``params`` (a Layer, Parameters, or
parameter groups: see :mod:`gradflow.optim.base`), ``weight_decay`` (λ ≥ 0), ``maximize``
(ascend instead of descend), and ``clip_norm``, ``clip_value``, ``norm_type`` (gradient
clipping before the update; see :class:`gradflow.optim.Optimizer`). Any hyper-parameter below
can differ per parameter group.

On a GPU (CuPy) SGD, Adam/AdamW, RMSprop and Adagrad run their rule as one fused kernel per flat
buffer (:mod:`gradflow.backend.fused`: ``sgd_``, ``adam_``, ``rmsprop_``, ``adagrad_``; 1 launch
instead of 3-17); the code below is the portable rule every other array library runs, and the
reference the kernels are tested against bit for bit (tests/devices/test_fused.py).
"""

from __future__ import annotations

import math
from typing import Any

from .. import backend
from .base import Optimizer, check_betas, check_flag, check_hyper


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    ``b ← g`` at t = 1, else ``b ← μ b + (1 − τ) g``; then ``θ ← θ − η (g + μ b)`` with Nesterov,
    else ``θ ← θ − η b``; without momentum ``θ ← θ − η g``.

    lr: η > 0 or a schedule. momentum: μ in [0, 1). dampening: τ in [0, 1]. nesterov: Nesterov
    momentum (needs μ > 0 and τ = 0). weight_decay: λ ≥ 0 (coupled). Slot: ``momentum_buffer``.
    """

    slot_names = ("momentum_buffer",)

    def __init__(self, params, lr: Any = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, maximize: bool = False, **clip: Any):
        super().__init__(params, lr, weight_decay, maximize=maximize, momentum=momentum, dampening=dampening,
                         nesterov=nesterov, **clip)

    def _validated(self, hyper):
        hyper = super()._validated(hyper)
        hyper["momentum"] = check_hyper("SGD", "momentum", hyper["momentum"], 0.0, 1.0)
        hyper["dampening"] = check_hyper("SGD", "dampening", hyper["dampening"], 0.0, 1.0, high_inclusive=True)
        if hyper["nesterov"] and (hyper["momentum"] == 0 or hyper["dampening"] != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening = 0")
        hyper["nesterov"] = bool(hyper["nesterov"])
        return hyper

    def _slots(self, group):
        return {"momentum_buffer": 0.0} if group["momentum"] else {}

    def _update(self, group, value, grad, state, step, lr):
        momentum = group["momentum"]
        if self._fused_here and backend.fused.sgd_(
                value, grad, state.get("momentum_buffer") if momentum else None, lr=lr, momentum=momentum,
                dampening=group["dampening"], nesterov=group["nesterov"], first=step == 1,
                weight_decay=group["weight_decay"], maximize=group["maximize"]):
            return  # one fused kernel did the rule below (CuPy)
        g = self._direction(group, value, grad, lr) if group["maximize"] or group["weight_decay"] else grad
        if momentum:
            buffer = state["momentum_buffer"]
            if step == 1:
                buffer[...] = g
            else:
                buffer *= momentum
                dampening = group["dampening"]
                buffer += (1.0 - dampening) * g if dampening else g
            g = g + momentum * buffer if group["nesterov"] else buffer
        value -= lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015).

    ``m ← β₁ m + (1 − β₁) g``;  ``v ← β₂ v + (1 − β₂) g²``;
    ``θ ← θ − η m̂ / (√v̂ + ε)`` with ``m̂ = m / (1 − β₁ᵗ)``, ``v̂ = v / (1 − β₂ᵗ)`` (t counted per
    parameter). ``amsgrad=True`` uses ``v̂ = max_{s ≤ t} v_s / (1 − β₂ᵗ)`` instead.

    lr: η > 0 or a schedule. betas: (β₁, β₂), each in [0, 1). eps: ε > 0. weight_decay: λ ≥ 0
    (coupled; see AdamW for decoupled). amsgrad: a flag. Slots: ``exp_avg`` (m), ``exp_avg_sq``
    (v), ``max_exp_avg_sq`` (with amsgrad).
    """

    decoupled = False
    slot_names = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")

    def __init__(self, params, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, maximize: bool = False, **clip: Any):
        super().__init__(params, lr, weight_decay, maximize=maximize, betas=betas, eps=eps, amsgrad=amsgrad, **clip)

    def _validated(self, hyper):
        hyper = super()._validated(hyper)
        name = type(self).__name__
        hyper["betas"] = check_betas(name, hyper["betas"])
        hyper["eps"] = check_hyper(name, "eps", hyper["eps"], 0.0, low_inclusive=False)
        hyper["amsgrad"] = bool(hyper["amsgrad"])
        return hyper

    def _slots(self, group):
        slots = {"exp_avg": 0.0, "exp_avg_sq": 0.0}
        if group["amsgrad"]:
            slots["max_exp_avg_sq"] = 0.0
        return slots

    def _update(self, group, value, grad, state, step, lr):
        beta1, beta2 = group["betas"]
        if self._fused_here and backend.fused.adam_(
                value, grad, state["exp_avg"], state["exp_avg_sq"],
                state.get("max_exp_avg_sq") if group["amsgrad"] else None, lr=lr, beta1=beta1, beta2=beta2,
                eps=group["eps"], step=step, weight_decay=group["weight_decay"], decoupled=self.decoupled,
                maximize=group["maximize"]):
            return  # one fused kernel did the rule below (CuPy)
        xp = backend.namespace(value)
        g = self._direction(group, value, grad, lr, decoupled=self.decoupled)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        bias1 = 1.0 - beta1**step
        bias2 = 1.0 - beta2**step
        if group["amsgrad"]:
            v_max = state["max_exp_avg_sq"]
            v_max[...] = xp.maximum(v_max, v)
            v = v_max
        denominator = xp.sqrt(v) * (1.0 / math.sqrt(bias2))
        denominator += group["eps"]
        value -= (lr / bias1) * m / denominator


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): ``θ ← θ(1 − ηλ)``, then the
    Adam update with ``g = ∇`` (``−∇`` when maximizing). Arguments as :class:`Adam`; weight_decay
    defaults to 0.01."""

    decoupled = True

    def __init__(self, params, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, amsgrad: bool = False, maximize: bool = False, **clip: Any):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, maximize, **clip)


class RMSprop(Optimizer):
    """RMSprop (Hinton 2012).

    ``s ← α s + (1 − α) g²``; centered: ``a ← α a + (1 − α) g`` and ``s̃ = s − a²``, else ``s̃ = s``;
    ``u = g / (√s̃ + ε)``; with momentum μ: ``b ← μ b + u``, ``θ ← θ − η b``; else ``θ ← θ − η u``.

    lr: η > 0 or a schedule. alpha: α in [0, 1). eps: ε > 0. momentum: μ in [0, 1). centered:
    a flag. weight_decay: λ ≥ 0 (coupled). Slots: ``square_avg``, ``grad_avg`` (centered),
    ``momentum_buffer`` (μ > 0).
    """

    slot_names = ("square_avg", "grad_avg", "momentum_buffer")

    def __init__(self, params, lr: Any = 1e-2, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 centered: bool = False, weight_decay: float = 0.0, maximize: bool = False, **clip: Any):
        super().__init__(params, lr, weight_decay, maximize=maximize, alpha=alpha, eps=eps, momentum=momentum,
                         centered=centered, **clip)

    def _validated(self, hyper):
        hyper = super()._validated(hyper)
        hyper["alpha"] = check_hyper("RMSprop", "alpha", hyper["alpha"], 0.0, 1.0)
        hyper["eps"] = check_hyper("RMSprop", "eps", hyper["eps"], 0.0, low_inclusive=False)
        hyper["momentum"] = check_hyper("RMSprop", "momentum", hyper["momentum"], 0.0, 1.0)
        hyper["centered"] = bool(hyper["centered"])
        return hyper

    def _slots(self, group):
        slots = {"square_avg": 0.0}
        if group["centered"]:
            slots["grad_avg"] = 0.0
        if group["momentum"]:
            slots["momentum_buffer"] = 0.0
        return slots

    def _update(self, group, value, grad, state, step, lr):
        alpha = group["alpha"]
        if self._fused_here and backend.fused.rmsprop_(
                value, grad, state["square_avg"], state.get("grad_avg") if group["centered"] else None,
                state.get("momentum_buffer") if group["momentum"] else None, lr=lr, alpha=alpha, eps=group["eps"],
                momentum=group["momentum"], weight_decay=group["weight_decay"], maximize=group["maximize"]):
            return  # one fused kernel did the rule below (CuPy)
        xp = backend.namespace(value)
        g = self._direction(group, value, grad, lr)
        square_avg = state["square_avg"]
        square_avg *= alpha
        square_avg += (1.0 - alpha) * (g * g)
        if group["centered"]:
            grad_avg = state["grad_avg"]
            grad_avg *= alpha
            grad_avg += (1.0 - alpha) * g
            denominator = xp.sqrt(square_avg - grad_avg * grad_avg)
        else:
            denominator = xp.sqrt(square_avg)
        denominator += group["eps"]
        if group["momentum"]:
            buffer = state["momentum_buffer"]
            buffer *= group["momentum"]
            buffer += g / denominator
            value -= lr * buffer
        else:
            value -= lr * (g / denominator)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011): ``s ← s + g²``; ``θ ← θ − η_t g / (√s + ε)`` with
    ``η_t = η / (1 + (t − 1) · lr_decay)`` (t counted per parameter).

    lr: η > 0 or a schedule. lr_decay: ≥ 0. eps: ε > 0. initial_accumulator_value: s at the
    start, ≥ 0. weight_decay: λ ≥ 0 (coupled). Slot: ``sum`` (s).
    """

    slot_names = ("sum",)

    def __init__(self, params, lr: Any = 1e-2, lr_decay: float = 0.0, eps: float = 1e-10,
                 initial_accumulator_value: float = 0.0, weight_decay: float = 0.0, maximize: bool = False,
                 **clip: Any):
        super().__init__(params, lr, weight_decay, maximize=maximize, lr_decay=lr_decay, eps=eps,
                         initial_accumulator_value=initial_accumulator_value, **clip)

    def _validated(self, hyper):
        hyper = super()._validated(hyper)
        hyper["lr_decay"] = check_hyper("Adagrad", "lr_decay", hyper["lr_decay"], 0.0)
        hyper["eps"] = check_hyper("Adagrad", "eps", hyper["eps"], 0.0, low_inclusive=False)
        hyper["initial_accumulator_value"] = check_hyper(
            "Adagrad", "initial_accumulator_value", hyper["initial_accumulator_value"], 0.0)
        return hyper

    def _slots(self, group):
        return {"sum": group["initial_accumulator_value"]}

    def _update(self, group, value, grad, state, step, lr):
        step_lr = lr / (1.0 + (step - 1) * group["lr_decay"])
        if self._fused_here and backend.fused.adagrad_(value, grad, state["sum"], lr=step_lr, eps=group["eps"],
                                                       weight_decay=group["weight_decay"], maximize=group["maximize"]):
            return  # one fused kernel did the rule below (CuPy)
        xp = backend.namespace(value)
        g = self._direction(group, value, grad, lr)
        total = state["sum"]
        total += g * g
        denominator = xp.sqrt(total)
        denominator += group["eps"]
        value -= step_lr * (g / denominator)


class NAdam(Optimizer):
    """Adam with Nesterov momentum (Dozat 2016), as ``torch.optim.NAdam``.

    ``μ_t = β₁ (1 − ½ · 0.96^(t ψ))`` (ψ the momentum decay), ``Π_t = μ₁ ⋯ μ_t``;
    ``m ← β₁ m + (1 − β₁) g``; ``v ← β₂ v + (1 − β₂) g²``; ``d = √(v / (1 − β₂ᵗ)) + ε``;
    ``θ ← θ − η (1 − μ_t) / (1 − Π_t) · g / d − η μ_{t+1} / (1 − Π_t μ_{t+1}) · m / d``.

    lr: η > 0 or a schedule. betas: (β₁, β₂) in [0, 1). eps: ε > 0. momentum_decay: ψ ≥ 0.
    weight_decay: λ ≥ 0, coupled unless decoupled_weight_decay (then ``θ ← θ(1 − ηλ)`` first).
    Slots: ``exp_avg``, ``exp_avg_sq`` (Π_t follows from t, so it is not stored).
    """

    slot_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: Any = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False,
                 maximize: bool = False, **clip: Any):
        super().__init__(params, lr, weight_decay, maximize=maximize, betas=betas, eps=eps,
                         momentum_decay=momentum_decay, decoupled_weight_decay=decoupled_weight_decay, **clip)
        self._mu_products: dict[tuple[float, float], list[float]] = {}

    def _validated(self, hyper):
        hyper = super()._validated(hyper)
        hyper["betas"] = check_betas("NAdam", hyper["betas"])
        hyper["eps"] = check_hyper("NAdam", "eps", hyper["eps"], 0.0, low_inclusive=False)
        hyper["momentum_decay"] = check_hyper("NAdam", "momentum_decay", hyper["momentum_decay"], 0.0)
        hyper["decoupled_weight_decay"] = check_flag("NAdam", "decoupled_weight_decay", hyper["decoupled_weight_decay"])
        return hyper

    def _slots(self, group):
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def _mu_product(self, beta1: float, decay: float, step: int) -> float:
        """Π_t = μ₁ ⋯ μ_t, multiplied in the same order as torch (cached per (β₁, ψ))."""
        products = self._mu_products.setdefault((beta1, decay), [1.0])
        while len(products) <= step:
            t = len(products)
            products.append(products[-1] * (beta1 * (1.0 - 0.5 * 0.96 ** (t * decay))))
        return products[step]

    def _update(self, group, value, grad, state, step, lr):
        xp = backend.namespace(value)
        g = self._direction(group, value, grad, lr, decoupled=group["decoupled_weight_decay"])
        beta1, beta2 = group["betas"]
        decay = group["momentum_decay"]
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (step * decay))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1) * decay))
        product = self._mu_product(beta1, decay, step)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        denominator = xp.sqrt(v * (1.0 / (1.0 - beta2**step)))
        denominator += group["eps"]
        value -= (lr * (1.0 - mu) / (1.0 - product)) * (g / denominator)
        value -= (lr * mu_next / (1.0 - product * mu_next)) * (m / denominator)


class RAdam(Optimizer):
    """Rectified Adam (Liu et al. 2020), as ``torch.optim.RAdam``.

    ``m ← β₁ m + (1 − β₁) g``; ``v ← β₂ v + (1 − β₂) g²``; ``m̂ = m / (1 − β₁ᵗ)``;
    ``ρ∞ = 2 / (1 − β₂) − 1``, ``ρ_t = ρ∞ − 2 t β₂ᵗ / (1 − β₂ᵗ)``. When ``ρ_t > 5``:
    ``r = √((ρ_t − 4)(ρ_t − 2) ρ∞ / ((ρ∞ − 4)(ρ∞ − 2) ρ_t))`` and
    ``θ ← θ − η r m̂ √(1 − β₂ᵗ) / (√v + ε)``; otherwise ``θ ← θ − η m̂`` (ρ_t is a host number:
    no sync).

    lr: η > 0 or a schedule. betas: (β₁, β₂) in [0, 1). eps: ε > 0. weight_decay: λ ≥ 0,
    coupled unless decoupled_weight_decay. Slots: ``exp_avg``, ``exp_avg_sq``.
    """

    slot_names = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, decoupled_weight_decay: bool = False, maximize: bool = False,
                 **clip: Any):
        super().__init__(params, lr, weight_decay, maximize=maximize, betas=betas, eps=eps,
                         decoupled_weight_decay=decoupled_weight_decay, **clip)

    def _validated(self, hyper):
        hyper = super()._validated(hyper)
        hyper["betas"] = check_betas("RAdam", hyper["betas"])
        hyper["eps"] = check_hyper("RAdam", "eps", hyper["eps"], 0.0, low_inclusive=False)
        hyper["decoupled_weight_decay"] = check_flag("RAdam", "decoupled_weight_decay", hyper["decoupled_weight_decay"])
        return hyper

    def _slots(self, group):
        return {"exp_avg": 0.0, "exp_avg_sq": 0.0}

    def _update(self, group, value, grad, state, step, lr):
        xp = backend.namespace(value)
        g = self._direction(group, value, grad, lr, decoupled=group["decoupled_weight_decay"])
        beta1, beta2 = group["betas"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        bias1 = 1.0 - beta1**step
        bias2 = 1.0 - beta2**step
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        rho = rho_inf - 2.0 * step * beta2**step / bias2
        if rho > 5.0:
            rect = ((rho - 4.0) * (rho - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho)) ** 0.5
            denominator = xp.sqrt(v)
            denominator += group["eps"]
            value -= (lr * rect * bias2**0.5 / bias1) * m / denominator
        else:
            value -= (lr / bias1) * m


class Adamax(Optimizer):
    """Adamax, Adam with the infinity norm (Kingma & Ba 2015), as ``torch.optim.Adamax``.

    ``m ← β₁ m + (1 − β₁) g``; ``u ← max(β₂ u, |g| + ε)``; ``θ ← θ − η / (1 − β₁ᵗ) · m / u``.

    lr: η > 0 or a schedule. betas: (β₁, β₂) in [0, 1). eps: ε > 0. weight_decay: λ ≥ 0
    (coupled). Slots: ``exp_avg`` (m), ``exp_inf`` (u).
    """

    slot_names = ("exp_avg", "exp_inf")

    def __init__(self, params, lr: Any = 2e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, maximize: bool = False, **clip: Any):
        super().__init__(params, lr, weight_decay, maximize=maximize, betas=betas, eps=eps, **clip)

    def _validated(self, hyper):
        hyper = super()._validated(hyper)
        hyper["betas"] = check_betas("Adamax", hyper["betas"])
        hyper["eps"] = check_hyper("Adamax", "eps", hyper["eps"], 0.0, low_inclusive=False)
        return hyper

    def _slots(self, group):
        return {"exp_avg": 0.0, "exp_inf": 0.0}

    def _update(self, group, value, grad, state, step, lr):
        xp = backend.namespace(value)
        g = self._direction(group, value, grad, lr)
        beta1, beta2 = group["betas"]
        m, u = state["exp_avg"], state["exp_inf"]
        m *= beta1
        m += (1.0 - beta1) * g
        u *= beta2
        u[...] = xp.maximum(u, xp.abs(g) + group["eps"])
        value -= (lr / (1.0 - beta1**step)) * (m / u)


class Adadelta(Optimizer):
    """Adadelta (Zeiler 2012), as ``torch.optim.Adadelta``.

    ``s ← ρ s + (1 − ρ) g²``; ``Δ = √(a + ε) / √(s + ε) · g``; ``a ← ρ a + (1 − ρ) Δ²``;
    ``θ ← θ − η Δ``.

    lr: η > 0 or a schedule (1.0 by default, as in the paper). rho: ρ in [0, 1]. eps: ε > 0.
    weight_decay: λ ≥ 0 (coupled). Slots: ``square_avg`` (s), ``acc_delta`` (a).
    """

    slot_names = ("square_avg", "acc_delta")

    def __init__(self, params, lr: Any = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                 maximize: bool = False, **clip: Any):
        super().__init__(params, lr, weight_decay, maximize=maximize, rho=rho, eps=eps, **clip)

    def _validated(self, hyper):
        hyper = super()._validated(hyper)
        hyper["rho"] = check_hyper("Adadelta", "rho", hyper["rho"], 0.0, 1.0, high_inclusive=True)
        hyper["eps"] = check_hyper("Adadelta", "eps", hyper["eps"], 0.0, low_inclusive=False)
        return hyper

    def _slots(self, group):
        return {"square_avg": 0.0, "acc_delta": 0.0}

    def _update(self, group, value, grad, state, step, lr):
        xp = backend.namespace(value)
        g = self._direction(group, value, grad, lr)
        rho, eps = group["rho"], group["eps"]
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        square_avg *= rho
        square_avg += (1.0 - rho) * (g * g)
        delta = xp.sqrt(acc_delta + eps) / xp.sqrt(square_avg + eps) * g
        acc_delta *= rho
        acc_delta += (1.0 - rho) * (delta * delta)
        value -= lr * delta


class Lion(Optimizer):
    """Lion, evolved sign momentum (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms").

    ``θ ← θ(1 − ηλ)`` (decoupled weight decay); ``c = β₁ m + (1 − β₁) g``;
    ``θ ← θ − η sign(c)``; ``m ← β₂ m + (1 − β₂) g``. Use a lr 3-10x smaller than AdamW's and a
    λ 3-10x larger (the paper's advice).

    lr: η > 0 or a schedule (1e-4 by default). betas: (β₁, β₂) in [0, 1). weight_decay: λ ≥ 0
    (decoupled). Slot: ``exp_avg`` (m). ``torch.optim`` has no Lion: the tests compare with a
    NumPy implementation of the paper's Algorithm 2.
    """

    slot_names = ("exp_avg",)

    def __init__(self, params, lr: Any = 1e-4, betas: tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
                 maximize: bool = False, **clip: Any):
        super().__init__(params, lr, weight_decay, maximize=maximize, betas=betas, **clip)

    def _validated(self, hyper):
        hyper = super()._validated(hyper)
        hyper["betas"] = check_betas("Lion", hyper["betas"])
        return hyper

    def _slots(self, group):
        return {"exp_avg": 0.0}

    def _update(self, group, value, grad, state, step, lr):
        xp = backend.namespace(value)
        g = self._direction(group, value, grad, lr, decoupled=True)
        beta1, beta2 = group["betas"]
        m = state["exp_avg"]
        value -= lr * xp.sign(beta1 * m + (1.0 - beta1) * g)
        m *= beta2
        m += (1.0 - beta2) * g


OPTIMIZERS: dict[str, type[Optimizer]] = {
    "sgd": SGD, "adam": Adam, "adamw": AdamW, "rmsprop": RMSprop, "adagrad": Adagrad,
    "nadam": NAdam, "radam": RAdam, "adamax": Adamax, "adadelta": Adadelta, "lion": Lion,
}
"""Every optimizer by its lower-case name: the one list the CLI (``--optimizer``) and the
scikit-learn estimators (``optimizer=``) offer, so a new optimizer joins both by being added here."""


def optimizer_class(name: str, owner: str = "optimizer") -> type[Optimizer]:
    """The optimizer class called ``name`` in :data:`OPTIMIZERS`, or a ValueError naming ``owner``,
    the accepted names and the name given."""
    if not isinstance(name, str) or name not in OPTIMIZERS:
        raise ValueError(f"{owner} must be one of {tuple(OPTIMIZERS)}, got {name!r}")
    return OPTIMIZERS[name]


__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "NAdam", "RAdam", "Adamax", "Adadelta", "Lion",
           "optimizer_class"]
