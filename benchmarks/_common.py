"""What every benchmark shares: data sets, options, the seed loop, the result writer, tables.

- **Data sets.** :data:`DATASETS` names the real data sets of ``../shared/data`` (Papalexi,
  Zhao, Kang; the folder is ``$CELLW1_DATA`` when set) and the SYNTHETIC generators of
  :mod:`cellw1.datasets`; :func:`load` reads one, with a clear error when the folder is missing.
- **Options.** :func:`parser` gives every benchmark ``--seeds`` / ``--seed``, ``--out`` and
  ``--quick`` (the smallest settings, for a smoke run; its output goes to a temporary folder
  unless ``--out`` is given, so the recorded results are never overwritten by a smoke run).
- **The seed loop.** :func:`each_seed` runs one function per seed and says how long each took.
- **The result writer.** :func:`write_json` writes atomically and records, under ``"run"``,
  the benchmark, its settings, the git commit (and whether ``src/`` had changes), the
  command and the versions; :func:`read_json` gives the results back without that record.
- **Peers' interpreters** (cell-eval, CellFlow) come from environment variables
  (:func:`peer_python`), never from a path of one machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import anndata as ad

#: the repository root, the benchmarks' folder and their recorded results
ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
RESULTS = HERE / "results"
#: where ``--quick`` runs write when no ``--out`` is given
QUICK_RESULTS = Path(tempfile.gettempdir()) / "cellw1-benchmarks-quick"

T = TypeVar("T")


# -- data sets ---------------------------------------------------------------------------------
def data_dir() -> Path:
    """The shared data folder: ``$CELLW1_DATA``, else ``../shared/data`` beside the repository."""
    given = os.environ.get("CELLW1_DATA")
    return Path(given) if given else ROOT.parent / "shared" / "data"


@dataclasses.dataclass(frozen=True)
class Dataset:
    """One data set of the registry: a real file of the shared folder or a SYNTHETIC generator.

    ``key`` and ``control`` are the condition column and the control label; ``file`` is the
    shared file of a real data set, ``generator`` the name of the :mod:`cellw1.datasets`
    function of a synthetic one.
    """

    name: str
    key: str
    control: str
    description: str
    file: str | None = None
    generator: str | None = None

    @property
    def synthetic(self) -> bool:
        return self.generator is not None


DATASETS: dict[str, Dataset] = {
    d.name: d
    for d in (
        Dataset(
            "papalexi",
            "target",
            "non-targeting",
            "Papalexi 2021 ECCITE-seq CRISPR knock-outs, 25 targets, 299 genes (cells with grna_frac >= 0.8)",
            file="papalexi2021_eccite_thp1_crispr.h5ad",
        ),
        Dataset(
            "zhao",
            "condition",
            "ctrl",
            "Zhao 2021 glioblastoma, panobinostat vs vehicle, 5 patients, 300 genes",
            file="zhao2021_glioblastoma_panobinostat.h5ad",
        ),
        Dataset(
            "kang",
            "condition",
            "control",
            "Kang 2018 PBMCs, IFN-beta vs control, 7 cell types, 6,998 genes (log-normalised)",
            file="kang2018_pbmc_ifnb.h5ad",
        ),
        Dataset(
            "synthetic_perturbation", "condition", "control", "SYNTHETIC counts", generator="synthetic_perturbation"
        ),
        Dataset("synthetic_cytometry", "condition", "control", "SYNTHETIC CyTOF", generator="synthetic_cytometry"),
        Dataset(
            "synthetic_combinations", "condition", "control", "SYNTHETIC pairs", generator="synthetic_combinations"
        ),
        Dataset("synthetic_doses", "condition", "control", "SYNTHETIC doses", generator="synthetic_doses"),
        Dataset(
            "synthetic_embedded_perturbations",
            "condition",
            "control",
            "SYNTHETIC perturbations with vectors",
            generator="synthetic_embedded_perturbations",
        ),
        Dataset(
            "synthetic_gene_targets", "condition", "control", "SYNTHETIC knock-outs", generator="synthetic_gene_targets"
        ),
        Dataset("synthetic_screen", "perturbation", "non-targeting", "SYNTHETIC screen", generator="synthetic_screen"),
    )
}


def data_path(name: str) -> Path:
    """The file of a real data set; a clear error when the shared folder or the file is missing."""
    dataset = DATASETS[name]
    if dataset.file is None:
        raise ValueError(f"{name!r} is SYNTHETIC: it has no file; load({name!r}) generates it.")
    path = data_dir() / dataset.file
    if not path.exists():
        raise SystemExit(
            f"{path} not found: this benchmark needs the shared data set {name!r}. Put the shared data "
            "folder beside the repository (../shared/data) or set CELLW1_DATA to the folder that holds it."
        )
    return path


def load(name: str, *args: Any, **kwargs: Any) -> ad.AnnData:
    """A data set of :data:`DATASETS`, read or generated.

    The real file (Papalexi filtered to ``grna_frac >= 0.8``), or the synthetic generator called
    with ``args`` and ``kwargs``.
    """
    dataset = DATASETS[name]
    if dataset.generator is not None:
        import cellw1.datasets

        return getattr(cellw1.datasets, dataset.generator)(*args, **kwargs)
    import anndata as ad

    adata = ad.read_h5ad(data_path(name))
    if name == "papalexi":
        adata = adata[adata.obs["grna_frac"] >= 0.8].copy()
    return adata


def papalexi() -> ad.AnnData:
    """Papalexi 2021, cells with ``grna_frac >= 0.8``."""
    return load("papalexi")


def zhao() -> ad.AnnData:
    """Zhao 2021, panobinostat vs vehicle."""
    return load("zhao")


def kang() -> ad.AnnData:
    """Kang 2018, IFN-beta vs control."""
    return load("kang")


# -- options -----------------------------------------------------------------------------------
def seed_list(text: str) -> list[int]:
    """``"0,1,2"`` -> ``[0, 1, 2]``; ``""`` -> ``[]``."""
    try:
        return [int(s) for s in text.split(",") if s.strip()]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"--seeds {text!r}: expected comma-separated integers, e.g. 0,1,2.") from exc


def parser(
    doc: str | None,
    *,
    name: str,
    seeds: str | None = None,
    seed: int | None = None,
    out: Path | None = None,
    quick: Mapping[str, Any] | None = None,
) -> argparse.ArgumentParser:
    """The parser of benchmark ``name`` with the common options its arguments ask for.

    ``seeds``: default of ``--seeds`` (comma-separated); ``seed``: default of ``--seed`` (one
    seed); ``out``: default of ``--out`` (a file or a folder under ``benchmarks/results``);
    ``quick``: the option values ``--quick`` sets (the smallest run that still goes through
    every step). The description is the module docstring.
    """
    p = argparse.ArgumentParser(
        prog=f"python -m benchmarks {name}", description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.set_defaults(benchmark=name, quick_settings=dict(quick or {}))
    if seeds is not None:
        p.add_argument("--seeds", type=seed_list, default=seed_list(seeds), help="comma-separated (%(default)s)")
    if seed is not None:
        p.add_argument("--seed", type=int, default=seed, help="seed (%(default)s)")
    if out is not None:
        p.add_argument("--out", type=Path, default=out, help="result file or folder (%(default)s)")
    if quick is not None:
        shown = ", ".join(f"{k}={v}" for k, v in quick.items())
        p.add_argument(
            "--quick",
            action="store_true",
            help=f"smoke run with the smallest settings ({shown}); writes under {QUICK_RESULTS} unless --out",
        )
    return p


def parse(p: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse ``argv`` into the benchmark's options.

    With ``--quick``, apply the quick settings to the options left at their defaults and send the
    output to :data:`QUICK_RESULTS`.
    """
    args = p.parse_args(argv)
    if getattr(args, "quick", False):
        for key, value in args.quick_settings.items():
            if getattr(args, key, None) == p.get_default(key):
                setattr(args, key, value)
        if "out" in vars(args) and args.out == p.get_default("out"):
            out = Path(args.out).resolve()
            relative = out.relative_to(RESULTS) if RESULTS in out.parents or out == RESULTS else Path(out.name)
            args.out = QUICK_RESULTS / relative
    return args


def settings(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a run, JSON-ready (paths as text)."""
    skip = {"quick_settings"}
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in skip}


def one_thread() -> None:
    """One torch thread: the development machine is shared."""
    import torch

    torch.set_num_threads(1)


# -- the seed loop -----------------------------------------------------------------------------
def each_seed(seeds: Iterable[int], run: Callable[[int], T], label: str = "") -> dict[int, T]:
    """``{seed: run(seed)}`` in order, printing the seconds of each seed."""
    found: dict[int, T] = {}
    for seed in seeds:
        start = time.perf_counter()
        found[seed] = run(seed)
        print(f"{label + ' ' if label else ''}seed {seed} done ({time.perf_counter() - start:.0f} s)", flush=True)
    return found


# -- the result writer -------------------------------------------------------------------------
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return ""


def git_state() -> dict[str, Any]:
    """The commit, the files of ``src/`` changed since it, and a hash of that change."""
    return {
        "commit": _git("rev-parse", "HEAD").strip() or None,
        "src_changed": _git("status", "--porcelain", "--", "src").splitlines(),
        "src_diff_sha256": hashlib.sha256(_git("diff", "HEAD", "--", "src").encode()).hexdigest(),
    }


def command() -> str:
    """The command line of this run, as the runner is called."""
    if Path(sys.argv[0]).name == "__main__.py" and Path(sys.argv[0]).parent.name == "benchmarks":
        return " ".join(["python -m benchmarks", *sys.argv[1:]])
    return " ".join(sys.argv)


def run_record(run_settings: Mapping[str, Any] | argparse.Namespace) -> dict[str, Any]:
    """What a result file says of the run that made it: benchmark, settings, commit, versions."""
    values = settings(run_settings) if isinstance(run_settings, argparse.Namespace) else dict(run_settings)
    versions = {"python": platform.python_version()}
    for package in ("cellw1", "torch", "numpy"):
        module = sys.modules.get(package)
        versions[package] = getattr(module, "__version__", None) if module else None
    return {
        "benchmark": values.get("benchmark"),
        "settings": values,
        "git": git_state(),
        "command": command(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "versions": versions,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
    }


def clean(obj: Any) -> Any:
    """JSON-ready: NaN and infinities to ``None``, numpy scalars to Python numbers."""
    if isinstance(obj, Mapping):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [clean(v) for v in obj]
    if isinstance(obj, float) or type(obj).__module__ == "numpy":
        try:
            value = obj.item() if hasattr(obj, "item") else obj
        except (ValueError, AttributeError):
            return obj
        if isinstance(value, float) and not math.isfinite(value):
            return None
        return value
    return obj


def write_text(path: Path, text: str) -> Path:
    """Write ``text`` atomically (a temporary file in the same folder, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as fh:
        fh.write(text)
        tmp = Path(fh.name)
    tmp.replace(path)
    return path


def write_json(
    path: Path, payload: Mapping[str, Any], run_settings: Mapping[str, Any] | argparse.Namespace, *, indent: int = 2
) -> Path:
    """Write ``payload`` to ``path`` atomically, with the run's record under ``"run"``."""
    if "run" in payload:
        raise ValueError("a payload must not hold a key 'run': the writer records the run there.")
    document = {"run": run_record(run_settings), **payload}
    write_text(path, json.dumps(clean(document), indent=indent, default=str) + "\n")
    print(f"wrote {display(path)}", flush=True)
    return Path(path)


def read_json(path: Path) -> dict[str, Any]:
    """The results of a file written by :func:`write_json` (without the run record), or ``{}``."""
    path = Path(path)
    if not path.exists():
        return {}
    found = json.loads(path.read_text())
    found.pop("run", None)
    return found


def display(path: Path) -> str:
    """``path`` relative to the repository when inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if ROOT in path.parents else str(path)


# -- tables ------------------------------------------------------------------------------------
def fmt(x: Any) -> str:
    """A number for a table: ``n/a`` for missing, 3 significant digits, integers above 100."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "n/a"
    if isinstance(x, str):
        return x
    x = float(x)
    if x == 0:
        return "0"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.3g}" if abs(x) >= 0.01 else f"{x:.2e}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]], number: Callable[[Any], str] = fmt) -> str:
    """A markdown table; cells that are not text are formatted with ``number``."""
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(c if isinstance(c, str) else number(c) for c in row) + " |")
    return "\n".join(lines)


# -- peers' interpreters -----------------------------------------------------------------------
def peer_python(variable: str, what: str, setup: str, given: str | None = None) -> str:
    """The interpreter of a peer tool's own environment: ``given``, else ``$variable``.

    Raises ``SystemExit`` naming the variable (and how to set the environment up) when neither
    is set.
    """
    python = given or os.environ.get(variable)
    if not python:
        raise SystemExit(
            f"{what} runs in an environment of its own; set {variable} to its python, e.g.\n"
            f"  {setup}\n  export {variable}=/path/to/that/venv/bin/python"
        )
    if not Path(python).exists():
        source = "the option given" if given else variable
        raise SystemExit(f"{python} ({source}): no such file; it must be the python of the {what} environment.")
    return python
