"""The documentation shows the code that produced its numbers: every line of a Python block of
docs/tutorial.md is a line of benchmarks/tutorial_kang.py, in the same order; likewise docs/screens.md's
tutorial (the blocks before its section on ``fit_all``) and benchmarks/tutorial_screens.py.
docs/tutorial.md's printed output is the script's: every line of its text blocks is a line of
benchmarks/results/tutorial_kang.txt, the script's saved output.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def code_blocks(markdown: str) -> list[list[str]]:
    return [
        [line.rstrip() for line in block.splitlines() if line.strip()]
        for block in re.findall(r"```python\n(.*?)```", markdown, flags=re.S)
    ]


@pytest.mark.parametrize(
    ("page", "script_name", "end", "n_blocks"),
    [
        ("tutorial.md", "tutorial_kang.py", None, 5),
        ("screens.md", "tutorial_screens.py", "## Separate maps for a screen", 9),
    ],
)
def test_tutorial_code_is_the_script_s_code(page: str, script_name: str, end: str | None, n_blocks: int) -> None:
    script = [line.rstrip() for line in (ROOT / "benchmarks" / script_name).read_text().splitlines()]
    text = (ROOT / "docs" / page).read_text()
    blocks = code_blocks(text if end is None else text[: text.index(end)])
    assert len(blocks) >= n_blocks
    position = 0
    for block in blocks:
        for line in block:
            assert line in script[position:], (
                f"docs/{page} shows a line benchmarks/{script_name} lacks (or out of order): {line!r}"
            )
            position = script.index(line, position) + 1


def output_lines(text: str) -> list[str]:
    """Lines with their runs of spaces made one, timings (which change from run to run) left out."""
    lines = (" ".join(line.split()) for line in text.splitlines())
    return [line for line in lines if line and not line.startswith(("seconds per fit:", "whole tutorial:"))]


def test_tutorial_output_is_the_script_s_output() -> None:
    printed = output_lines((ROOT / "benchmarks" / "results" / "tutorial_kang.txt").read_text())
    blocks = re.findall(r"```text\n(.*?)```", (ROOT / "docs" / "tutorial.md").read_text(), flags=re.S)
    assert len(blocks) >= 7
    position = 0
    for block in blocks:
        for line in output_lines(block):
            assert line in printed[position:], (
                f"docs/tutorial.md shows output that benchmarks/results/tutorial_kang.txt lacks (or out of order): "
                f"{line!r}; rerun the script as its docstring says and update the page"
            )
            position = printed.index(line, position) + 1


def test_tutorial_figures_exist_and_are_small() -> None:
    text = (ROOT / "docs" / "tutorial.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", text)
    assert len(figures) == 4
    for name in figures:
        path = ROOT / "docs" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size < 200_000
