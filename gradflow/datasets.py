"""Datasets that need no download: they ship with a package or are generated locally."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .validation import flag, integer, real


class Split(NamedTuple):
    """Host arrays: inputs float32, labels int64."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def digits(images: bool = False, test_fraction: float = 0.2, seed: int = 0, standardize: bool = True) -> Split:
    """scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes).

    Args:
        images: False gives flat inputs of shape (N, 64); True gives images (N, 1, 8, 8).
        test_fraction: the share of each class held out as the test set, in (0, 1).
        seed: the seed of the stratified split (the same seed gives the same split).
        standardize: True (default) scales every pixel with the training set's per-pixel mean
            and standard deviation (constant border pixels are only centred); False keeps the
            raw pixel values, 0 (paper) to 16 (ink).

    Returns:
        A :class:`Split`: float32 inputs, int64 labels 0-9.

    Needs scikit-learn (``pip install 'gradflow-nn[data]'``).
    """
    real("digits", "test_fraction", test_fraction, low=0.0, high=1.0, low_open=True, high_open=True)
    flag("digits", "images", images)
    integer("digits", "seed", seed, low=0)
    try:
        from sklearn.datasets import load_digits
    except ImportError as error:
        raise ImportError("gradflow.datasets.digits needs scikit-learn: pip install 'gradflow-nn[data]'") from error
    bunch = load_digits()
    x = bunch.data.astype(np.float64)
    y = bunch.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    sizes = [int(np.sum(y == label)) for label in range(10)]
    tests = [int(round(size * test_fraction)) for size in sizes]
    if min(size - test for size, test in zip(sizes, tests)) < 1 or min(tests) < 1:
        low = max(0.5 / min(sizes), 1e-12)
        raise ValueError(
            f"digits: test_fraction={test_fraction!r} leaves a class with no training or no test image "
            f"(classes have {min(sizes)} to {max(sizes)} images); use a fraction in about [{low:.4f}, {1 - low:.4f}]"
        )
    test_index = []
    for label in range(10):
        members = np.flatnonzero(y == label)
        test_index.append(rng.choice(members, size=int(round(len(members) * test_fraction)), replace=False))
    test_mask = np.zeros(len(y), dtype=bool)
    test_mask[np.concatenate(test_index)] = True
    x_train, x_test = x[~test_mask], x[test_mask]
    if standardize:
        mean = x_train.mean(axis=0)
        std = x_train.std(axis=0)
        std[std < 1e-6] = 1.0  # constant border pixels
        x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    x_train, x_test = x_train.astype(np.float32), x_test.astype(np.float32)
    if images:
        x_train, x_test = x_train.reshape(-1, 1, 8, 8), x_test.reshape(-1, 1, 8, 8)
    return Split(x_train, y[~test_mask], x_test, y[test_mask])


def mnist1d(num_samples: int = 5000, seed: int = 42, channels: bool = False) -> Split:
    """MNIST-1D (Greydanus 2020), generated locally with the ``mnist1d`` package's generator.

    The defaults are the paper's (5,000 sequences of length 40, 80/20 split, seed 42); nothing is
    downloaded. Inputs are standardised with the training set's global mean and std. Shapes:
    (N, 40), or (N, 1, 40) with ``channels=True`` (for Conv1d) . Needs ``pip install mnist1d``.

    Args:
        num_samples: the number of sequences generated (>= 10), 80% for training.
        seed: the generator's seed (42: the paper's dataset).
        channels: add a channel axis, (N, 1, 40), for Conv1d.
    """
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 10:
        raise ValueError(f"mnist1d: num_samples must be an int >= 10 (one per class), got {num_samples!r}")
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as error:
        raise ImportError("gradflow.datasets.mnist1d needs the mnist1d package: pip install mnist1d") from error
    args = get_dataset_args()
    args.num_samples = num_samples
    args.seed = seed
    data = make_dataset(args)
    x_train, x_test = data["x"], data["x_test"]
    mean, std = x_train.mean(), x_train.std()
    x_train = ((x_train - mean) / std).astype(np.float32)
    x_test = ((x_test - mean) / std).astype(np.float32)
    if channels:
        x_train, x_test = x_train[:, None, :], x_test[:, None, :]
    return Split(x_train, data["y"].astype(np.int64), x_test, data["y_test"].astype(np.int64))
