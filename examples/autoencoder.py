"""A convolutional autoencoder on the 8x8 digits: strided Conv2d down, ConvTranspose2d up.

    python examples/autoencoder.py                  # trains and prints the test MSE
    python examples/autoencoder.py --out examples/results/autoencoder.png   # and saves the figure

Encoder: Conv 3x3 stride 2 (1 -> 16 channels, 8x8 -> 4x4), ReLU, Conv 3x3 stride 2 (16 -> 8,
4x4 -> 2x2): a 32-number code for each 64-pixel image. Decoder: two ConvTranspose2d layers with
stride 2 (2x2 -> 4x4 -> 8x8). Trained with Adam on the mean squared error of the standardised
pixels; prints the test reconstruction MSE (next to 1.0, the MSE of always predicting the mean
image) and, with ``--out``, saves a PNG with test inputs above their reconstructions, shown in
the digits' own pixel scale (0 = white paper to 16 = black ink).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import gradflow as gf
from gradflow.cli import HelpFormatter, add_blas_threads_argument, blas_threads
from gradflow import layers as L
from gradflow.datasets import digits
from gradflow.losses import MSE
from gradflow.optim import Adam
from gradflow.train import evaluate, fit, predict


def build_model(seed: int = 0) -> gf.Sequential:
    return gf.Sequential(
        L.Conv2d(1, 16, 3, stride=2, padding=1, rng=seed), L.ReLU(),                               # 8 -> 4
        L.Conv2d(16, 8, 3, stride=2, padding=1, rng=seed + 1), L.ReLU(),                           # 4 -> 2
        L.ConvTranspose2d(8, 16, 3, stride=2, padding=1, output_padding=1, rng=seed + 2), L.ReLU(),  # 2 -> 4
        L.ConvTranspose2d(16, 1, 3, stride=2, padding=1, output_padding=1, rng=seed + 3),          # 4 -> 8
    )


def pixel_scale(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The per-pixel mean and standard deviation that :func:`gradflow.datasets.digits` divided out
    (the training split's), shaped (1, 8, 8), so that ``x * std + mean`` is back in pixels 0-16."""
    raw = digits(images=True, seed=seed, standardize=False).x_train
    std = raw.std(axis=0)
    std[std < 1e-6] = 1.0
    return raw.mean(axis=0), std


def save_comparison(path: Path, inputs: np.ndarray, outputs: np.ndarray, title: str,
                    mean: np.ndarray, std: np.ndarray) -> None:
    """Inputs on the top row, their reconstructions below, in pixel scale (0-16, ink dark on white)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = len(inputs)
    figure, axes = plt.subplots(2, count, figsize=(1.1 * count, 2.6))
    for i in range(count):
        for row, images in enumerate((inputs, outputs)):
            pixels = np.clip(images[i] * std + mean, 0.0, 16.0)[0]
            axes[row, i].imshow(pixels, cmap="gray_r", vmin=0.0, vmax=16.0, interpolation="nearest")
            axes[row, i].set_xticks([])
            axes[row, i].set_yticks([])
    axes[0, 0].set_ylabel("input")
    axes[1, 0].set_ylabel("output")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)




def main(argv: list[str] | None = None) -> float:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--limit", type=int, default=None, help="use only this many training images (smoke tests)")
    parser.add_argument("--seed", type=int, default=0)
    add_blas_threads_argument(parser)
    parser.add_argument("--out", default=None, help="save inputs and reconstructions as a PNG here (default: no figure)")
    args = parser.parse_args(argv)

    device = gf.device(args.device)
    data = digits(images=True)
    x_train = data.x_train[: args.limit]
    model = build_model(args.seed).to(device)
    print(f"gradflow on {device}: autoencoder on {len(x_train)} training digits, code of 8x2x2 = 32 numbers")
    with blas_threads(args.blas_threads):
        started = time.perf_counter()
        history = fit(model, MSE(), Adam(model, lr=args.lr), (x_train, x_train), epochs=args.epochs,
                      batch_size=args.batch_size, seed=args.seed, verbose=False)
        seconds = time.perf_counter() - started
        mse = evaluate(model, MSE(), (data.x_test, data.x_test))["loss"]
    baseline = float(np.mean(data.x_test**2))  # predicting the training mean (0 after standardising)
    print(f"training MSE {history.last('loss'):.4f}; test reconstruction MSE {mse:.4f} "
          f"(mean-image baseline {baseline:.4f}) after {args.epochs} epochs ({seconds:.1f}s)")
    if args.out:
        shown = data.x_test[:10]
        mean, std = pixel_scale(args.seed)
        save_comparison(Path(args.out), shown, predict(model, shown),
                        f"10 test digits and their reconstructions (test MSE {mse:.3f}, standardised pixels)",
                        mean, std)
        print(f"inputs and reconstructions saved to {args.out}")
    return mse


if __name__ == "__main__":
    main()
