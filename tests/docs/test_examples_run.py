"""Every example runs the way README tells a user to: ``python examples/NAME.py`` as a subprocess
from the repository root (so a script that shadows a package, as examples/mnist1d.py once shadowed
mnist1d, fails here), with tiny settings; and running one leaves the tracked results alone unless
``--out`` asks for a file."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RESULTS = [ROOT / "examples" / "results", ROOT / "benchmarks" / "results"]

# script -> (tiny arguments, modules it needs, text its output must contain)
EXAMPLES = {
    "digits_mlp.py": (["--epochs", "1"], ["sklearn"], "test accuracy"),
    "digits_cnn.py": (["--epochs", "1", "--limit", "200"], ["sklearn"], "test accuracy"),
    "mnist1d_paper.py": (["--steps", "4", "--limit", "200", "--seeds", "0,1", "--out", "{tmp}/mnist1d.md"],
                         ["mnist1d"], "table written to"),
    "autoencoder.py": (["--epochs", "1", "--limit", "200", "--out", "{tmp}/autoencoder.png"],
                       ["sklearn", "matplotlib"], "reconstruction MSE"),
    "mnist1d_gru.py": (["--epochs", "1", "--limit", "200", "--hidden", "4"], ["mnist1d"], "test accuracy:"),
    "char_transformer.py": (["--epochs", "1", "--limit", "4000", "--context", "16", "--dim", "16", "--blocks", "1",
                             "--stride", "16", "--sample-length", "20"], [], "held-out loss"),
    "vanishing_gradients.py": (["--steps", "12", "--hidden", "8"], [], "RNN (tanh)"),
    "ddp_digits.py": (["--epochs", "1"], ["sklearn"], "test accuracy"),
    "seq2seq_reverse.py": (["--epochs", "1", "--train-size", "64", "--test-size", "20", "--length", "4", "--dim", "8",
                            "--heads", "2", "--batch-size", "16"], [], "held-out sequences"),
}


def _fingerprint() -> dict[str, str]:
    found = {}
    for folder in RESULTS:
        for path in sorted(folder.rglob("*")) if folder.exists() else []:
            if path.is_file():
                found[str(path.relative_to(ROOT))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def test_every_example_is_covered():
    scripts = {path.name for path in (ROOT / "examples").glob("*.py")}
    assert scripts == set(EXAMPLES), scripts ^ set(EXAMPLES)


@pytest.mark.parametrize("script", sorted(EXAMPLES))
def test_example_runs_from_the_repository_root(script, tmp_path):
    arguments, modules, expected = EXAMPLES[script]
    for module in modules:
        if importlib.util.find_spec(module) is None:
            pytest.skip(f"{script} needs {module}")
    before = _fingerprint()
    argv = [a.replace("{tmp}", str(tmp_path)) for a in arguments]
    env = dict(os.environ, PYTHONPATH=str(ROOT), GRADFLOW_COMM="single")
    done = subprocess.run([sys.executable, f"examples/{script}", *argv], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert expected in done.stdout, done.stdout[-2000:]
    assert _fingerprint() == before, "running an example changed a tracked results file"
    if "--out" in arguments:
        written = Path(argv[argv.index("--out") + 1])
        assert written.stat().st_size > 100


def test_mnist1d_paper_table_beside_the_papers_numbers(tmp_path):
    pytest.importorskip("mnist1d")
    out = tmp_path / "table.md"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "examples/mnist1d_paper.py", "--steps", "4", "--limit", "200",
                           "--seeds", "0,1", "--models", "logistic,cnn", "--out", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = out.read_text()
    assert "| Logistic regression | 32% |" in table and "| CNN" in table and "94%" in done.stdout
