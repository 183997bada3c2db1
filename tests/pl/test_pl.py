"""cellw1.pl: every figure returns its Figure, draws into a given Axes, saves atomically, never shows."""

from __future__ import annotations

import os
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure

from cellw1 import pl
from cellw1.errors import InputError
from cellw1.pl.report import report_figures

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(autouse=True)
def no_show(monkeypatch):
    """Any call of plt.show() fails the test; no figure may be left open in pyplot."""
    import matplotlib.pyplot as plt

    def refuse(*args, **kwargs):
        raise AssertionError("plt.show() was called")

    monkeypatch.setattr(plt, "show", refuse)
    before = set(plt.get_fignums())
    yield
    assert set(plt.get_fignums()) == before


def results_table() -> pd.DataFrame:
    rows = []
    values = {"w1": [0.1, 0.2, 0.3, 0.25], "mean_shift": [0.5, 0.6, 0.4, 0.7], "identity": [0.9, 1.0, 1.1, 1.2]}
    for method, vals in values.items():
        for i, v in enumerate(vals):
            rows.append((method, f"p{i % 2}", i // 2, "mmd", v))
            rows.append((method, f"p{i % 2}", i // 2, "r2", 1.0 - v))
            rows.append((method, f"p{i % 2}", i // 2, "seconds", 10 * v))
    return pd.DataFrame(rows, columns=["method", "perturbation", "repeat", "metric", "value"])


def cells(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Control ``(23, 6)``, observed ``(17, 6)`` shifted per gene, and a perfect prediction."""
    rng = np.random.default_rng(seed)
    control = rng.normal(size=(23, 6))
    shift = np.array([2.0, -1.0, 0.5, 0.0, 0.0, 3.0])
    observed = rng.normal(size=(17, 6)) + shift
    predicted = control + (observed.mean(0) - control.mean(0))
    return control, observed, predicted


def scatters(ax) -> list[PathCollection]:
    return [c for c in ax.collections if isinstance(c, PathCollection)]


# -- metric bars ------------------------------------------------------------------------------------
def test_metric_bars_one_panel_per_metric_with_bars_at_the_median() -> None:
    table = results_table()
    fig = pl.metric_bars(table, title="t")
    assert isinstance(fig, Figure)
    assert [ax.get_title() for ax in fig.axes] == ["mmd", "r2", "seconds"]
    mmd = fig.axes[0]
    assert [p.get_height() for p in mmd.patches] == pytest.approx([0.225, 0.55, 1.05])  # medians
    assert [t.get_text() for t in mmd.get_xticklabels()] == ["w1", "mean_shift", "identity"]
    assert fig.axes[2].get_yscale() == "log"  # seconds
    assert fig._suptitle.get_text() == "t"


def test_metric_bars_takes_an_object_with_a_table_and_selects_metrics_and_methods() -> None:
    fig = pl.metric_bars(SimpleNamespace(table=results_table()), metrics="r2", methods=["identity", "w1"])
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["identity", "w1"]
    assert [p.get_height() for p in ax.patches] == pytest.approx([1 - 1.05, 1 - 0.225])


def test_metric_bars_rejects_bad_tables_and_unknown_names() -> None:
    with pytest.raises(InputError, match="columns"):
        pl.metric_bars(pd.DataFrame({"x": [1]}))
    with pytest.raises(InputError, match="no rows"):
        pl.metric_bars(results_table().iloc[:0])
    with pytest.raises(InputError, match=r"energy.*choose among"):
        pl.metric_bars(results_table(), metrics=["energy"])


# -- drawing into given axes -----------------------------------------------------------------------
def test_ax_draws_into_the_given_axes_and_returns_their_figure() -> None:
    own = Figure()
    ax = own.add_subplot()
    fig = pl.metric_bars(results_table(), metrics=["mmd"], ax=ax)
    assert fig is own
    assert own.axes == [ax]
    assert len(ax.patches) == 3
    c, o, p = cells()
    two = Figure()
    axes = two.subplots(1, 2)  # a numpy array of Axes, one per method
    assert pl.embedding(c, {"a": p, "b": c}, o, ax=axes) is two
    assert [a.get_title() for a in axes] == ["a", "b"]
    assert all(len(scatters(a)) == 3 for a in axes)


def test_ax_works_with_pyplot_axes() -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots()
    try:
        c, o, p = cells()
        assert pl.mean_change(c, p, o, ax=ax) is fig
        assert len(scatters(ax)) == 1
    finally:
        plt.close(fig)


def test_ax_with_the_wrong_number_of_axes_is_refused() -> None:
    ax = Figure().add_subplot()
    with pytest.raises(InputError, match=r"3 panel\(s\), got 1"):
        pl.metric_bars(results_table(), ax=ax)
    with pytest.raises(InputError, match="Axes"):
        pl.transport(np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((4, 2)), ax="not axes")


# -- embedding --------------------------------------------------------------------------------------
def test_embedding_projects_on_the_pcs_of_control_and_observed() -> None:
    rng = np.random.default_rng(1)
    control = np.zeros((20, 3))
    control[:, 0] = rng.normal(size=20)
    observed = control[:15] + [5.0, 0.0, 0.0]  # everything varies along gene 0 only
    fig = pl.embedding(control, {"good": observed[:, :] + 0, "none": control[:15]}, observed)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    observed_pts, control_pts, predicted_pts = scatters(fig.axes[0])
    centre = np.vstack([control, observed]).mean(0)[0]
    assert np.allclose(np.abs(control_pts.get_offsets()[:, 0]), np.abs(control[:, 0] - centre))
    assert np.allclose(predicted_pts.get_offsets(), observed_pts.get_offsets())
    assert np.allclose(control_pts.get_offsets()[:, 1], 0.0, atol=1e-9)


def test_embedding_rejects_mismatched_features_and_keeps_one_feature() -> None:
    c, o, p = cells()
    assert len(pl.embedding(c[:, :1], p[:, :1], o[:, :1]).axes) == 1
    with pytest.raises(InputError, match="features"):
        pl.embedding(c, p[:, :3], o)
    with pytest.raises(InputError, match="empty mapping"):
        pl.embedding(c, {}, o)
    with pytest.raises(InputError, match="NaN"):
        pl.embedding(c, np.full_like(c, np.nan), o)


# -- per-gene mean change ---------------------------------------------------------------------------
def test_mean_change_points_are_the_mean_changes_with_their_correlation() -> None:
    c, o, p = cells()
    fig = pl.mean_change(
        c, {"perfect": p, "inverted": 2 * c - p}, o, gene_names=[f"g{i}" for i in range(6)], n_labels=2
    )
    perfect, inverted = fig.axes
    expected = o.mean(0) - c.mean(0)
    (points,) = scatters(perfect)
    assert np.allclose(points.get_offsets(), np.column_stack([expected, expected]))
    assert [t.get_text() for t in perfect.texts] == ["g5", "g0", "r = 1.000"]  # the 2 largest changes
    assert inverted.texts[-1].get_text() == "r = -1.000"
    identity = perfect.lines[0]
    assert np.allclose(identity.get_xdata(), identity.get_ydata())


def test_mean_change_takes_sparse_cells_and_reports_no_correlation_for_no_change() -> None:
    c, o, _ = cells()
    c_pos, o_pos = np.abs(c), np.abs(o)
    fig = pl.mean_change(sp.csr_matrix(c_pos), sp.csr_matrix(c_pos), o_pos)
    (points,) = scatters(fig.axes[0])
    assert np.allclose(points.get_offsets()[:, 1], 0.0)
    assert fig.axes[0].texts[-1].get_text() == "r = n/a"


def test_mean_change_rejects_mismatched_genes() -> None:
    c, o, p = cells()
    with pytest.raises(InputError, match="genes"):
        pl.mean_change(c, p[:, :4], o)
    with pytest.raises(InputError, match="gene_names"):
        pl.mean_change(c, p, o, gene_names=["a"])


# -- transport rays ---------------------------------------------------------------------------------
def test_transport_draws_points_and_one_ray_per_chosen_point() -> None:
    rng = np.random.default_rng(0)
    src, tgt = rng.normal(size=(31, 2)), rng.normal(size=(29, 2))
    source_before = src.copy()
    fig = pl.transport(src, src + [3.0, 0.0], tgt, n_rays=7, source_labels=np.arange(31) % 2, title="x")
    (ax,) = fig.axes
    assert len(scatters(ax)) == 3
    assert ax.get_title() == "x"
    (rays,) = [c for c in ax.collections if isinstance(c, LineCollection)]
    segments = rays.get_segments()
    assert len(segments) == 7
    assert all(np.allclose(s[1] - s[0], [3.0, 0.0]) for s in segments)
    assert np.array_equal(src, source_before)


def test_transport_rejects_non_2d_points(tmp_path) -> None:
    x = np.zeros((10, 3))
    with pytest.raises(InputError, match=r"\(n, 2\)"):
        pl.transport(x, x, x, save=tmp_path / "bad.png")
    assert not (tmp_path / "bad.png").exists()


# -- training history -------------------------------------------------------------------------------
HISTORY = {
    "step": [10.0, 20.0, 30.0],
    "train_dual": [0.5, 0.8, 0.9],
    "val_dual": [0.4, 0.7, 0.75],
    "loss": [1.0 / (i + 1) for i in range(50)],
    "stopped_at": [30.0],
}


def test_history_pairs_train_and_val_and_draws_against_the_step() -> None:
    fig = pl.history(HISTORY)
    dual, loss = fig.axes
    assert [dual.get_title(), loss.get_title()] == ["dual", "loss"]
    lines = {line.get_label(): line for line in dual.lines}
    assert set(lines) == {"train_dual", "val_dual", "stopped"}
    assert list(lines["val_dual"].get_xdata()) == HISTORY["step"]
    assert list(lines["val_dual"].get_ydata()) == HISTORY["val_dual"]
    assert list(lines["stopped"].get_xdata()) == [30.0, 30.0]
    loss_line = next(line for line in loss.lines if line.get_label() == "loss")
    assert list(loss_line.get_xdata()) == list(range(1, 51))  # no step list of its length: record number


def test_history_from_a_model_a_nested_history_or_a_w2_map() -> None:
    assert len(pl.history(SimpleNamespace(history=HISTORY)).axes) == 2
    nested = {
        "potential": {k: HISTORY[k] for k in ("step", "train_dual", "val_dual")},
        "step_size": {"step": [5.0, 10.0], "val_energy": [0.3, 0.2], "loss": [1.0, 0.5, 0.4]},
    }
    fig = pl.history(SimpleNamespace(history=nested))
    assert [ax.get_title() for ax in fig.axes] == ["potential dual", "step size energy", "step size loss"]
    w2 = SimpleNamespace(info={"history": {"step": [1.0, 2.0], "g_loss": [3.0, 2.0], "val_energy": [0.2, 0.1]}})
    assert [ax.get_title() for ax in pl.history(w2).axes] == ["g_loss", "energy"]
    fig = pl.history(nested, keys=["step_size.val_energy"])
    assert [ax.get_title() for ax in fig.axes] == ["step size energy"]


def test_history_with_one_prefix_per_phase_marks_the_kept_and_last_steps() -> None:
    combined = {
        "potential_step": [10.0, 20.0, 30.0],
        "potential_train_dual": [0.5, 0.8, 0.9],
        "potential_val_dual": [0.4, 0.7, 0.65],
        "potential_best_step": [20.0],
        "potential_stopped_at": [30.0],
        "step_size_step": [5.0, 10.0],
        "step_size_val_energy": [0.3, 0.2],
        "step_size_loss": [1.0, 0.8],
        "step_size_best_step": [10.0],
        "step_size_stopped_at": [10.0],
    }
    fig = pl.history(combined)
    assert [ax.get_title() for ax in fig.axes] == ["potential dual", "step size energy", "step size loss"]
    lines = {line.get_label(): line for line in fig.axes[0].lines}
    assert set(lines) == {"train_dual", "val_dual", "best (kept)", "stopped"}
    assert list(lines["val_dual"].get_xdata()) == combined["potential_step"]
    assert list(lines["best (kept)"].get_xdata()) == [20.0, 20.0]
    loss = next(line for line in fig.axes[2].lines if line.get_label() == "loss")
    assert list(loss.get_xdata()) == [5.0, 10.0]
    fig = pl.history(combined, keys=["potential_val_dual"])
    assert [line.get_label() for line in fig.axes[0].lines][0] == "val_dual"
    assert len(fig.axes) == 1


def test_history_on_fitted_maps_and_models() -> None:
    from conftest import TINY, count_adata

    from cellw1 import W2Config, fit, fit_map, fit_w2

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 2)).astype(np.float32)
    w2 = fit_w2(x, x + 1.0, W2Config(n_iters=4, eval_every=2, hidden=(8,), batch_size=32), seed=0)
    energy = next(ax for ax in pl.history(w2).axes if ax.get_title() == "energy")
    assert list(energy.lines[0].get_ydata()) == pytest.approx(w2.history["val_energy"])

    tmap = fit_map(x, x + 1.0, TINY, seed=0)
    fig = pl.history(tmap)
    assert [ax.get_title() for ax in fig.axes][:2] == ["potential dual", "step size energy"]
    val = next(line for line in fig.axes[0].lines if line.get_label() == "val_dual")
    assert list(val.get_xdata()) == tmap.history["potential_step"]
    assert list(val.get_ydata()) == pytest.approx(tmap.history["potential_val_dual"])

    adata = count_adata(["ctrl", "pert"], 40, 12, seed=0, effects={1: 3.0})
    model = fit(adata, "condition", "ctrl", "pert", config=TINY, progress=False)
    assert [ax.get_title() for ax in pl.history(model).axes] == [ax.get_title() for ax in fig.axes]
    identity = fit(adata, "condition", "ctrl", "pert", method="identity", progress=False)
    with pytest.raises(InputError, match="no training history"):
        pl.history(identity)


def test_history_refuses_an_object_without_one() -> None:
    with pytest.raises(InputError, match="no training history"):
        pl.history(SimpleNamespace(info={}))
    with pytest.raises(InputError, match="no series"):
        pl.history({"step": [1.0], "note": "text"})
    with pytest.raises(InputError, match="choose among"):
        pl.history(HISTORY, keys=["val_energy"])


# -- saving -----------------------------------------------------------------------------------------
def test_save_writes_the_format_of_the_suffix_without_temporary_files(tmp_path) -> None:
    fig = pl.metric_bars(results_table(), save=tmp_path / "sub" / "bars.png")
    assert isinstance(fig, Figure)
    assert (tmp_path / "sub" / "bars.png").read_bytes()[:8] == PNG_MAGIC
    pl.history(HISTORY, save=tmp_path / "sub" / "history.pdf")
    assert (tmp_path / "sub" / "history.pdf").read_bytes()[:4] == b"%PDF"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["bars.png", "history.pdf"]


def test_save_into_given_axes_writes_their_whole_figure(tmp_path) -> None:
    own = Figure()
    left, right = own.subplots(1, 2)
    c, o, p = cells()
    pl.embedding(c, p, o, ax=left)
    pl.mean_change(c, p, o, ax=right, save=tmp_path / "both.png")
    assert (tmp_path / "both.png").read_bytes()[:8] == PNG_MAGIC


def test_a_failed_save_leaves_an_existing_file_as_it_was(tmp_path, monkeypatch) -> None:
    target = tmp_path / "fig.png"
    target.write_bytes(b"old figure")

    def broken(self, *args, **kwargs):
        raise RuntimeError("renderer failed")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(RuntimeError, match="renderer failed"):
        pl.metric_bars(results_table(), save=target)
    assert target.read_bytes() == b"old figure"
    assert [p.name for p in tmp_path.iterdir()] == ["fig.png"]


def test_an_unknown_suffix_is_refused_before_anything_is_written(tmp_path) -> None:
    with pytest.raises(InputError, match=r"suffixes.*png"):
        pl.metric_bars(results_table(), save=tmp_path / "bars.xyz")
    assert list(tmp_path.iterdir()) == []


def test_report_figures_write_the_report_pngs(tmp_path) -> None:
    c, o, p = cells()
    result = SimpleNamespace(
        table=results_table(),
        embedding=SimpleNamespace(perturbation="pA", control=c, observed=o, predicted={"w1": p, "identity": c}),
    )
    written = report_figures(result, tmp_path / "report")
    assert [f.name for f in written] == ["metrics.png", "embedding.png", "mean_change.png"]
    assert all(f.read_bytes()[:8] == PNG_MAGIC for f in written)
    assert [f.name for f in report_figures(SimpleNamespace(table=results_table(), embedding=None), tmp_path)] == [
        "metrics.png"
    ]


# -- imports ----------------------------------------------------------------------------------------
def test_pl_loads_matplotlib_only_to_draw_and_leaves_pyplot_and_the_backend_alone() -> None:
    code = (
        "import sys, numpy as np, cellw1.pl as pl\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib loaded at import'\n"
        "import matplotlib\n"
        "backend = dict.__getitem__(matplotlib.rcParams, 'backend')\n"
        "pl.transport(np.zeros((3, 2)), np.ones((3, 2)), np.ones((4, 2)))\n"
        "assert 'matplotlib.pyplot' not in sys.modules, 'pyplot loaded'\n"
        "assert dict.__getitem__(matplotlib.rcParams, 'backend') == backend, 'backend changed'\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_history_of_a_conditional_model_is_its_maps_and_a_collection_is_named() -> None:
    """``pl.history(conditional)`` draws its map's history; a collection asks for one of its models."""
    conditional = SimpleNamespace(info={}, map=SimpleNamespace(history=HISTORY))
    assert len(pl.history(conditional).axes) == 2
    collection = {"STAT1": SimpleNamespace(history=HISTORY, predict=print)}
    with pytest.raises(InputError, match=r"pass one of them, e.g. collection\['STAT1'\]"):
        pl.history(collection)
