"""The package's layers (docs/architecture.md): no import cycles, imports only downward, short functions."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import cellw1

ROOT = Path(cellw1.__file__).parent
#: longest function body, in lines (its docstring not counted): a longer one does several jobs
MAX_BODY_LINES = 80
#: functions allowed a longer body, each with the reason; an entry that no longer needs it fails
#: (test_long_function_allowances_are_needed), so the list only shrinks
LONG_FUNCTIONS: dict[str, str] = {}  # issue #22 split or removed the three it listed

#: layer of each part of the package, lowest first; a module imports only from its own
#: part or from parts of a lower layer (docs/architecture.md)
LAYERS: dict[str, int] = {
    "base": 0,  # errors, _version, checks (argument checks), files (atomic writes, model files, locks)
    "ot": 1,
    "io": 1,
    "datasets": 1,
    "pl": 1,
    "pp": 2,
    "tl": 3,
    "parallel": 4,
    "eval": 4,
    "cli": 5,
    "__init__": 5,
}
#: modules of the base layer, beside the top package's __init__
BASE = ("errors", "_version", "checks", "files")
#: third-party packages the OT engine never imports (it sees arrays and tensors only)
NOT_IN_ENGINE = ("anndata", "h5py", "zarr", "matplotlib", "pandas", "dask", "distributed")


def module_name(path: Path) -> str:
    parts = ["cellw1", *path.relative_to(ROOT).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str) -> bool:
    return (ROOT.joinpath(*name.split(".")[1:]) / "__init__.py").exists()


def part(name: str) -> str:
    """The top-level part of the package a module belongs to (``cellw1.ot.potential`` -> ``ot``)."""
    parts = name.split(".")
    if len(parts) == 1:
        return "__init__"
    return "base" if parts[1] in BASE else parts[1]


def imports(path: Path) -> tuple[set[str], set[str]]:
    """(cellw1 modules, other top-level packages) that ``path`` imports, anywhere in the file."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    inner: set[str] = set()
    outer: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                (inner if alias.name.split(".")[0] == "cellw1" else outer).add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "cellw1":
                outer.add(target)
                continue
            for alias in node.names:  # ``from . import metrics`` imports a module
                sub = f"{target}.{alias.name}"
                inner.add(
                    sub if is_package(sub) or ROOT.joinpath(*sub.split(".")[1:]).with_suffix(".py").exists() else target
                )
    return inner, {o.split(".")[0] for o in outer}


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
GRAPH = {name: imports(path)[0] - {name} for name, path in MODULES.items()}


def test_every_part_has_a_layer() -> None:
    assert {part(name) for name in MODULES} <= set(LAYERS)


def test_no_import_cycles() -> None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(name: str, path: list[str]) -> None:
        state[name] = 1
        for nxt in sorted(GRAPH.get(name, ())):
            if nxt == "cellw1":  # the lazy top package (``import cellw1`` for its version)
                continue
            assert state.get(nxt) != 1, "import cycle: " + " -> ".join([*path, name, nxt])
            if nxt not in state:
                visit(nxt, [*path, name])
        state[name] = 2

    for name in MODULES:
        if name not in state:
            visit(name, [])


@pytest.mark.parametrize("name", sorted(MODULES))
def test_imports_only_downward(name: str) -> None:
    here = part(name)
    upward = sorted(
        target
        for target in GRAPH[name]
        if target != "cellw1" and part(target) != here and LAYERS[part(target)] >= LAYERS[here]
    )
    assert not upward, f"{name} (layer {LAYERS[here]}) imports {upward}"


@pytest.mark.parametrize("name", sorted(n for n in MODULES if part(n) == "ot"))
def test_engine_sees_arrays_only(name: str) -> None:
    assert not imports(MODULES[name])[1] & set(NOT_IN_ENGINE)


def body_lines(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the function's last line."""
    body = function.body
    if (
        isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        body = body[1:]
    if not body:
        return 0
    first = min([body[0].lineno] + [d.lineno for d in getattr(body[0], "decorator_list", [])])
    return (function.end_lineno or function.lineno) - first + 1


def functions(node: ast.AST, prefix: str) -> dict[str, int]:
    """Body lines of every function and method under ``node``, by qualified name (nested ones too)."""
    found: dict[str, int] = {}
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
            found[prefix + child.name] = body_lines(child)
            found.update(functions(child, f"{prefix}{child.name}.<locals>."))
        elif isinstance(child, ast.ClassDef):
            found.update(functions(child, f"{prefix}{child.name}."))
        else:
            found.update(functions(child, prefix))
    return found


#: body lines of every function, by module and qualified name (``Class.method``, ``f.<locals>.g``)
LENGTHS = {module: functions(ast.parse(path.read_text(), str(path)), "") for module, path in MODULES.items()}


@pytest.mark.parametrize("name", sorted(MODULES))
def test_functions_are_short(name: str) -> None:
    long = {
        function: n
        for function, n in LENGTHS[name].items()
        if n > MAX_BODY_LINES and f"{name}.{function}" not in LONG_FUNCTIONS
    }
    assert not long, f"bodies over {MAX_BODY_LINES} lines in {name}: {long}; split them by job"


def test_long_function_allowances_are_needed() -> None:
    lengths = {f"{module}.{function}": n for module, found in LENGTHS.items() for function, n in found.items()}
    stale = sorted(name for name in LONG_FUNCTIONS if lengths.get(name, 0) <= MAX_BODY_LINES)
    assert not stale, f"remove from LONG_FUNCTIONS (gone, or {MAX_BODY_LINES} lines or fewer now): {stale}"
