"""Reproduce the MNIST-1D benchmark table (Greydanus 2020): logistic regression, MLP and CNN.

    python examples/mnist1d_paper.py                # all three, 3 seeds each, the paper's settings (about a minute)
    python examples/mnist1d_paper.py --out examples/results/mnist1d.md   # and rewrite the published table
    python examples/mnist1d_paper.py --models cnn --device cuda

The dataset is generated locally by the ``mnist1d`` package with the paper's defaults (4,000
training and 1,000 test sequences of length 40, seed 42). Models and training follow the
paper's code (the mnist1d repository's ``models.py`` and training notebook):

- logistic regression: Linear(40, 10)
- MLP: Linear(40, 100), ReLU, then a residual block h + ReLU(Linear(100, 100) h), Linear(100, 10)
- CNN: Conv1d(1, 25, 5, stride 2, padding 1), ReLU, then twice Conv1d(25, 25, 3, stride 2,
  padding 1), ReLU; flatten (25 channels x 5 positions) and Linear(125, 10)

all trained with Adam (lr 1e-2) on batches of 100 for 6,000 steps (150 epochs), once per seed
(``--seeds``, default 0,1,2: the accuracy at the end of training moves by a point or two from
seed to seed). Prints our test accuracies beside the paper's, and writes them as a markdown table
when ``--out`` names a file (nothing is written otherwise).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import gradflow as gf
from gradflow.cli import HelpFormatter, add_blas_threads_argument, blas_threads
from gradflow import layers as L
from gradflow.datasets import mnist1d
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import Adam
from gradflow.train import evaluate, fit

PAPER = {"logistic": 0.32, "mlp": 0.68, "cnn": 0.94}  # MNIST-1D test accuracy, Greydanus (2020), table 1
NAMES = {"logistic": "Logistic regression", "mlp": "MLP (100 hidden, residual)", "cnn": "CNN (3 x Conv1d, 25 channels)"}


def build(name: str, seed: int = 0) -> gf.Sequential:
    if name == "logistic":
        return gf.Sequential(L.Flatten(), L.Linear(40, 10, rng=seed))
    if name == "mlp":
        return gf.Sequential(
            L.Flatten(), L.Linear(40, 100, init="he_uniform", rng=seed), L.ReLU(),
            gf.Residual(gf.Sequential(L.Linear(100, 100, init="he_uniform", rng=seed + 1), L.ReLU())),
            L.Linear(100, 10, rng=seed + 2),
        )
    if name == "cnn":
        return gf.Sequential(
            L.Conv1d(1, 25, 5, stride=2, padding=1, rng=seed), L.ReLU(),      # 40 -> 19
            L.Conv1d(25, 25, 3, stride=2, padding=1, rng=seed + 1), L.ReLU(),  # 19 -> 10
            L.Conv1d(25, 25, 3, stride=2, padding=1, rng=seed + 2), L.ReLU(),  # 10 -> 5
            L.Flatten(), L.Linear(125, 10, rng=seed + 3),
        )
    raise ValueError(f"unknown model {name!r}; expected one of {sorted(PAPER)}")


def write_table(path: Path, rows: list[dict], settings: str, command: str) -> None:
    lines = [
        "# MNIST-1D: gradflow vs the paper",
        "",
        f"Written by `{command}`.",
        "",
        f"Test accuracy at the end of training ({settings}); mean ± standard deviation over the seeds, "
        "each seed's value, and the training time per seed. Paper: Greydanus (2020), \"Scaling down deep learning\".",
        "",
        "| model | paper | gradflow (mean ± std) | per seed | parameters | training time per seed |",
        "|---|---:|---:|---|---:|---:|",
    ]
    for row in rows:
        per_seed = ", ".join(f"{a:.1%}" for a in row["accuracies"])
        lines.append(f"| {NAMES[row['model']]} | {PAPER[row['model']]:.0%} | {row['accuracy']:.1%} ± {row['std']:.1%} | "
                     f"{per_seed} | {row['parameters']:,} | {row['seconds']:.1f} s |")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")




def main(argv: list[str] | None = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--models", default="logistic,mlp,cnn", help="comma-separated subset of logistic,mlp,cnn")
    parser.add_argument("--steps", type=int, default=6000, help="optimizer steps per model (paper: 6000)")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--limit", type=int, default=None, help="use only this many training sequences (smoke tests)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (initialisation and shuffling)")
    add_blas_threads_argument(parser)
    parser.add_argument("--out", default=None, help="write the markdown table here (default: print only)")
    args = parser.parse_args(argv)

    device = gf.device(args.device)
    data = mnist1d(channels=True)
    x_train, y_train = data.x_train[: args.limit], data.y_train[: args.limit]
    epochs = max(1, math.ceil(args.steps * args.batch_size / len(x_train)))
    steps = epochs * math.ceil(len(x_train) / args.batch_size)
    settings = (f"Adam lr {args.lr:g}, batch {args.batch_size}, {steps} steps = {epochs} epochs over "
                f"{len(x_train)} sequences, {device}")
    print(f"MNIST-1D: {len(x_train)} training and {len(data.x_test)} test sequences; {settings}")
    seeds = [int(seed) for seed in args.seeds.split(",")]
    rows = []
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        accuracies, seconds = [], []
        for seed in seeds:
            model = build(name, seed).to(device)
            with blas_threads(args.blas_threads):
                started = time.perf_counter()
                fit(model, SoftmaxCrossEntropy(), Adam(model, lr=args.lr), (x_train, y_train), epochs=epochs,
                    batch_size=args.batch_size, seed=seed, verbose=False)
                seconds.append(time.perf_counter() - started)
                accuracies.append(evaluate(model, None, (data.x_test, data.y_test))["accuracy"])
        mean = sum(accuracies) / len(accuracies)
        std = math.sqrt(sum((a - mean) ** 2 for a in accuracies) / max(len(accuracies) - 1, 1))
        parameters = sum(p.size for p in model.parameters())
        rows.append({"model": name, "accuracy": mean, "std": std, "accuracies": accuracies,
                     "parameters": parameters, "seconds": sum(seconds) / len(seconds)})
        print(f"{NAMES[name]:32s} test accuracy {mean:6.1%} ± {std:.1%} over {len(seeds)} seeds "
              f"({', '.join(f'{a:.1%}' for a in accuracies)})   paper {PAPER[name]:4.0%}   "
              f"({parameters:,} parameters, {sum(seconds) / len(seconds):.1f} s per run)", flush=True)
    if args.out:
        command = "python examples/mnist1d_paper.py " + " ".join(sys.argv[1:] if argv is None else argv)
        write_table(Path(args.out), rows, settings, command.strip())
        print(f"table written to {args.out}")
    return rows


if __name__ == "__main__":
    main()
