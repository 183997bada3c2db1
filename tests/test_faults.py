"""Real faults injected into real ``cellw1`` processes (issue #11).

A full disk (``RLIMIT_FSIZE``), a read-only folder, SIGINT and SIGTERM at several points of
a fit and of a prediction, and a concurrent writer. After each, the model and the
prediction written before are byte-identical and load, and no temporary file is left.

The command runs in processes forked from one "zygote" that has imported cellw1 once, so a
run costs its own work rather than the ~5 s of importing torch; each child gets its own
stdout/stderr files, resource limits and user, and signals go to its pid.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from conftest import TINY, digest, temp_files
from test_bad_input import counts

import cellw1

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork, rlimits and signals as on Linux")

ZYGOTE = r"""
import json, os, resource, signal, sys, traceback
import cellw1.cli.main as cli
cli.build_parser()  # import every verb (torch, anndata...) once, before forking
import ot  # and POT, which a fit loads when its phase 2 starts,
import torch._dynamo  # and what torch.optim loads at its first optimizer (~1 s)
# Ctrl-C raises KeyboardInterrupt from the first instant of every child, even when a shell that
# started pytest in the background made SIGINT ignored (a child set up later could miss it)
signal.signal(signal.SIGINT, signal.default_int_handler)
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    job = json.loads(line)
    if "wait" in job:
        _, status = os.waitpid(job["wait"], 0)
        print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
        continue
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            for fd, name in ((1, job["stdout"]), (2, job["stderr"])):
                os.dup2(os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o666), fd)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            if job.get("fsize") is not None:  # a full disk: write() fails with EFBIG
                signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
                resource.setrlimit(resource.RLIMIT_FSIZE, (job["fsize"], job["fsize"]))
            if job.get("nobody"):
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
            code = cli.main(job["argv"])
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    print(json.dumps({"pid": pid}), flush=True)
"""


class Zygote:
    """Starts ``cellw1`` commands in forked children of one process that imported cellw1."""

    def __init__(self, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.ready = False  # it imports while the caller goes on (building the test data); _ask waits

    def _readline(self) -> str:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        assert line, "the zygote died"
        return line

    def _ask(self, job: dict[str, Any]) -> dict[str, Any]:
        if not self.ready:
            assert json.loads(self._readline()) == {"ready": True}
            self.ready = True
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        return json.loads(self._readline())

    def start(self, argv: list[str], logs: Path, **limits: Any) -> Run:
        logs.mkdir(parents=True, exist_ok=True)
        for name in ("out", "err"):
            (logs / name).touch()
            os.chmod(logs / name, 0o666)
        job = {"argv": argv, "stdout": str(logs / "out"), "stderr": str(logs / "err"), **limits}
        return Run(self, self._ask(job)["pid"], logs)

    def close(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)


class Run:
    """One child running ``cellw1``."""

    def __init__(self, zygote: Zygote, pid: int, logs: Path) -> None:
        self.zygote, self.pid, self.logs = zygote, pid, logs

    @property
    def err(self) -> str:
        return (self.logs / "err").read_text()

    def wait_for(self, condition: Any, timeout: float = 20.0) -> None:
        """Wait until ``condition()`` (or a marker string in stderr) holds."""
        check = (lambda: condition in self.err) if isinstance(condition, str) else condition
        deadline = time.monotonic() + timeout
        while not check():
            assert time.monotonic() < deadline, f"timed out; stderr: {self.err}"
            time.sleep(0.01)

    def finish(self) -> int:
        return self.zygote._ask({"wait": self.pid})["rc"]


@pytest.fixture(scope="module")
def zygote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zygote]:
    config = tmp_path_factory.mktemp("mplconfig")
    os.chmod(config, 0o777)
    z = Zygote({**os.environ, "MPLCONFIGDIR": str(config)})
    yield z
    z.close()


@pytest.fixture(scope="module")
def world() -> Iterator[dict[str, Path]]:
    """Readable by everyone (pytest's folders are not): data, a previous model and prediction."""
    root = Path(tempfile.mkdtemp(prefix="cellw1-faults-"))
    try:
        yield _world(root)
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _world(root: Path) -> dict[str, Path]:
    os.chmod(root, 0o755)
    cells = counts(n=60, genes=12)
    cells.write_h5ad(root / "cells.h5ad")
    rng = np.random.default_rng(1)
    many = ad.AnnData(
        X=rng.poisson(10.0, size=(30_000, 12)).astype(np.float32),
        obs=pd.DataFrame({"cond": ["ctrl"] * 30_000}, index=[f"m{i}" for i in range(30_000)]),
        var=pd.DataFrame(index=cells.var_names),
    )
    many.write_h5ad(root / "many.h5ad")
    out = root / "out"
    out.mkdir()
    model = cellw1.fit(cells, "cond", "ctrl", "pert", config=TINY, progress=False)
    model.save(out / "model")
    model.predict(cells, out=out / "pred.h5ad")
    for path in [root, *root.rglob("*")]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    return {
        "root": root,
        "cells": root / "cells.h5ad",
        "many": root / "many.h5ad",
        "out": out,
        "model": out / "model",
        "pred": out / "pred.h5ad",
    }


def fit_argv(world: dict[str, Path], *extra: str, iters: int = 20, potential_iters: int | None = None) -> list[str]:
    """``cellw1 fit`` of the world's cells: ``iters`` steps per phase (phase 1: ``potential_iters`` if given)."""
    return [
        "fit",
        str(world["cells"]),
        "--condition-key",
        "cond",
        "--control",
        "ctrl",
        "--perturbation",
        "pert",
        "--potential-iters",
        str(iters if potential_iters is None else potential_iters),
        "--regression-iters",
        str(iters),
        "--quiet",
        "--out",
        str(world["model"]),
        *extra,
    ]


def predict_argv(world: dict[str, Path], data: str = "many", *extra: str) -> list[str]:
    return ["predict", str(world["model"]), str(world[data]), "--out", str(world["pred"]), "--quiet", *extra]


def assert_intact(world: dict[str, Path], before: dict[str, str]) -> None:
    """The earlier model and prediction are byte-identical and load; no temporary file is left."""
    assert {k: digest(world[k]) for k in before} == before
    assert cellw1.load(world["model"]).perturbation == "pert"
    assert ad.read_h5ad(world["pred"]).n_obs == 120
    assert temp_files(world["root"]) == []


def assert_one_line(err: str, start: str) -> None:
    assert "Traceback" not in err, err
    lines = err.strip().splitlines()
    assert lines, err
    assert lines[-1].startswith(start), err
    assert sum(line.startswith("cellw1:") for line in lines) == 1, err


@pytest.fixture
def before(world: dict[str, Path]) -> dict[str, str]:
    return {k: digest(world[k]) for k in ("cells", "many", "model", "pred")}


@pytest.mark.parametrize("verb", ["fit", "predict"])
def test_full_disk(verb, zygote, world, before, tmp_path) -> None:
    """RLIMIT_FSIZE: every write past 16 kB fails with EFBIG, as on a full disk."""
    argv = fit_argv(world) if verb == "fit" else predict_argv(world)
    run = zygote.start(argv, tmp_path, fsize=16_000)
    assert run.finish() == 4, run.err
    assert_one_line(run.err, "cellw1: error: could not write")
    assert "File too large" in run.err
    assert_intact(world, before)


def test_read_only_folder(zygote, world, before, tmp_path) -> None:
    """The previous files live in a folder this user cannot write: refused before any work."""
    if os.geteuid() == 0:
        limits = {"nobody": True}  # root ignores permissions; the child runs as nobody
    else:
        os.chmod(world["out"], 0o555)
        limits = {}
    try:
        for argv in (predict_argv(world, "cells"), fit_argv(world)):
            run = zygote.start(argv, tmp_path / argv[0], **limits)
            assert run.finish() == 4
            assert_one_line(run.err, "cellw1: error: could not write")
            assert "Permission denied" in run.err
    finally:
        os.chmod(world["out"], 0o755)
    assert_intact(world, before)


FIT_POINTS = [
    ("SIGINT", "start", 130),
    ("SIGTERM", "expression input", 143),  # data read and normalised, phase 1 starting
    ("SIGINT", "potential: best", 130),  # phase 1 done, phase 2 running
    ("SIGTERM", "potential: best", 143),
]


@pytest.mark.parametrize(("name", "point", "code"), FIT_POINTS, ids=[f"{s}-{p}" for s, p, _ in FIT_POINTS])
def test_signal_during_fit(name, point, code, zygote, world, before, tmp_path) -> None:
    # a short phase 1 (it ends with the 'potential: best' line), then 5,000 steps of phase 2 without
    # early stopping, so the signal always lands while phase 2 runs
    run = zygote.start(
        [*fit_argv(world, iters=5_000, potential_iters=100), "--patience", "none", "--verbose"], tmp_path
    )
    if point == "start":
        time.sleep(0.15)  # the child is reading the data
    else:
        run.wait_for(point)
    os.kill(run.pid, getattr(signal, name))
    assert run.finish() == code
    assert_one_line(run.err, "cellw1: interrupted" if code == 130 else "cellw1: terminated")
    assert_intact(world, before)


@pytest.mark.parametrize(("name", "code"), [("SIGINT", 130), ("SIGTERM", 143)])
@pytest.mark.parametrize("where", ["in memory", "on disk"])
def test_signal_while_writing_predictions(name, code, where, zygote, world, before, tmp_path) -> None:
    """The signal arrives once the temporary output exists (cells are being written)."""
    argv = predict_argv(world, "many", "--chunk-cells", "1", *(["--on-disk"] if where == "on disk" else []))
    run = zygote.start(argv, tmp_path)
    run.wait_for(lambda: any(p.name.startswith(".pred.h5ad.") for p in world["out"].iterdir()))
    os.kill(run.pid, getattr(signal, name))
    assert run.finish() == code, run.err
    assert_one_line(run.err, "cellw1:")
    assert_intact(world, before)


def test_concurrent_writers(zygote, world, before, tmp_path) -> None:
    """Two fits of one collection: the second is refused while the first holds the lock.
    Two predictions into one file: each lands whole, the last one wins.
    """
    collection = tmp_path / "collection"
    fit_all = [
        *fit_argv(world, iters=5_000)[:-1],
        str(collection),
        "--perturbation",
        "all",
        "--patience",
        "none",  # a long fit: it holds the lock while the second starts
        "--verbose",
    ]
    first = zygote.start(fit_all, tmp_path / "a")
    first.wait_for("expression input")
    second = zygote.start([*fit_argv(world)[:-1], str(collection), "--perturbation", "all"], tmp_path / "b")
    assert second.finish() == 2
    assert_one_line(second.err, "cellw1: error: another cellw1 run is writing")
    os.kill(first.pid, signal.SIGTERM)
    assert first.finish() == 143

    target = tmp_path / "pred.h5ad"
    runs = [
        zygote.start(
            ["predict", str(world["model"]), str(world[data]), "--out", str(target), "--quiet"], tmp_path / f"p{i}"
        )
        for i, data in enumerate(("cells", "many", "cells"))
    ]
    assert [r.finish() for r in runs] == [0, 0, 0]
    assert ad.read_h5ad(target).n_obs in (120, 30_000)
    assert temp_files(tmp_path) == []
    assert_intact(world, before)


def test_ctrl_c_while_importing(world, before, tmp_path) -> None:
    """Ctrl-C while torch is still loading: one line, exit 130, nothing written.

    ``-X importtime`` reports each module as its import ends; the first torch module (at any
    depth: the verbs import torch) means the command is running and torch is loading.
    """
    err = tmp_path / "err"
    with open(err, "w") as handle:
        proc = subprocess.Popen(
            [sys.executable, "-X", "importtime", "-m", "cellw1.cli.main", *fit_argv(world)[:-1], str(tmp_path / "m")],
            stdout=subprocess.DEVNULL,
            stderr=handle,
            # a shell that started pytest in the background ignores SIGINT, and children inherit that
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        deadline = time.monotonic() + 60
        while not re.search(r"^import time: .*\| +torch(\.|$)", err.read_text(), re.MULTILINE) and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130
    lines = [line for line in err.read_text().splitlines() if not line.startswith("import time:")]
    assert lines == ["cellw1: interrupted"]
    assert not (tmp_path / "m").exists()
    assert_intact(world, before)
