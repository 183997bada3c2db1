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


def test_help_states_the_conditional_defaults_screen_fits_with(capsys) -> None:
    """`cellw1 screen` fits a conditional model: its help gives ConditionalConfig's defaults, not W1Config's."""
    import re

    from cellw1 import ConditionalConfig, W1Config

    assert main(["screen", "--help"]) == 0
    screen_help = " ".join(capsys.readouterr().out.split())
    conditional = ConditionalConfig()
    assert f"phase-1 steps (default: {conditional.potential_iters})" in screen_help
    assert re.search(r"few percent; default: on\)", screen_help)
    assert "--conditional" not in screen_help  # screen has no such option
    assert main(["fit", "--help"]) == 0
    fit_help = " ".join(capsys.readouterr().out.split())
    single = W1Config()
    assert f"(default: {single.potential_iters}, {conditional.potential_iters} with --conditional)" in fit_help
