"""Print a pip constraints file pinning every dependency of the given extras to its floor.

    python .ci/floors.py test > constraints.txt
    pip install -c constraints.txt ".[test]"

pip has no "lowest versions" resolution of its own, so the oldest-dependency CI job pins each
``name>=X`` requirement of pyproject.toml (the core dependencies and the named extras) to
``name==X``. Extras of a requirement (``cupy-cuda12x[ctk]``) are dropped from the pin.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
FLOOR = re.compile(r"^\s*([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*>=\s*([^,;\s]+)")


def floors(extras: list[str]) -> dict[str, str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    requirements = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"floors.py: no extra {extra!r} in pyproject.toml (have: {', '.join(optional)})")
        requirements += optional[extra]
    pins: dict[str, str] = {}
    for requirement in requirements:
        found = FLOOR.match(requirement)
        if found:
            pins[found.group(1).lower()] = found.group(2)
    return pins


if __name__ == "__main__":
    for name, version in sorted(floors(sys.argv[1:]).items()):
        print(f"{name}=={version}")
