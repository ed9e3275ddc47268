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


def test_ci_removes_its_virtual_environment_and_builds_the_project_once():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "trap 'rm -rf \"$scratch\"' EXIT" in ci and 'venv="$scratch/venv"' in ci
    tests_mode = ci.split("run_tests() {", 1)[1].split("\n}", 1)[0]
    assert tests_mode.count('pip install -q -e ".[') == 1, tests_mode


def test_the_workflow_runs_ci_script_modes_on_supported_pythons():
    workflow = (ROOT / ".github" / "workflows" / "ci.yml").read_text()
    for mode in ("--tests", "--oldest", "--docs"):
        assert f"bash .ci/run {mode}" in workflow
    assert '["3.11", "3.12", "3.13", "3.14"]' in workflow and '"3.10"' not in workflow
    jobs = workflow.split("\njobs:", 1)[1].split("\n  gpu:", 1)[0]
    assert jobs.count("timeout-minutes:") == jobs.count("runs-on:")
    assert "actions/checkout@v4" not in jobs and "actions/setup-python@v5" not in jobs


def test_floors_pin_every_lower_bound_of_the_core_and_test_dependencies():
    import subprocess
    import sys
    import tomllib

    pins = subprocess.run([sys.executable, str(ROOT / ".ci" / "floors.py"), "test"], capture_output=True,
                          text=True, check=True).stdout.split()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounded = [r for r in project["dependencies"] + project["optional-dependencies"]["test"] if ">=" in r]
    assert len(pins) == len({r.split(">=")[0].split("[")[0].strip().lower() for r in bounded})
    assert any(pin.startswith("numpy==") for pin in pins)
    assert project["name"] == "gradflow-nn" and project["license"] == "MIT"
    assert project["requires-python"] == ">=3.11"
