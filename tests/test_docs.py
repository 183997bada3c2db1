"""The documentation shows the code that produced its numbers: every line of a Python block of
docs/tutorial.md is a line of benchmarks/tutorial_kang.py, in the same order.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def code_blocks(markdown: str) -> list[list[str]]:
    return [
        [line.rstrip() for line in block.splitlines() if line.strip()]
        for block in re.findall(r"```python\n(.*?)```", markdown, flags=re.S)
    ]


def test_tutorial_code_is_the_script_s_code() -> None:
    script = [line.rstrip() for line in (ROOT / "benchmarks" / "tutorial_kang.py").read_text().splitlines()]
    blocks = code_blocks((ROOT / "docs" / "tutorial.md").read_text())
    assert len(blocks) >= 5
    position = 0
    for block in blocks:
        for line in block:
            assert line in script[position:], (
                f"docs/tutorial.md shows a line the script lacks (or out of order): {line!r}"
            )
            position = script.index(line, position) + 1


def test_tutorial_figures_exist_and_are_small() -> None:
    text = (ROOT / "docs" / "tutorial.md").read_text()
    figures = re.findall(r"!\[[^\]]*\]\((figures/[^)]+)\)", text)
    assert len(figures) == 4
    for name in figures:
        path = ROOT / "docs" / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size < 200_000
