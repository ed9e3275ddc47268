"""One MLP training step (784-512-512-10, ReLU, softmax cross-entropy, float32), three ways.

    step = build_gradflow_step(256)        # gradflow
    step = build_numpy_step(256)           # hand-written array code, no framework
    step = build_torch_step(256)           # PyTorch eager
    step()                                 # forward + backward + optimizer update

Each builder returns a zero-argument callable doing one full step on a fixed batch, with
``step.parameters()`` (host float64 copies of the weights, for cross-checks) and
``step.synchronize()`` attached. All three start from the same weights and compute the same
maths, so their parameters agree after any number of steps (tests check this).

Optimizers: ``"sgd"`` is SGD with momentum 0.9 (lr 0.01, ``b ← μb + g``, ``θ ← θ − ηb``);
``"adam"`` is Adam (lr 1e-3, β = (0.9, 0.999), ε = 1e-8). Both as PyTorch defines them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

SIZES = (784, 512, 512, 10)
OPTIMIZERS = ("sgd", "adam")
SGD_LR, MOMENTUM = 0.01, 0.9
ADAM_LR, BETA1, BETA2, EPS = 1e-3, 0.9, 0.999, 1e-8

Step = Callable[[], Any]


def initial_weights(sizes: tuple[int, ...] = SIZES, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """Glorot-uniform weights (in, out) and zero biases, float32, identical for every contender."""
    rng = np.random.default_rng(seed)
    layers = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        limit = math.sqrt(6.0 / (fan_in + fan_out))
        weight = rng.uniform(-limit, limit, size=(fan_in, fan_out)).astype(np.float32)
        layers.append((weight, np.zeros(fan_out, dtype=np.float32)))
    return layers


def batch_data(batch: int, sizes: tuple[int, ...] = SIZES, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A fixed host batch: standard-normal float32 inputs and int64 labels."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, sizes[0]), dtype=np.float32)
    labels = rng.integers(0, sizes[-1], size=batch, dtype=np.int64)
    return x, labels


def _check_optimizer(optimizer: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")


# --------------------------------------------------------------------------------------------
# gradflow
# --------------------------------------------------------------------------------------------


def build_gradflow_model(sizes: tuple[int, ...] = SIZES, seed: int = 0, device: Any = "cpu", dtype: str = "float32"):
    import gradflow as gf
    from gradflow import layers as L

    layers: list = []
    for i, (weight, bias) in enumerate(initial_weights(sizes, seed)):
        linear = L.Linear(weight.shape[0], weight.shape[1], rng=0)
        linear.weight.value, linear.bias.value = weight.T.copy(), bias.copy()
        layers += [linear, L.ReLU()] if i < len(sizes) - 2 else [linear]
    return gf.Sequential(*layers).to(device, dtype)


def build_gradflow_step(batch: int, *, optimizer: str = "sgd", device: Any = "cpu", counter: Any = None,
                        sizes: tuple[int, ...] = SIZES) -> Step:
    """gradflow: Sequential of Linear/ReLU, SoftmaxCrossEntropy, gradflow.optim.SGD or Adam.

    ``counter``: a :class:`gradflow.testing.counting.OperationCounter` whose proxies the step
    then runs on (to count operations and check dtypes).
    """
    import gradflow as gf
    from gradflow.losses import SoftmaxCrossEntropy
    from gradflow.optim import SGD, Adam

    _check_optimizer(optimizer)
    dev = gf.device(device)
    model = build_gradflow_model(sizes, device=dev)
    x_host, labels_host = batch_data(batch, sizes)
    x, labels = dev.send(x_host, "float32"), dev.send(labels_host)
    if counter is not None:
        counter.wrap_layer(model)
        x, labels = counter.wrap(x), counter.wrap(labels)
    loss = SoftmaxCrossEntropy()
    if optimizer == "sgd":
        opt = SGD(model, lr=SGD_LR, momentum=MOMENTUM)
    else:
        opt = Adam(model, lr=ADAM_LR, betas=(BETA1, BETA2), eps=EPS)

    def step() -> Any:
        output, backprop = model(x, train=True, input_grad=False)
        value, delta = loss(output, labels)
        opt.zero_grad()
        backprop(delta)
        opt.step()
        return value

    def parameters() -> list[np.ndarray]:
        from gradflow.testing.counting import unwrap

        return [gf.to_numpy(unwrap(p.value)).astype(np.float64) for p in model.parameters()]

    step.parameters = parameters
    step.synchronize = dev.synchronize
    step.model = model
    return step


# --------------------------------------------------------------------------------------------
# Hand-written array code: the same maths with no framework (NumPy, or CuPy on a GPU)
# --------------------------------------------------------------------------------------------


def build_numpy_step(batch: int, *, optimizer: str = "sgd", xp: Any = None, counter: Any = None,
                     sizes: tuple[int, ...] = SIZES) -> Step:
    """What a careful NumPy programmer writes by hand: in-place bias adds and ReLUs, the fused
    softmax cross-entropy δ ``(p − onehot)/N`` via fancy indexing, no δ for the input, and
    in-place optimizer updates. ``xp``: ``numpy`` (default) or ``cupy`` (the same code on a GPU).
    ``counter``: run on an OperationCounter's proxies over NumPy.
    """
    _check_optimizer(optimizer)
    if counter is not None:
        xp = counter.namespace
        send = lambda a: counter.wrap(np.array(a))  # noqa: E731
    else:
        xp = np if xp is None else xp
        send = xp.asarray
    weights = [(send(w), send(b)) for w, b in initial_weights(sizes)]
    params = [a for pair in weights for a in pair]
    x_host, labels_host = batch_data(batch, sizes)
    x, labels = send(x_host), send(labels_host)
    rows = xp.arange(batch)
    inv_n = 1.0 / batch
    last = len(weights) - 1
    slots: dict[str, list] = {}
    t = [0]

    def forward_backward() -> tuple[Any, list]:
        # forward, keeping each layer's input
        inputs = [x]
        h = x
        for i, (w, b) in enumerate(weights):
            h = h @ w
            h += b
            if i < last:
                xp.maximum(h, 0.0, out=h)
                inputs.append(h)
        # softmax cross-entropy: loss = mean(log Σe^z − z_label), δ = (softmax(z) − onehot) / N
        h -= h.max(axis=1, keepdims=True)
        picked = h[rows, labels]
        xp.exp(h, out=h)
        total = h.sum(axis=1, keepdims=True)
        loss = (xp.log(total).sum() - picked.sum()) * inv_n
        h /= total
        h[rows, labels] -= 1.0
        h *= inv_n
        delta = h
        # backward: weight and bias gradients, and δ for every layer but the first
        grads = []
        for i in range(last, -1, -1):
            w = weights[i][0]
            grads.append(delta.sum(axis=0))
            grads.append(inputs[i].T @ delta)
            if i > 0:
                below = delta @ w.T
                below *= inputs[i] > 0.0
                delta = below
        grads.reverse()  # [W0, b0, W1, b1, ...]
        return loss, grads

    def step_sgd() -> Any:
        loss, grads = forward_backward()
        if "buffer" not in slots:
            slots["buffer"] = [g.copy() for g in grads]
        else:
            for buffer, g in zip(slots["buffer"], grads):
                buffer *= MOMENTUM
                buffer += g
        for p, buffer in zip(params, slots["buffer"]):
            p -= SGD_LR * buffer
        return loss

    def step_adam() -> Any:
        loss, grads = forward_backward()
        if "m" not in slots:
            slots["m"] = [xp.zeros_like(p) for p in params]
            slots["v"] = [xp.zeros_like(p) for p in params]
        t[0] += 1
        step_size = ADAM_LR / (1.0 - BETA1 ** t[0])
        root_bias2 = math.sqrt(1.0 - BETA2 ** t[0])
        for p, g, m, v in zip(params, grads, slots["m"], slots["v"]):
            m *= BETA1
            m += (1.0 - BETA1) * g
            v *= BETA2
            g *= g
            g *= 1.0 - BETA2
            v += g
            denominator = xp.sqrt(v)
            denominator *= 1.0 / root_bias2
            denominator += EPS
            g = m / denominator
            g *= step_size
            p -= g
        return loss

    step = step_sgd if optimizer == "sgd" else step_adam

    def parameters() -> list[np.ndarray]:
        from gradflow.testing.counting import unwrap

        host = []
        for p in params:
            p = unwrap(p)
            value = (p.get() if hasattr(p, "get") else np.asarray(p)).astype(np.float64)
            host.append(value.T if value.ndim == 2 else value)  # (out, in) like gradflow and PyTorch
        return host

    def synchronize() -> None:
        if hasattr(xp, "cuda"):
            xp.cuda.Device().synchronize()

    step.parameters = parameters
    step.synchronize = synchronize
    return step


# --------------------------------------------------------------------------------------------
# PyTorch eager
# --------------------------------------------------------------------------------------------


def build_torch_step(batch: int, *, optimizer: str = "sgd", device: str = "cpu",
                     sizes: tuple[int, ...] = SIZES) -> Step:
    """PyTorch eager: nn.Sequential of Linear/ReLU, nn.CrossEntropyLoss, torch.optim.SGD or Adam
    (their default implementations). Thread count is the caller's (torch.set_num_threads)."""
    import torch

    _check_optimizer(optimizer)
    layers: list = []
    for i, (weight, bias) in enumerate(initial_weights(sizes)):
        linear = torch.nn.Linear(weight.shape[0], weight.shape[1])
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(weight.T.copy()))
            linear.bias.copy_(torch.from_numpy(bias))
        layers += [linear, torch.nn.ReLU()] if i < len(sizes) - 2 else [linear]
    model = torch.nn.Sequential(*layers).to(device)
    x_host, labels_host = batch_data(batch, sizes)
    x = torch.from_numpy(x_host).to(device)
    labels = torch.from_numpy(labels_host).to(device)
    loss_fn = torch.nn.CrossEntropyLoss()
    if optimizer == "sgd":
        opt = torch.optim.SGD(model.parameters(), lr=SGD_LR, momentum=MOMENTUM)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=ADAM_LR, betas=(BETA1, BETA2), eps=EPS)

    def step() -> Any:
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), labels)
        loss.backward()
        opt.step()
        return loss

    def parameters() -> list[np.ndarray]:
        host = []
        for module in model:
            if isinstance(module, torch.nn.Linear):
                host.append(module.weight.detach().cpu().numpy().astype(np.float64))
                host.append(module.bias.detach().cpu().numpy().astype(np.float64))
        return host

    def synchronize() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    step.parameters = parameters
    step.synchronize = synchronize
    return step
