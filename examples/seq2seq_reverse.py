"""An encoder-decoder transformer that learns to reverse sequences of digits.

    python examples/seq2seq_reverse.py --device cpu      # or cuda, auto

The task: a source of ``--length`` random digits (0-9), the target is the same digits in reverse
order. The encoder (token embedding, learned positions, ``TransformerEncoderBlock``s) reads the
source; the decoder (``TransformerDecoderBlock``s: causal self-attention over the target so far,
cross-attention to the encoder's output) predicts each target digit from the ones before it
(teacher forcing in training: the decoder sees ``[BOS, y₀ … y_{L−2}]``). Trained with
``gradflow.train.fit`` (AdamW, cross-entropy per position); evaluated by greedy decoding,
one digit at a time, on 1,000 held-out sequences: the share of sequences reversed exactly
and of digits in the right place. A random guess gets 10% of the digits right.

The whole model is one ``Layer``, so ``fit`` and ``evaluate`` drive it like any other: its input
is the source and the decoder input side by side, (N, 2L) integer ids. Its backprop carries the
δ of the encoder's output (the memory) back from every decoder block into the encoder.

Measured (the command above, defaults: length 8, 1 + 1 blocks of width 64, 2 epochs of 16,000
sequences): see the results line in examples/README.md, written by this script's own output.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import numpy as np

import gradflow as gf
from gradflow import layers as L
from gradflow.backend import Array
from gradflow.core import Backprop, Layer
from gradflow.losses import SoftmaxCrossEntropy
from gradflow.optim import AdamW
from gradflow.train import fit

DIGITS = 10
BOS = DIGITS  # the decoder's start token
VOCABULARY = DIGITS + 1


def make_data(count: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sources (count, length) of random digits and their reversals."""
    source = np.random.default_rng(seed).integers(0, DIGITS, size=(count, length))
    return source, source[:, ::-1].copy()


def teacher_forced(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The model's input: the source and the decoder input [BOS, y₀ … y_{L−2}] side by side."""
    decoder_in = np.concatenate([np.full((len(target), 1), BOS), target[:, :-1]], axis=1)
    return np.concatenate([source, decoder_in], axis=1)


class Seq2Seq(Layer):
    """ids (N, 2L) = [source | decoder input] -> logits (N, L, vocabulary).

    memory = LN(Encoder(Pos(Embed(source)))); y = W LN(Decoder(Pos(Embed(decoder input)), memory)).
    δ: the decoder blocks in reverse, each returning (dx, d_memory); the d_memory of all blocks
    add up and go back through the encoder.
    """

    def __init__(self, length: int, dim: int = 64, heads: int = 4, encoder_blocks: int = 1,
                 decoder_blocks: int = 1, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.length = length
        self.source_embedding = L.Embedding(VOCABULARY, dim, rng=rng)
        self.source_positions = L.LearnedPositionalEncoding(length, dim, rng=rng)
        self.encoder = [L.TransformerEncoderBlock(dim, heads, mlp_ratio=2, rng=rng) for _ in range(encoder_blocks)]
        self.encoder_norm = L.LayerNorm(dim)
        self.target_embedding = L.Embedding(VOCABULARY, dim, rng=rng)
        self.target_positions = L.LearnedPositionalEncoding(length, dim, rng=rng)
        self.decoder = [L.TransformerDecoderBlock(dim, heads, mlp_ratio=2, rng=rng) for _ in range(decoder_blocks)]
        self.decoder_norm = L.LayerNorm(dim)
        self.head = L.Linear(dim, VOCABULARY, rng=rng)

    def forward(self, ids: Array, train: bool) -> tuple[Array, Backprop]:
        if ids.ndim != 2 or ids.shape[1] != 2 * self.length:
            raise ValueError(f"Seq2Seq: expected ids of shape (N, {2 * self.length}), got {tuple(ids.shape)}")
        encoder_steps = [self.source_embedding, self.source_positions, *self.encoder, self.encoder_norm]
        memory, encoder_backprops = ids[:, :self.length], []
        for layer in encoder_steps:
            memory, backprop = layer(memory, train)
            encoder_backprops.append(backprop)
        h, embed_backprop = self.target_embedding(ids[:, self.length:], train)
        h, position_backprop = self.target_positions(h, train)
        decoder_backprops = []
        for block in self.decoder:
            h, backprop = block(h, train, memory=memory)
            decoder_backprops.append(backprop)
        h, norm_backprop = self.decoder_norm(h, train)
        logits, head_backprop = self.head(h, train)

        def backprop(d_logits: Array) -> None:
            dh = norm_backprop(head_backprop(d_logits))
            d_memory = None
            for block_backprop in reversed(decoder_backprops):
                dh, part = block_backprop(dh)
                d_memory = part if d_memory is None else d_memory + part
            embed_backprop(position_backprop(dh))
            for layer_backprop in reversed(encoder_backprops):
                d_memory = layer_backprop(d_memory)
            # the ids are not differentiable: nothing to return

        return logits, backprop


def greedy_reverse(model: Seq2Seq, source: np.ndarray, device: Any, batch_size: int = 500) -> np.ndarray:
    """Decode one digit at a time: position t's prediction becomes the decoder input at t+1."""
    outputs = []
    for start in range(0, len(source), batch_size):
        chunk = source[start:start + batch_size]
        decoded = np.zeros_like(chunk)
        decoder_in = np.full_like(chunk, BOS)
        for t in range(model.length):
            ids = device.send(np.concatenate([chunk, decoder_in], axis=1))
            logits = gf.to_numpy(model.predict(ids))
            decoded[:, t] = logits[:, t].argmax(axis=-1)
            if t + 1 < model.length:
                decoder_in[:, t + 1] = decoded[:, t]
        outputs.append(decoded)
    return np.concatenate(outputs)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: cpu)")
    parser.add_argument("--length", type=int, default=8, help="digits per sequence")
    parser.add_argument("--train-size", type=int, default=16000)
    parser.add_argument("--test-size", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--blocks", type=int, default=1, help="encoder blocks and decoder blocks (each)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blas-threads", type=int, default=1, help="BLAS threads for NumPy (default 1)")
    args = parser.parse_args(argv)

    device = gf.device(args.device)
    source, target = make_data(args.train_size, args.length, args.seed)
    test_source, test_target = make_data(args.test_size, args.length, args.seed + 1)
    model = Seq2Seq(args.length, args.dim, args.heads, args.blocks, args.blocks, seed=args.seed).to(device)
    optimizer = AdamW(model, lr=args.lr, weight_decay=0.01, clip_norm=1.0)
    parameters = sum(p.size for p in model.parameters())
    print(f"gradflow {gf.__version__} on {device}: reverse {args.length} digits; {args.train_size} training and "
          f"{args.test_size} held-out sequences; {args.blocks} encoder + {args.blocks} decoder blocks of width "
          f"{args.dim}, {parameters:,} parameters")
    started = time.perf_counter()
    result: dict[str, float] = {}
    with gf.backend.limit_blas_threads(args.blas_threads):
        for epoch in range(args.epochs):
            history = fit(model, SoftmaxCrossEntropy(), optimizer, (teacher_forced(source, target), target), epochs=1,
                          batch_size=args.batch_size, seed=args.seed + epoch, verbose=False)
            decoded = greedy_reverse(model, test_source, device)
            result = {"loss": history.last("loss"),
                      "sequence_accuracy": float(np.mean(np.all(decoded == test_target, axis=1))),
                      "digit_accuracy": float(np.mean(decoded == test_target)),
                      "seconds": time.perf_counter() - started}
            print(f"epoch {epoch + 1}/{args.epochs}  loss {result['loss']:.4f}  held-out (greedy decoding): "
                  f"{result['sequence_accuracy']:.1%} of sequences reversed exactly, {result['digit_accuracy']:.1%} "
                  f"of digits  {result['seconds']:.0f}s")
    print(f"result: {result['sequence_accuracy']:.1%} of {args.test_size} held-out sequences of {args.length} digits "
          f"reversed exactly ({result['digit_accuracy']:.1%} of digits) after {args.epochs} epochs, "
          f"{result['seconds']:.0f} s on {device}")
    return result


if __name__ == "__main__":
    main()
