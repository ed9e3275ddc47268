"""A GRU reads MNIST-1D one scalar at a time and classifies the digit.

    python examples/mnist1d_gru.py --device cpu      # or cuda, auto

MNIST-1D (Greydanus 2020): 4,000 training and 1,000 test sequences of 40 scalars, 10 classes,
generated locally. The paper's recurrent baseline, which this follows, is a bidirectional GRU
whose states at every step are flattened into a linear classifier; it reports 91% test accuracy
with 6 units per direction. With 16 units, Adam (lr 1e-2, cosine decay, gradient norm clipped at
1) and 30 epochs of batches of 100, this reaches 93.8% (seed 0; seed 1: 93.6%) in 13 s on 2 CPU
cores; ``--hidden 6`` gives about 90%, ``--hidden 32`` about 96%.
"""

from __future__ import annotations

import argparse
import math
import time

import gradflow as gf
from gradflow.cli import HelpFormatter, add_blas_threads_argument, blas_threads
from gradflow import layers as L
from gradflow.datasets import mnist1d
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import Adam
from gradflow.train import evaluate, fit


def build_model(hidden: int = 6, steps: int = 40, seed: int = 0) -> gf.Sequential:
    """The paper's recurrent baseline: (N, 40, 1) -> bidirectional GRU -> every step's states,
    flattened (N, 40·2·hidden) -> logits (N, 10)."""
    return gf.Sequential(
        L.GRU(1, hidden, bidirectional=True, rng=seed),
        L.Flatten(),
        L.Linear(steps * 2 * hidden, 10, rng=seed + 1),
    )




def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--hidden", type=int, default=16, help="GRU units per direction (the paper: 6)")
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--limit", type=int, default=None, help="use only the first N training sequences (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    add_blas_threads_argument(parser)
    args = parser.parse_args(argv)

    device = gf.device(args.device)
    data = mnist1d()
    x_train, y_train = data.x_train[:args.limit, :, None], data.y_train[:args.limit]
    x_test, y_test = data.x_test[:, :, None], data.y_test
    model = build_model(args.hidden, x_train.shape[1], args.seed).to(device)
    steps_per_epoch = math.ceil(len(x_train) / args.batch_size)
    total = max(args.epochs * steps_per_epoch, 1)

    def cosine(step: int) -> float:
        return args.lr * 0.5 * (1.0 + math.cos(math.pi * min(step, total) / total))

    optimizer = Adam(model, lr=cosine, clip_norm=1.0)
    print(f"gradflow {gf.__version__} on {device}: MNIST-1D, {len(x_train)} training and {len(x_test)} test "
          f"sequences of {x_train.shape[1]} steps; GRU({args.hidden}), {args.epochs} epochs")
    started = time.perf_counter()
    with blas_threads(args.blas_threads):
        fit(model, SoftmaxCrossEntropy(), optimizer, (x_train, y_train), epochs=args.epochs,
            batch_size=args.batch_size, validation=(x_test, y_test), seed=args.seed)
        accuracy = evaluate(model, None, (x_test, y_test))["accuracy"]
    print(f"test accuracy: {accuracy:.2%} after {args.epochs} epochs ({time.perf_counter() - started:.0f}s; "
          "the MNIST-1D paper's GRU: 91%)")
    return accuracy


if __name__ == "__main__":
    main()
