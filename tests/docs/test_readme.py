"""README's quick start and CI must stay in step."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _quick_start_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```bash\n(.+?)\n```", section)


def test_readme_quick_start_has_exactly_two_commands():
    commands = _quick_start_commands()
    assert len(commands) == 2, commands
    assert "examples/digits_mlp.py" in commands[0]
    assert "pytest" in commands[1]


def test_ci_runs_the_readme_test_command():
    test_command = _quick_start_commands()[1]
    install_and_test = test_command.split("&&")[2:]  # after creating and activating the venv
    ci = (ROOT / ".ci" / "run").read_text()
    for part in install_and_test:
        assert part.strip() in ci, f"{part.strip()!r} is not in .ci/run"
