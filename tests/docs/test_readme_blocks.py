"""Every Python block of README.md, examples/README.md and the documentation site's own pages
(docs/index.md, docs/guides/) runs as written, in a fresh namespace and a temporary working
directory (what a reader pasting it into a file would get)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = ("README.md", "examples/README.md", "docs/index.md",
             *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs" / "guides").glob("*.md")))


def python_blocks() -> list[tuple[str, int, str]]:
    """(document, line of the block's opening fence, code) for every ```python block."""
    blocks = []
    for name in DOCUMENTS:
        text = (ROOT / name).read_text()
        for match in re.finditer(r"^```python\n(.*?)^```", text, flags=re.S | re.M):
            blocks.append((name, text.count("\n", 0, match.start()) + 1, match.group(1)))
    return blocks


BLOCKS = python_blocks()

# What a block prints, where README states it (a comment beside the call): checked, not just run.
EXPECTED_OUTPUT = {
    "OneCycle(max_lr=0.1": ["[0.004, 0.1, 0.0]", "0.05"],
    "detect_anomaly(model)": ["layer '0'", "weight"],
    "report = check_layer(": ["cpu: "],
    "np.array_equal": ["True"],
    "for step in range(3)": ["0 ", "2 "],
}


def test_the_readmes_have_python_blocks():
    assert len(BLOCKS) >= 17


@pytest.mark.parametrize("document, line, code", BLOCKS, ids=[f"{d}:{n}" for d, n, _ in BLOCKS])
def test_readme_block_runs_as_written(document, line, code, tmp_path, monkeypatch, capsys):
    needs = {"sklearn": "sklearn", "safetensors": "safetensors", "plot": "matplotlib", "mnist1d": "mnist1d"}
    for word, module in needs.items():
        if word in code or (word == "safetensors" and ("save" in code or "Checkpoint" in code)):
            pytest.importorskip(module)
    if "digits()" in code:
        pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__readme__"}
    if document.startswith("docs/"):  # a page's blocks read as one script: run the earlier ones first
        for earlier_document, earlier_line, earlier in BLOCKS:
            if earlier_document == document and earlier_line < line:
                exec(compile(earlier, f"{document} (block at line {earlier_line})", "exec"), namespace)
        capsys.readouterr()
    exec(compile(code, f"{document} (block at line {line})", "exec"), namespace)
    out = capsys.readouterr().out
    for marker, expected in EXPECTED_OUTPUT.items():
        if marker in code:
            for text in expected:
                assert text in out, f"{document}:{line} should print {text!r}; printed:\n{out}"
