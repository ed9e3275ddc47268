"""The sequence examples' helpers and benchmark factories with tiny settings (the examples run as
README says in test_examples_run.py)."""

from __future__ import annotations

import importlib.util
import math
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
