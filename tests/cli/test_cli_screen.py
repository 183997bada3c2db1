"""The ``cellw1 screen`` verb: its one-line errors (the run itself is tests/tl/test_screen.py's)."""

from __future__ import annotations

from cellw1.cli.main import main
from cellw1.datasets import synthetic_screen


def test_unknown_control_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    path = synthetic_screen(3, 100, 30, seed=0, path=tmp_path / "screen.h5ad")
    code = main(
        [
            "screen",
            str(path),
            "--condition-key",
            "perturbation",
            "--control",
            "nope",
            "--out",
            str(tmp_path / "o"),
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("cellw1: error: control 'nope' is not a label")
    assert not (tmp_path / "o" / "screen.csv").exists()


def test_output_inside_nothing_to_overwrite(tmp_path, capsys) -> None:
    path = synthetic_screen(3, 100, 30, seed=0, path=tmp_path / "screen.h5ad")
    code = main(
        ["screen", str(path), "--condition-key", "perturbation", "--control", "non-targeting", "--out", str(path)]
    )
    assert code == 2
    assert "cellw1: error:" in capsys.readouterr().err
