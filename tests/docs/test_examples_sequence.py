"""The sequence examples' helpers and benchmark factories with tiny settings (the examples run as
README says in test_examples_run.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def load(relative: str):
    path = ROOT / relative
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_char_transformer_corpus_ships_with_python_and_windows_shift_by_one():
    example = load("examples/char_transformer.py")
    text = example.corpus()
    assert len(text) > 50_000
    vocabulary = example.Vocabulary(text)
    ids = vocabulary.encode(text[:200])
    assert vocabulary.decode(ids) == text[:200]
    x, y = example.windows(ids, 8, 4)
    np.testing.assert_array_equal(x[:, 1:], y[:, :-1])
    np.testing.assert_array_equal(x[1, :4], x[0, 4:])


def test_vanishing_gradients_example_prints_a_table(capsys):
    results = load("examples/vanishing_gradients.py").main(["--steps", "12", "--hidden", "8"])
    assert set(results) == {"RNN (tanh)", "GRU", "LSTM", "LSTM, forget bias 1"}
    assert all(len(norms) == 12 for norms in results.values())
    assert "RNN (tanh)" in capsys.readouterr().out


@pytest.mark.parametrize("name", ["lstm", "gru", "transformer_block"])
def test_benchmark_factories_build_steps_that_train(name):
    bench = load("benchmarks/sequence_steps.py")
    sizes = {"batch": 4, "seq": 5, "hidden": 8, **({"input_size": 3} if name != "transformer_block" else {})}
    step = bench.build_gradflow_step(name, **sizes)
    step()
    step()
    pytest.importorskip("torch")
    bench.build_torch_step(name, **sizes)()


def test_benchmark_main_prints_ratios(capsys):
    pytest.importorskip("torch")
    results = load("benchmarks/sequence_steps.py").main(["--repeats", "1", "--batch", "2", "--seq", "3", "--hidden", "8"])
    assert set(results) == {"lstm", "gru", "transformer_block"}
    assert "torch/gradflow" in capsys.readouterr().out


def test_readme_sequence_snippet_runs():
    import re

    text = (ROOT / "README.md").read_text().split("## Sequence models", 1)[1]
    code = re.findall(r"```python\n(.+?)```", text, re.S)[0]
    namespace: dict = {}
    exec(compile(code, "README.md (Sequence models)", "exec"), namespace)
    assert namespace["dx1"].shape == (4, 15, 8) and namespace["dx2"].shape == (4, 15, 8)


def test_seq2seq_reverse_example_runs_as_a_user_runs_it():
    """``python examples/seq2seq_reverse.py`` from the repository root, with tiny settings."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    command = [sys.executable, "examples/seq2seq_reverse.py", "--epochs", "1", "--train-size", "64", "--test-size", "20",
               "--length", "4", "--dim", "8", "--heads", "2", "--batch-size", "16"]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "epoch 1/1" in done.stdout
    line = next(line for line in done.stdout.splitlines() if line.startswith("result: "))
    assert "of 20 held-out sequences of 4 digits reversed exactly" in line


def test_seq2seq_reverse_data_and_memory_gradient_reach_the_encoder():
    example = load("examples/seq2seq_reverse.py")
    source, target = example.make_data(5, 4, seed=0)
    np.testing.assert_array_equal(target, source[:, ::-1])
    ids = example.teacher_forced(source, target)
    np.testing.assert_array_equal(ids[:, 4], example.BOS)
    np.testing.assert_array_equal(ids[:, 5:], target[:, :-1])
    import gradflow as gf

    model = example.Seq2Seq(4, dim=8, heads=2)
    logits, backprop = model(gf.device("cpu").send(ids), True)
    assert tuple(logits.shape) == (5, 4, example.VOCABULARY)
    backprop(logits * 0 + 1)
    # the encoder learns only through the memory's δ from the decoder's cross-attention
    grad = gf.to_numpy(model.encoder[0].attention.body[1].qkv.weight.grad)
    assert np.abs(grad).max() > 0
