"""SGD, Adam, AdamW, RMSprop and Adagrad. Each update rule is written out in its docstring.

g is the gradient after coupled weight decay (``g = ∇θ + λθ``) except for AdamW, whose decay
is decoupled (``θ ← θ − η λ θ``). All updates are in place and keep the parameter's dtype.
"""

from __future__ import annotations

import math
from typing import Any

from .base import Optimizer, check_hyper


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum.

    ``b ← μ b + (1 − τ) g`` (``b = g`` on the first step); ``θ ← θ − η (g + μ b)`` with Nesterov,
    else ``θ ← θ − η b``; without momentum ``θ ← θ − η g``.
    """

    def __init__(self, params, lr: Any = 0.01, momentum: float = 0.0, dampening: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0, **clip: Any):
        super().__init__(params, lr, weight_decay, **clip)
        self.momentum = check_hyper("SGD", "momentum", momentum, 0.0, 1.0)
        self.dampening = check_hyper("SGD", "dampening", dampening, 0.0, 1.0, high_inclusive=True)
        if nesterov and (self.momentum == 0 or self.dampening != 0):
            raise ValueError("SGD: nesterov needs momentum > 0 and dampening = 0")
        self.nesterov = bool(nesterov)

    def _update(self, p, grad, lr, xp):
        g = self._decayed(p, grad)
        if self.momentum:
            buffer = p.state.get("momentum_buffer")
            if buffer is None:
                buffer = p.state["momentum_buffer"] = xp.asarray(g, copy=True)
            else:
                buffer *= self.momentum
                buffer += (1.0 - self.dampening) * g if self.dampening else g
            g = g + self.momentum * buffer if self.nesterov else buffer
        p.value -= lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015).

    ``m ← β₁ m + (1 − β₁) g``;  ``v ← β₂ v + (1 − β₂) g²``;
    ``θ ← θ − η m̂ / (√v̂ + ε)`` with ``m̂ = m / (1 − β₁ᵗ)``, ``v̂ = v / (1 − β₂ᵗ)``.
    ``amsgrad=True`` uses the running maximum of v̂ instead.
    """

    decoupled = False

    def __init__(self, params, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, **clip: Any):
        super().__init__(params, lr, weight_decay, **clip)
        name = type(self).__name__
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"{name}: betas must be a pair (beta1, beta2), got {betas!r}")
        self.beta1 = check_hyper(name, "betas[0]", betas[0], 0.0, 1.0)
        self.beta2 = check_hyper(name, "betas[1]", betas[1], 0.0, 1.0)
        self.eps = check_hyper(name, "eps", eps, 0.0, low_inclusive=False)
        self.amsgrad = bool(amsgrad)

    def _update(self, p, grad, lr, xp):
        if self.decoupled:
            g = grad
            if self.weight_decay:
                p.value *= 1.0 - lr * self.weight_decay
        else:
            g = self._decayed(p, grad)
        m = self._slot(p, "exp_avg", xp)
        v = self._slot(p, "exp_avg_sq", xp)
        m *= self.beta1
        m += (1.0 - self.beta1) * g
        v *= self.beta2
        v += (1.0 - self.beta2) * (g * g)
        t = self.step_count
        bias1 = 1.0 - self.beta1**t
        bias2 = 1.0 - self.beta2**t
        if self.amsgrad:
            v_max = self._slot(p, "max_exp_avg_sq", xp)
            p.state["max_exp_avg_sq"] = v_max = xp.maximum(v_max, v)
            v = v_max
        denominator = xp.sqrt(v) * (1.0 / math.sqrt(bias2))
        denominator += self.eps
        p.value -= (lr / bias1) * m / denominator


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019): ``θ ← θ(1 − η λ)`` then Adam."""

    decoupled = True

    def __init__(self, params, lr: Any = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01, amsgrad: bool = False, **clip: Any):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, **clip)


class RMSprop(Optimizer):
    """RMSprop (Hinton 2012).

    ``s ← α s + (1 − α) g²``; centered: ``a ← α a + (1 − α) g`` and ``s̃ = s − a²``, else ``s̃ = s``;
    ``u = g / (√s̃ + ε)``; with momentum μ: ``b ← μ b + u``, ``θ ← θ − η b``; else ``θ ← θ − η u``.
    """

    def __init__(self, params, lr: Any = 1e-2, alpha: float = 0.99, eps: float = 1e-8, momentum: float = 0.0,
                 centered: bool = False, weight_decay: float = 0.0, **clip: Any):
        super().__init__(params, lr, weight_decay, **clip)
        self.alpha = check_hyper("RMSprop", "alpha", alpha, 0.0, 1.0)
        self.eps = check_hyper("RMSprop", "eps", eps, 0.0, low_inclusive=False)
        self.momentum = check_hyper("RMSprop", "momentum", momentum, 0.0, 1.0)
        self.centered = bool(centered)

    def _update(self, p, grad, lr, xp):
        g = self._decayed(p, grad)
        square_avg = self._slot(p, "square_avg", xp)
        square_avg *= self.alpha
        square_avg += (1.0 - self.alpha) * (g * g)
        if self.centered:
            grad_avg = self._slot(p, "grad_avg", xp)
            grad_avg *= self.alpha
            grad_avg += (1.0 - self.alpha) * g
            denominator = xp.sqrt(square_avg - grad_avg * grad_avg)
        else:
            denominator = xp.sqrt(square_avg)
        denominator += self.eps
        if self.momentum:
            buffer = self._slot(p, "momentum_buffer", xp)
            buffer *= self.momentum
            buffer += g / denominator
            p.value -= lr * buffer
        else:
            p.value -= lr * (g / denominator)


class Adagrad(Optimizer):
    """Adagrad (Duchi et al. 2011): ``s ← s + g²``; ``θ ← θ − η_t g / (√s + ε)``,
    ``η_t = η / (1 + (t − 1) · lr_decay)``."""

    def __init__(self, params, lr: Any = 1e-2, lr_decay: float = 0.0, eps: float = 1e-10,
                 initial_accumulator_value: float = 0.0, weight_decay: float = 0.0, **clip: Any):
        super().__init__(params, lr, weight_decay, **clip)
        self.lr_decay = check_hyper("Adagrad", "lr_decay", lr_decay, 0.0)
        self.eps = check_hyper("Adagrad", "eps", eps, 0.0, low_inclusive=False)
        self.initial_accumulator_value = check_hyper(
            "Adagrad", "initial_accumulator_value", initial_accumulator_value, 0.0)

    def _update(self, p, grad, lr, xp):
        g = self._decayed(p, grad)
        total = self._slot(p, "sum", xp, fill=self.initial_accumulator_value)
        total += g * g
        step_lr = lr / (1.0 + (self.step_count - 1) * self.lr_decay)
        denominator = xp.sqrt(total)
        denominator += self.eps
        p.value -= step_lr * (g / denominator)
