"""Every mistaken argument of the gradflow command: one line naming it and what it accepts, exit
status 2, no traceback; a resumed run never continues silently at the end of its schedule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import gradflow as gf
from gradflow import cli

ROOT = Path(__file__).resolve().parents[2]

MISTAKES = [
    (["--epochs", "-3"], "--epochs", ">= 1"),
    (["--epochs", "0"], "--epochs", ">= 1"),
    (["--lr", "-1"], "--lr", "> 0"),
    (["--lr", "nan"], "--lr", "> 0"),
    (["--lr", "inf"], "--lr", "> 0"),
    (["--weight-decay", "-1"], "--weight-decay", ">= 0"),
    (["--warmup", "-5"], "--warmup", ">= 0"),
    (["--validation-split", "1.5"], "--validation-split", "[0, 1)"),
    (["--metrics", "acuracy"], "--metrics", "accuracy, f1"),
    (["--device", "gpu"], "--device", "cpu, cuda, cuda:N, auto"),
    (["--resume", "no-such-file.safetensors"], "--resume", "no checkpoint file"),
    (["--verbose", "3"], "--verbose", "'0', '1', '2', 'auto'"),
    (["--verbose", "yes"], "--verbose", "'0', '1', '2', 'auto'"),
    (["--batch-size", "0"], "--batch-size", ">= 1"),
    (["--limit", "0"], "--limit", ">= 1"),
    (["--limit", "-5"], "--limit", ">= 1"),
    (["--blas-threads", "-1"], "--blas-threads", ">= 0"),
    (["--patience", "0"], "--patience", ">= 1"),
]


@pytest.mark.parametrize("argv, argument, allowed", MISTAKES, ids=[" ".join(m[0]) for m in MISTAKES])
def test_a_mistaken_argument_is_one_line_and_exit_2(argv, argument, allowed, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as stopped:
        cli.main(["train", *argv])
    assert stopped.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("gradflow train: error: argument " + argument), lines[0]
    assert allowed in lines[0], lines[0]
    assert captured.out == ""  # nothing trained


def test_cuda_without_a_gpu_is_a_usage_error():
    if any(name == "cuda" and dev is not None for name, dev, _ in gf.testing.available_devices()):
        pytest.skip("a GPU is present: --device cuda is valid here")
    done = subprocess.run([sys.executable, "-m", "gradflow", "train", "--device", "cuda"], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=str(ROOT)), cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "argument --device: 'cuda' is not usable here" in done.stderr


def test_a_file_that_is_not_a_checkpoint_is_a_usage_error(tmp_path, capsys):
    pytest.importorskip("safetensors")
    bad = tmp_path / "notes.safetensors"
    bad.write_text("not a checkpoint")
    with pytest.raises(SystemExit) as stopped:
        cli.main(["train", "--resume", str(bad)])
    assert stopped.value.code == 2
    assert "argument --resume" in capsys.readouterr().err


def test_gradcheck_refuses_an_unknown_device(capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["gradcheck", "--devices", "gpu"])
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "argument --devices: unknown device 'gpu'" in err and "cpu, strict" in err


def test_resume_needs_more_epochs_than_the_checkpoint_has(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("safetensors")
    checkpoint = str(tmp_path / "run.safetensors")
    base = ["train", "--limit", "100", "--batch-size", "50", "--verbose", "0", "--checkpoint", checkpoint]
    assert cli.main(base + ["--epochs", "2"]) == 0
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        cli.main(base + ["--epochs", "2", "--resume", checkpoint])
    assert stopped.value.code == 2
    assert "already at epoch 2" in capsys.readouterr().err


def test_extended_cosine_schedule_keeps_training_with_a_positive_rate(tmp_path, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("safetensors")
    checkpoint = str(tmp_path / "run.safetensors")
    base = ["train", "--limit", "100", "--batch-size", "50", "--verbose", "0", "--checkpoint", checkpoint,
            "--validation-split", "0"]
    assert cli.main(base + ["--epochs", "2", "--schedule", "cosine"]) == 0
    assert gf.checkpoint.read(checkpoint).history.get("lr")[-1] < 1e-3 / 2  # annealed to (near) 0 by epoch 2
    assert cli.main(base + ["--epochs", "4", "--resume", checkpoint, "--extend-schedule"]) == 0
    lrs = gf.checkpoint.read(checkpoint).history.get("lr")
    assert len(lrs) == 4 and lrs[2] > 1e-4 and lrs[3] < lrs[2]  # continues annealing over the longer plan
    assert gf.checkpoint.read(checkpoint).extra["cli_args"]["horizon"] == 4


def test_help_shows_defaults_and_every_command_has_a_description(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # one line per option
    parser = cli.make_parser()
    commands = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, sub in commands.choices.items():
        assert sub.description, f"gradflow {name} has no description"
    with pytest.raises(SystemExit):
        cli.main(["train", "--help"])
    out = capsys.readouterr().out
    assert "(default: 20)" in out and "(default: adam)" in out and "(default: 1)" in out
