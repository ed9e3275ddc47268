"""The CNN benchmark step builders (the examples themselves run in test_examples_run.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


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
