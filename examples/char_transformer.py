"""A character-level transformer language model trained on Python's own docstrings.

    python examples/char_transformer.py --device cpu      # or cuda, auto

The text is the docstrings of 60 standard-library modules and their public functions and
classes (it ships with Python: nothing is downloaded), about 280k characters (the exact text
depends on the Python version); the last 10% is held out. The model: character embedding and
learned positions, two causal pre-norm transformer blocks, a final LayerNorm and a linear
read-out to the characters (117k parameters). Each epoch prints the training and held-out loss
(nats per character; a uniform guess is ln 100 = 4.6) and a sample from the prompt "Return the ".
Measured: held-out loss 2.29, 1.89, 1.79, 1.77 after epochs 1-4 (104 s on 2 shared CPU
cores), with samples going from "the pacation. ias resing" to "the nummber object for
foormating.\n\nReturn and docting the arguments formation."
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import math
import time

import numpy as np

import gradflow as gf
from gradflow.cli import HelpFormatter, add_blas_threads_argument, blas_threads
from gradflow import layers as L
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import AdamW
from gradflow.train import evaluate, fit

MODULES = ("textwrap", "string", "json", "argparse", "collections", "functools", "itertools", "pathlib",
           "shutil", "random", "statistics", "heapq", "bisect", "csv", "difflib", "fractions", "contextlib",
           "dataclasses", "calendar", "zipfile", "tempfile", "glob", "fnmatch", "copy", "pprint", "decimal",
           "enum", "datetime", "logging", "inspect", "pickle", "tarfile", "configparser", "optparse", "unittest",
           "doctest", "pydoc", "ast", "tokenize", "traceback", "warnings", "weakref", "codecs", "base64", "gzip",
           "email.message", "urllib.parse", "html.parser", "sqlite3", "uuid", "operator", "re", "os",
           "subprocess", "threading", "queue", "sched", "timeit", "gettext", "locale")


def corpus(modules: tuple[str, ...] = MODULES) -> str:
    """The docstrings of ``modules`` and of their public functions and classes, in a fixed order."""
    texts, seen = [], set()
    for name in modules:
        if name in seen:
            continue
        seen.add(name)
        module = importlib.import_module(name)
        if module.__doc__:
            texts.append(inspect.cleandoc(module.__doc__))
        for attribute, value in sorted(vars(module).items()):
            if attribute.startswith("_") or getattr(value, "__module__", None) != module.__name__:
                continue
            if (inspect.isfunction(value) or inspect.isclass(value)) and value.__doc__:
                texts.append(inspect.cleandoc(value.__doc__))
    return "\n\n".join(texts)


class Vocabulary:
    """Characters <-> integer ids."""

    def __init__(self, text: str):
        self.chars = sorted(set(text))
        self.index = {c: i for i, c in enumerate(self.chars)}

    def __len__(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> np.ndarray:
        return np.array([self.index[c] for c in text], dtype=np.int64)

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def windows(ids: np.ndarray, context: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs ids[s : s+context] and targets ids[s+1 : s+context+1] for s = 0, stride, 2·stride..."""
    starts = np.arange(0, len(ids) - context - 1, stride)
    index = starts[:, None] + np.arange(context)[None, :]
    return ids[index], ids[index + 1]


def build_model(vocab: int, context: int, dim: int = 64, heads: int = 4, blocks: int = 2,
                dropout: float = 0.0, seed: int = 0) -> gf.Sequential:
    """ids (N, T) -> logits (N, T, vocab); causal, so position t sees characters ≤ t only."""
    rng = np.random.default_rng(seed)
    layers = [L.Embedding(vocab, dim, rng=rng), L.LearnedPositionalEncoding(context, dim, rng=rng), L.Dropout(dropout, seed=seed)]
    for b in range(blocks):
        layers.append(L.TransformerEncoderBlock(dim, heads, causal=True, dropout=dropout, activation="gelu_tanh", seed=seed + 10 * (b + 1), rng=rng))
    layers += [L.LayerNorm(dim), L.Linear(dim, vocab, rng=rng)]
    return gf.Sequential(*layers)


def sample(model: gf.Sequential, vocabulary: Vocabulary, prompt: str, length: int, context: int,
           temperature: float = 0.8, seed: int = 0) -> str:
    """Generate ``length`` characters after ``prompt``, one at a time, from the last ``context``."""
    device = model.device
    rng = np.random.default_rng(seed)
    ids = list(vocabulary.encode(prompt))
    for _ in range(length):
        window = device.send(np.array([ids[-context:]], dtype=np.int64))
        logits = gf.to_numpy(model.predict(window))[0, -1].astype(np.float64) / temperature
        p = np.exp(logits - logits.max())
        ids.append(int(rng.choice(len(p), p=p / p.sum())))
    return vocabulary.decode(ids)




def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=HelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--context", type=int, default=64)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--dropout", type=float, default=0.0)
    parser.add_argument("--blocks", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--stride", type=int, default=16, help="characters between training windows")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N characters (smoke tests)")
    parser.add_argument("--sample-length", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    add_blas_threads_argument(parser)
    args = parser.parse_args(argv)

    device = gf.device(args.device)
    text = corpus()[:args.limit]
    vocabulary = Vocabulary(text)
    ids = vocabulary.encode(text)
    split = int(0.9 * len(ids))
    x_train, y_train = windows(ids[:split], args.context, args.stride)
    x_val, y_val = windows(ids[split:], args.context, args.context)
    model = build_model(len(vocabulary), args.context, args.dim, blocks=args.blocks,
                        dropout=args.dropout, seed=args.seed).to(device)
    steps = max(args.epochs * math.ceil(len(x_train) / args.batch_size), 1)

    def schedule(step: int) -> float:  # linear warm-up over 100 steps, then cosine decay to 10%
        warm = min(1.0, (step + 1) / 100)
        return args.lr * warm * (0.1 + 0.45 * (1.0 + math.cos(math.pi * min(step, steps) / steps)))

    optimizer = AdamW(model, lr=schedule, weight_decay=0.01, clip_norm=1.0)
    parameters = sum(p.size for p in model.parameters())
    print(f"gradflow {gf.__version__} on {device}: {len(text):,} characters of standard-library docstrings, "
          f"vocabulary {len(vocabulary)}, {len(x_train)} training windows of {args.context}; "
          f"{parameters:,} parameters; uniform guess = {math.log(len(vocabulary)):.2f} nats/char")
    prompt = "Return the "
    loss = SoftmaxCrossEntropy()
    started = time.perf_counter()
    history: dict[str, float] = {}
    with blas_threads(args.blas_threads):
        for epoch in range(args.epochs):
            trained = fit(model, loss, optimizer, (x_train, y_train), epochs=1, batch_size=args.batch_size,
                          seed=args.seed + epoch, verbose=False)
            held_out = evaluate(model, loss, (x_val, y_val), batch_size=64)
            history = {"loss": trained.last("loss"), "val_loss": held_out["loss"], "val_accuracy": held_out["accuracy"]}
            print(f"epoch {epoch + 1}/{args.epochs}  loss {history['loss']:.3f}  held-out loss {history['val_loss']:.3f} "
                  f"(next-char accuracy {history['val_accuracy']:.1%})  {time.perf_counter() - started:.0f}s")
            print("  sample: " + repr(sample(model, vocabulary, prompt, args.sample_length, args.context, seed=epoch))[:args.sample_length + 40])
    return history


if __name__ == "__main__":
    main()
