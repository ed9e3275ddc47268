"""Smoke tests of the vision examples with tiny settings (the full runs are documented commands)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"gradflow_example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_digits_cnn_example_trains_and_reports_accuracy(capsys):
    pytest.importorskip("sklearn")
    accuracy = _load("digits_cnn").main(["--epochs", "1", "--limit", "200"])
    assert 0.0 <= accuracy <= 1.0
    assert "test accuracy" in capsys.readouterr().out


def test_mnist1d_example_writes_a_table_beside_the_papers_numbers(tmp_path, capsys):
    pytest.importorskip("mnist1d")
    out = tmp_path / "mnist1d.md"
    rows = _load("mnist1d").main(["--steps", "4", "--limit", "200", "--seeds", "0,1", "--out", str(out)])
    assert [row["model"] for row in rows] == ["logistic", "mlp", "cnn"]
    assert all(len(row["accuracies"]) == 2 for row in rows)
    table = out.read_text()
    assert "| Logistic regression | 32% |" in table and "| MLP" in table and "| CNN" in table
    assert "94%" in capsys.readouterr().out


def test_autoencoder_example_saves_png_and_reports_mse(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("matplotlib")
    out = tmp_path / "reconstructions.png"
    mse = _load("autoencoder").main(["--epochs", "1", "--limit", "200", "--out", str(out)])
    assert mse > 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "reconstruction MSE" in capsys.readouterr().out


def test_cnn_step_benchmark_builders_each_run_a_training_step():
    spec = importlib.util.spec_from_file_location("gradflow_benchmark_cnn_step",
                                                  EXAMPLES.parent / "benchmarks" / "cnn_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    step = module.build_gradflow_step(batch=4)
    first_conv = step.model.layers[0].weight
    before = first_conv.value.copy()
    step()
    assert first_conv.value.shape == (32, 1, 5, 5) and first_conv.grad is not None
    assert not (first_conv.value == before).all()  # SGD moved the weights
    if importlib.util.find_spec("torch") is not None:
        module.build_torch_step(batch=4)()
