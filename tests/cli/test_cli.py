"""The gradflow command: train, info, gradcheck, and python -m gradflow."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import gradflow as gf
from gradflow import cli, layers

ROOT = Path(__file__).resolve().parents[2]


def test_train_runs_checkpoints_resumes_and_plots(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("safetensors")
    checkpoint = tmp_path / "run.safetensors"
    base = ["train", "--limit", "200", "--batch-size", "50", "--verbose", "2", "--checkpoint", str(checkpoint)]
    assert cli.main(base + ["--epochs", "1", "--metrics", "accuracy,f1", "--schedule", "cosine"]) == 0
    first = capsys.readouterr().out
    assert "mlp on digits, 180 training / 20 validation / 359 test samples" in first
    assert "epoch 1/1" in first and "test loss" in first and "f1" in first
    assert gf.checkpoint.read(checkpoint).epoch == 1
    plots = ["--plots", str(tmp_path / "plots")] if _has("matplotlib") else []
    resume = base + ["--epochs", "2", "--resume", str(checkpoint), "--schedule", "onecycle"] + plots
    with pytest.raises(SystemExit) as refused:  # the cosine schedule was laid out for 1 epoch
        cli.main(resume)
    assert refused.value.code == 2
    assert "--extend-schedule" in capsys.readouterr().err and gf.checkpoint.read(checkpoint).epoch == 1
    assert cli.main(resume + ["--extend-schedule"]) == 0
    resumed = capsys.readouterr().out
    assert "resuming" in resumed and "schedule=cosine" in resumed  # the checkpoint's settings win
    assert "extending the cosine schedule from 1 to 2 epochs" in resumed
    assert "epoch 2/2" in resumed and "epoch 1/2" not in resumed
    assert gf.checkpoint.read(checkpoint).epoch == 2
    if plots:
        assert (tmp_path / "plots" / "curves.png").stat().st_size > 10_000
        assert (tmp_path / "plots" / "gradient_flow.png").stat().st_size > 10_000


def _has(module):
    try:
        __import__(module)
        return True
    except ImportError:
        return False


@pytest.mark.parametrize("model, needs", [("cnn", "Conv2d"), ("gru", "GRU")])
def test_cnn_and_gru_models_fail_clearly_without_their_layers_or_train_with_them(model, needs, capsys):
    pytest.importorskip("sklearn")
    argv = ["train", "--model", model, "--epochs", "1", "--limit", "64", "--batch-size", "32", "--verbose", "0"]
    if hasattr(layers, needs):
        assert cli.main(argv) == 0
        assert "test loss" in capsys.readouterr().out
    else:
        with pytest.raises(SystemExit, match=f"needs gradflow.layers.{needs}.*use --model mlp"):
            cli.main(argv)


def test_last_time_step_takes_the_final_step_and_routes_its_delta_back():
    x = gf.device("cpu").send(np.arange(24.0).reshape(2, 3, 4), "float64")
    y, backprop = cli.LastTimeStep()(x, train=True)
    np.testing.assert_array_equal(gf.to_numpy(y), gf.to_numpy(x)[:, -1])
    dx = gf.to_numpy(backprop(gf.backend.namespace(y).ones_like(y)))
    assert dx.shape == (2, 3, 4) and dx[:, -1].sum() == 8 and dx[:, :-1].sum() == 0


def test_info_lists_devices_with_reasons_libraries_and_blas(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"gradflow {gf.__version__}")
    assert "cpu     available" in out
    assert ("cuda    available" in out) or ("cuda    missing" in out and "CuPy" in out)
    assert "numpy" in out and "BLAS:" in out


def test_gradcheck_prints_a_layer_by_device_table(capsys):
    assert cli.main(["gradcheck", "--devices", "cpu,strict"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    assert header == ["layer", "cpu", "strict"]
    rows = {line.split("  ")[0].strip(): line.split()[-2:] for line in lines[1:] if line.startswith(("Linear(5, 3)", "GELU"))}
    assert rows["Linear(5, 3)"] == ["ok", "ok"] and rows["GELU()"] == ["ok", "ok"]
    assert len(cli.gradcheck_cases()) >= len(layers.__all__)


def test_gradcheck_reports_a_failing_layer(monkeypatch, capsys):
    from gradflow.core import Layer

    class WrongBackward(Layer):
        def forward(self, x, train):
            return 2.0 * x, lambda dy: dy  # should be 2 dy

    monkeypatch.setattr(cli, "gradcheck_cases", lambda: [("WrongBackward()", WrongBackward, (3, 4), "", {})])
    assert cli.main(["gradcheck", "--devices", "cpu"]) == 1
    out = capsys.readouterr().out
    assert "WrongBackward()" in out and "FAIL" in out and "FAIL WrongBackward() on cpu" in out


def test_python_dash_m_gradflow_and_no_command(capsys):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-m", "gradflow", "--version"], capture_output=True, text=True, env=env)
    assert done.returncode == 0 and done.stdout.strip() == f"gradflow {gf.__version__}"
    assert cli.main([]) == 2
    assert "train" in capsys.readouterr().out


def test_gradcheck_knows_a_sample_input_for_every_exported_layer():
    from gradflow import cli, layers

    unknown = [label for label, factory, _, _, _ in cli.gradcheck_cases() if factory is None]
    assert unknown == [], f"gradflow gradcheck has no sample input for {unknown}"
    assert len(cli.gradcheck_cases()) >= len(layers.__all__)


@pytest.mark.parametrize("name", list(gf.optim.OPTIMIZERS))
def test_every_optimizer_of_the_registry_is_a_train_choice_that_builds_and_takes_a_step(name):
    args = cli.make_parser().parse_args(["train", "--optimizer", name, "--lr", "1e-3"])
    assert args.optimizer == name
    model = cli.build_model("mlp", (64,), 10, seed=0).to("cpu", "float64")
    optimizer = cli.build_optimizer(args.optimizer, model, args.lr, 0.0)
    assert isinstance(optimizer, gf.optim.OPTIMIZERS[name])
    before = {k: gf.to_numpy(v).copy() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).normal(size=(4, 64))
    y, backprop = model(x, train=True)
    model.zero_grad()
    backprop(np.ones_like(gf.to_numpy(y)))
    optimizer.step()
    changed = [k for k, v in model.state_dict().items() if not np.array_equal(gf.to_numpy(v), before[k])]
    assert changed, f"{name}: one step changed no parameter"


def test_the_train_command_refuses_an_unknown_optimizer_listing_the_registry(capsys):
    with pytest.raises(SystemExit):
        cli.make_parser().parse_args(["train", "--optimizer", "lbfgs"])
    err = capsys.readouterr().err
    assert "lbfgs" in err and all(name in err for name in gf.optim.OPTIMIZERS)
