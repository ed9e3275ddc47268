"""Train an MLP on scikit-learn's bundled handwritten digits and report test accuracy.

    python examples/digits_mlp.py --device cpu      # or cuda, auto

Expected: test accuracy >= 97% in about 20 epochs (a few seconds on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import time

import gradflow as gf
from gradflow.cli import HelpFormatter, add_blas_threads_argument, blas_threads
from gradflow import layers as L
from gradflow.datasets import digits
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import Adam
from gradflow.train import evaluate, fit


def build_model(seed: int = 0) -> gf.Sequential:
    return gf.Sequential(
        L.Linear(64, 128, init="he_normal", rng=seed), L.ReLU(),
        L.Linear(128, 128, init="he_normal", rng=seed + 1), L.ReLU(),
        L.Linear(128, 10, rng=seed + 2),
    )


def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    add_blas_threads_argument(parser)
    args = parser.parse_args(argv)

    device = gf.device(args.device)
    data = digits()
    model = build_model(args.seed).to(device)
    optimizer = Adam(model, lr=args.lr, weight_decay=1e-4)
    print(f"gradflow {gf.__version__} on {device}: {len(data.x_train)} training and {len(data.x_test)} test digits")
    started = time.perf_counter()
    with blas_threads(args.blas_threads):
        fit(model, SoftmaxCrossEntropy(), optimizer, (data.x_train, data.y_train), epochs=args.epochs,
            batch_size=args.batch_size, seed=args.seed)
        accuracy = evaluate(model, None, (data.x_test, data.y_test))["accuracy"]
    print(f"test accuracy: {accuracy:.2%} ({time.perf_counter() - started:.1f}s)")
    return accuracy


if __name__ == "__main__":
    main()
