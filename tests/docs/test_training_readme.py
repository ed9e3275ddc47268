"""README's Training section: every Python example runs as written (in a temporary directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _training_examples() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Training:", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.+?)\n```", section, flags=re.S)


def test_the_training_section_has_its_examples():
    assert len(_training_examples()) == 5


@pytest.mark.parametrize("index", range(5))
def test_readme_training_example_runs(index, tmp_path, monkeypatch, capsys):
    pytest.importorskip("sklearn")
    pytest.importorskip("safetensors")
    pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    exec(compile(_training_examples()[index], f"README training example {index + 1}", "exec"), {})
    out = capsys.readouterr().out
    if index == 1:
        assert "[0.004, 0.1, 0.0]" in out and "0.05" in out
    if index == 2:
        assert out.strip() == "True"
    if index == 3:
        assert "layer '0'" in out and "weight" in out and (tmp_path / "gradient_flow.png").exists()
