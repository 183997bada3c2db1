"""The runner: ``python -m benchmarks`` lists the benchmarks, ``python -m benchmarks NAME [options]`` runs one.

A benchmark is a module of this folder whose name does not start with ``_``; its first
docstring line is its summary. Modules with a ``main(argv)`` get their own options;
the tutorials (``tutorial_kang``, ``tutorial_screens``) are plain scripts and run as such.
"""

from __future__ import annotations

import ast
import importlib
import os
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: benchmarks run with one BLAS thread (set before numpy is imported): the machine is shared
ONE_BLAS_THREAD = frozenset(
    {"baselines", "cell_eval_papalexi", "evaluation_papalexi", "fit_all_throughput", "semisynthetic"}
)


def benchmarks() -> dict[str, str]:
    """Name -> first docstring line of every benchmark, read without importing them."""
    found = {}
    for path in sorted(HERE.glob("*.py")):
        if path.name.startswith("_"):
            continue
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        found[path.stem] = doc.strip().splitlines()[0] if doc.strip() else ""
    return found


def listing() -> str:
    """The usage line and one line per benchmark: its name and summary."""
    names = benchmarks()
    width = max(map(len, names))
    lines = ["usage: python -m benchmarks NAME [options]   (NAME --help for its options)", "", "benchmarks:"]
    lines += [f"  {name:{width}s}  {summary}" for name, summary in names.items()]
    return "\n".join(lines)


def run(name: str, argv: Sequence[str]) -> None:
    """Run benchmark ``name`` with the options ``argv``."""
    if name not in benchmarks():
        raise SystemExit(f"unknown benchmark {name!r}.\n\n{listing()}")
    if name in ONE_BLAS_THREAD:
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS"):
            os.environ.setdefault(var, "1")
    module_name = f"benchmarks.{name}"
    source = (HERE / f"{name}.py").read_text(encoding="utf-8")
    has_main = any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in ast.parse(source).body)
    if has_main:
        importlib.import_module(module_name).main(list(argv))
        return
    if any(a in ("-h", "--help") for a in argv):  # a plain script: its docstring is its help
        print(ast.get_docstring(ast.parse(source)))
        return
    sys.argv = [str(HERE / f"{name}.py"), *argv]
    runpy.run_module(module_name, run_name="__main__")


def main(argv: Sequence[str] | None = None) -> None:
    """List the benchmarks (no ``argv``, ``-h``, ``--help`` or ``list``), else run ``argv[0]`` with the rest."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "list"):
        print(listing())
        return
    run(argv[0], argv[1:])


if __name__ == "__main__":
    main()
