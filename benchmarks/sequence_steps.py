"""Training-step benchmarks for sequence models: gradflow vs PyTorch CPU eager, float32.

    python benchmarks/sequence_steps.py [--repeats 30] [--batch 32] [--seq 64] [--hidden 128]

Two steps, each built identically in both libraries (forward, loss, backward, Adam update):

- ``lstm``, ``gru``: LSTM or GRU (input_size -> hidden; input_size defaults to hidden) over
  (batch, seq, input_size), the last step through a Linear to 10 classes, softmax cross-entropy.
  gradflow's step passes ``input_grad=False`` as ``fit`` does (x is data; torch computes no δx
  for it either). Issue 12's target sizes: ``--batch 32 --seq 50 --input-size 32 --hidden 128``.
- ``transformer_block``: one pre-norm encoder block (embed hidden, 4 heads, MLP 4·hidden, GELU,
  no dropout) over (batch, seq, hidden), MSE against a fixed target. PyTorch's counterpart is
  ``nn.TransformerEncoderLayer(norm_first=True, activation="gelu", dropout=0)``.

The factories ``build_gradflow_step(name, ...)`` and ``build_torch_step(name, ...)`` return a
zero-argument callable that runs one training step (the suite imports them). ``main`` times
both in one process, interleaved, and prints medians after warm-up and the ratios
(``torch / gradflow`` > 1 means gradflow is faster). Both get the same number of threads
(``--threads``, default 2: torch.set_num_threads and, through threadpoolctl, NumPy's BLAS).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np

STEPS = ("lstm", "gru", "transformer_block")
CLASSES = 10
HEADS = 4


def _data(batch: int, seq: int, hidden: int, seed: int, features: int | None = None) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.normal(size=(batch, seq, features or hidden)).astype(np.float32),
        "labels": rng.integers(0, CLASSES, size=batch),
        "target": rng.normal(size=(batch, seq, hidden)).astype(np.float32),
    }


def build_gradflow_step(name: str, *, batch: int = 32, seq: int = 64, hidden: int = 128,
                        device: str = "cpu", seed: int = 0, input_size: int | None = None) -> Callable[[], None]:
    """One gradflow training step of ``name`` (see :data:`STEPS`) as a zero-argument callable."""
    import gradflow as gf
    from gradflow import layers as L
    from gradflow.losses import MSE, SoftmaxCrossEntropy
    from gradflow.optim import Adam

    dev = gf.device(device)
    data = _data(batch, seq, hidden, seed, input_size)
    x = dev.send(data["x"], "float32")
    if name in ("lstm", "gru"):
        recurrent = {"lstm": L.LSTM, "gru": L.GRU}[name]
        model = gf.Sequential(recurrent(input_size or hidden, hidden, return_sequences=False, rng=seed),
                              L.Linear(hidden, CLASSES, rng=seed + 1)).to(dev)
        loss, target = SoftmaxCrossEntropy(), dev.send(data["labels"])
    elif name == "transformer_block":
        model = L.TransformerEncoderBlock(hidden, HEADS, rng=seed).to(dev)
        loss, target = MSE(), dev.send(data["target"], "float32")
    else:
        raise ValueError(f"unknown step {name!r}; expected one of {STEPS}")
    optimizer = Adam(model, lr=1e-3)

    def step() -> None:
        output, backprop = model(x, train=True, input_grad=False)  # as fit does: x is data
        _, delta = loss(output, target)
        optimizer.zero_grad()
        backprop(delta)
        optimizer.step()
        dev.synchronize()

    return step


def build_torch_step(name: str, *, batch: int = 32, seq: int = 64, hidden: int = 128,
                     seed: int = 0, input_size: int | None = None) -> Callable[[], None]:
    """The same step in PyTorch eager on the CPU."""
    import torch

    torch.manual_seed(seed)
    data = _data(batch, seq, hidden, seed, input_size)
    x = torch.from_numpy(data["x"])
    if name in ("lstm", "gru"):
        lstm = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[name](input_size or hidden, hidden, batch_first=True)
        head = torch.nn.Linear(hidden, CLASSES)
        parameters = [*lstm.parameters(), *head.parameters()]
        target = torch.from_numpy(data["labels"])

        def forward_loss() -> "torch.Tensor":
            return torch.nn.functional.cross_entropy(head(lstm(x)[0][:, -1]), target)
    elif name == "transformer_block":
        block = torch.nn.TransformerEncoderLayer(hidden, HEADS, dim_feedforward=4 * hidden, dropout=0.0,
                                                 activation="gelu", batch_first=True, norm_first=True)
        parameters = list(block.parameters())
        target = torch.from_numpy(data["target"])

        def forward_loss() -> "torch.Tensor":
            return torch.nn.functional.mse_loss(block(x), target)
    else:
        raise ValueError(f"unknown step {name!r}; expected one of {STEPS}")
    optimizer = torch.optim.Adam(parameters, lr=1e-3)

    def step() -> None:
        optimizer.zero_grad()
        forward_loss().backward()
        optimizer.step()

    return step


def time_interleaved(contenders: dict[str, Callable[[], None]], repeats: int, warmup: int = 3) -> dict[str, float]:
    """Median seconds per call of each contender, called in turn (A, B, A, B...) after warm-up."""
    for _ in range(warmup):
        for step in contenders.values():
            step()
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, step in contenders.items():
            started = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - started)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--input-size", type=int, default=None,
                        help="input features of the lstm/gru steps (default: --hidden)")
    parser.add_argument("--threads", type=int, default=2,
                        help="threads for torch and for NumPy's BLAS (threadpoolctl) alike (default 2)")
    parser.add_argument("--steps", nargs="*", default=list(STEPS), choices=STEPS)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    try:  # the same cap for NumPy's BLAS (and any OpenMP pool), so neither side gets more cores
        from threadpoolctl import threadpool_limits

        limiter = threadpool_limits(limits=args.threads)  # noqa: F841 (held for the whole run)
    except ImportError:
        pass
    sizes = {"batch": args.batch, "seq": args.seq, "hidden": args.hidden}
    print(f"float32, batch {args.batch}, seq {args.seq}, hidden {args.hidden}; torch {torch.__version__}; "
          f"{args.threads} thread(s) each; median of {args.repeats} interleaved steps after warm-up")
    results = {}
    for name in args.steps:
        extra = {"input_size": args.input_size} if name in ("lstm", "gru") else {}
        medians = time_interleaved({"gradflow": build_gradflow_step(name, **sizes, **extra),
                                    "torch": build_torch_step(name, **sizes, **extra)}, args.repeats)
        results[name] = medians
        print(f"{name:>18}: gradflow {medians['gradflow'] * 1e3:7.2f} ms   torch {medians['torch'] * 1e3:7.2f} ms   "
              f"torch/gradflow {medians['torch'] / medians['gradflow']:.2f}x")
    return results


if __name__ == "__main__":
    main()


# For the benchmark suite (python -m benchmarks): one builder per workload and contender, taking
# the batch size, at the sizes stated in this module's docstring.
BATCHES = (32,)
SLOT_BUILDERS = {
    name: {"gradflow": (lambda batch, name=name: build_gradflow_step(name, batch=batch)),
           "torch": (lambda batch, name=name: build_torch_step(name, batch=batch))}
    for name in ("lstm", "gru", "transformer_block")
}
