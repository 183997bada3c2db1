"""The benchmarks' harness: the runner lists every benchmark, the writer records commit and settings."""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOLDER = ROOT / "benchmarks"


@pytest.fixture
def harness(monkeypatch):
    """The ``benchmarks`` package (run from the repository root, so it is not on the path of pytest)."""
    monkeypatch.syspath_prepend(str(ROOT))
    import benchmarks._common as common
    from benchmarks import __main__ as runner

    return common, runner


def test_runner_lists_every_benchmark(harness, capsys):
    _, runner = harness
    scripts = {p.stem for p in FOLDER.glob("*.py") if not p.name.startswith("_")}
    assert set(runner.benchmarks()) == scripts
    runner.main([])
    listed = capsys.readouterr().out
    for name, summary in runner.benchmarks().items():
        assert summary, f"benchmarks/{name}.py has no docstring to list"
        assert f"  {name} " in listed


def test_every_benchmark_has_a_main_taking_argv_except_the_tutorials():
    for path in FOLDER.glob("*.py"):
        if path.name.startswith("_") or path.stem.startswith("tutorial_"):
            continue
        mains = [n for n in ast.parse(path.read_text()).body if isinstance(n, ast.FunctionDef) and n.name == "main"]
        assert mains, f"benchmarks/{path.name} has no main(argv)"
        assert [a.arg for a in mains[0].args.args] == ["argv"], path.name


def test_unknown_benchmark_is_refused_with_the_list(harness):
    _, runner = harness
    with pytest.raises(SystemExit, match="unknown benchmark 'nope'"):
        runner.main(["nope"])


def test_writer_records_commit_and_settings(harness, tmp_path):
    common, _ = harness
    args = argparse.Namespace(benchmark="demo", seeds=[0, 1], out=tmp_path / "r.json", quick_settings={})
    path = common.write_json(tmp_path / "r.json", {"rows": [{"mmd": 0.5, "energy": float("nan")}]}, args)
    document = json.loads(path.read_text())
    run = document["run"]
    assert run["benchmark"] == "demo"
    assert run["settings"]["seeds"] == [0, 1]
    assert run["settings"]["out"] == str(tmp_path / "r.json")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a source tree without git records None
        assert run["git"]["commit"] == head.stdout.strip()
    assert document["rows"] == [{"mmd": 0.5, "energy": None}]  # NaN is not JSON
    assert common.read_json(path) == {"rows": [{"mmd": 0.5, "energy": None}]}
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temporary file left behind
    with pytest.raises(ValueError, match="'run'"):
        common.write_json(tmp_path / "s.json", {"run": 1}, args)


def test_quick_changes_only_defaults_and_never_the_recorded_results(harness):
    common, _ = harness
    p = common.parser(
        "demo", name="demo", seeds="0,1,2", out=common.RESULTS / "demo.json", quick={"seeds": [0], "size": 10}
    )
    p.add_argument("--size", type=int, default=1000)
    args = common.parse(p, ["--quick", "--size", "50"])
    assert args.seeds == [0]
    assert args.size == 50  # given on the command line: kept
    assert args.out == common.QUICK_RESULTS / "demo.json"
    assert common.parse(p, []).out == common.RESULTS / "demo.json"


def test_peer_interpreter_comes_from_its_variable(harness, monkeypatch):
    common, _ = harness
    monkeypatch.delenv("CELLW1_CELLFLOW_PYTHON", raising=False)
    with pytest.raises(SystemExit, match="CELLW1_CELLFLOW_PYTHON"):
        common.peer_python("CELLW1_CELLFLOW_PYTHON", "CellFlow", "pip install cellflow-tools")
    monkeypatch.setenv("CELLW1_CELLFLOW_PYTHON", "/no/such/python")
    with pytest.raises(SystemExit, match="no such file"):
        common.peer_python("CELLW1_CELLFLOW_PYTHON", "CellFlow", "pip install cellflow-tools")


def test_no_machine_paths_and_no_path_edits_in_benchmarks():
    for path in FOLDER.glob("*.py"):
        text = path.read_text()
        assert "/work/" not in text, f"benchmarks/{path.name} names a path of one machine"
        assert "sys.path" not in text, f"benchmarks/{path.name} edits sys.path"
