"""The ``cellw1`` command line: the ``demo`` verb, help, exit codes and the console script."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import subprocess
import sys

import pytest

from cellw1 import __version__
from cellw1.cli import demo
from cellw1.cli.main import main
from cellw1.errors import ConfigError, ModelFileError

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_demo_bookshelf_writes_plot_and_summary(tmp_path, capsys) -> None:
    args = [
        "demo",
        "--toys",
        "bookshelf",
        "--potential-iters",
        "200",
        "--regression-iters",
        "100",
        "--n",
        "300",
        "--out",
        str(tmp_path),
        "--quiet",
    ]
    handlers = list(logging.getLogger("cellw1").handlers)
    assert main(args) == 0
    assert logging.getLogger("cellw1").handlers == handlers  # main removed its log handler
    assert (tmp_path / "bookshelf.png").read_bytes()[:8] == PNG_MAGIC
    summary = json.loads((tmp_path / "summary.json").read_text())
    row = summary["toys"]["bookshelf"]
    assert set(row) == {"w1_dual", "exact_w1", "energy_distance", "spearman", "seconds"}
    assert all(isinstance(v, float) and math.isfinite(v) for v in row.values())
    assert summary["config"]["potential_iters"] == 200
    assert summary["n"] == 300
    assert row["exact_w1"] == pytest.approx(2.0, abs=0.1)  # the strips are 2 apart
    assert row["w1_dual"] <= row["exact_w1"] + 0.05  # the dual is a lower bound (up to sampling)
    out = capsys.readouterr().out
    line = next(text for text in out.splitlines() if text.startswith("bookshelf"))
    assert "W1 dual" in line
    assert "exact W1" in line
    assert "spearman" in line


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"], ["--version"]])
def test_help_and_version_exit_zero(argv, capsys) -> None:
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert ("usage: cellw1" in out) if argv[-1] == "--help" else (__version__ in out)


def test_unknown_toy_is_a_one_line_error(tmp_path, capsys) -> None:
    assert main(["demo", "--toys", "bookshelf,spiral", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert err[0].startswith("cellw1: error: unknown toy 'spiral'")
    assert "circles" in err[0]
    assert not (tmp_path / "bookshelf.png").exists()  # names are checked before any fit


def test_bad_config_and_usage_errors_exit_two(tmp_path, capsys) -> None:
    assert main(["demo", "--potential-iters", "0", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["cellw1: error: potential_iters=0 must be >= 1."]
    assert main([]) == 2  # no verb
    assert main(["demo", "--n", "many"]) == 2


@pytest.mark.parametrize(
    ("raised", "code"),
    [(ModelFileError("model.safetensors is truncated"), 3), (ConfigError("bad\nvalue"), 2), (KeyboardInterrupt(), 130)],
)
def test_exit_codes(monkeypatch, capsys, raised, code) -> None:
    def fail(args):
        raise raised

    monkeypatch.setattr(demo, "run", fail)
    assert main(["demo"]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    if code != 130:
        assert err[0] == f"cellw1: error: {' '.join(str(raised).split())}"


def test_console_script_help() -> None:
    script = shutil.which("cellw1") or (os.path.join(os.path.dirname(sys.executable), "cellw1"))
    command = [script] if os.path.exists(script) else [sys.executable, "-m", "cellw1.cli.main"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run([*command, "demo", "--help"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "usage: cellw1 demo" in result.stdout
    assert "--potential-iters" in result.stdout
