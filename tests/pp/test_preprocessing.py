"""Counts vs log detection and the shared normalise + log1p transform, against hand computations."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from cellw1.errors import ConfigError, InputError
from cellw1.pp.preprocessing import Preprocessor, detect_input_kind, fit_preprocessor

DATA = Path(__file__).resolve().parents[3] / "shared" / "data"
SPARSE = (sp.csr_matrix, sp.csc_matrix)


def poisson_counts(n_cells: int, n_genes: int, depth: float, seed: int) -> np.ndarray:
    """Counts with gene-specific rates and cell-specific depths (some genes reach far above 20)."""
    rng = np.random.default_rng(seed)
    rates = rng.gamma(0.6, 1.0, size=n_genes)
    rates /= rates.sum()
    depths = depth * rng.lognormal(0.0, 0.4, size=n_cells)
    return rng.poisson(depths[:, None] * rates[None, :]).astype(np.float32)


def hand_log1p(x: np.ndarray, target_sum: float) -> np.ndarray:
    """``log(1 + target_sum * x / rowsum(x))`` in float64, written out."""
    out = np.zeros(x.shape, dtype=np.float64)
    for i, row in enumerate(np.asarray(x, dtype=np.float64)):
        if row.sum() > 0:
            out[i] = np.log(1.0 + target_sum * row / row.sum())
    return out


@pytest.fixture(scope="module")
def groups() -> tuple[np.ndarray, np.ndarray]:
    """Control and perturbed counts with different depths (uneven sizes)."""
    return poisson_counts(173, 41, depth=600.0, seed=0), poisson_counts(211, 41, depth=1500.0, seed=1)


# -- detection ---------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", [np.asarray, *SPARSE])
def test_detects_poisson_counts(groups, fmt) -> None:
    counts = groups[1]
    kind, reason = detect_input_kind(fmt(counts))
    assert kind == "counts"
    assert reason == f"values are non-negative integers up to {int(counts.max())}: treated as raw counts"


@pytest.mark.parametrize("fmt", [np.asarray, *SPARSE])
def test_detects_log_normalised(groups, fmt) -> None:
    logged = hand_log1p(groups[0], 1e4)
    kind, reason = detect_input_kind(fmt(logged))
    assert kind == "log"
    assert "non-integers" in reason


def test_small_values_with_some_non_integers_are_log() -> None:
    """Mostly integer-looking values up to 5, a few fractions: transformed data, not counts."""
    x = np.random.default_rng(3).integers(0, 6, size=(200, 30)).astype(np.float64)
    x[::17, 3] += 0.5
    assert detect_input_kind(x)[0] == "log"
    assert detect_input_kind(sp.csr_matrix(x))[0] == "log"


def test_small_integers_are_ambiguous_and_say_how_to_override() -> None:
    x = np.random.default_rng(4).integers(0, 4, size=(100, 20))
    kind, reason = detect_input_kind(x)
    assert kind == "log"
    assert "input_kind='counts'" in reason
    assert "up to 3" in reason
    assert fit_preprocessor(x, assume="counts").input_kind == "counts"


def test_negative_values_are_not_counts() -> None:
    x = np.random.default_rng(5).normal(size=(50, 10))
    kind, reason = detect_input_kind(x)
    assert kind == "continuous"
    assert "negative" in reason


def test_sparse_detection_looks_at_stored_values_only() -> None:
    """A 99.9 %-zero counts matrix is still counts: the implicit zeros do not dilute the sample."""
    x = sp.random(3000, 2000, density=0.001, format="csr", random_state=0, dtype=np.float64)
    x.data = np.round(x.data * 200) + 1
    assert detect_input_kind(x) == (
        "counts",
        f"values are non-negative integers up to {int(x.data.max())}: treated as raw counts",
    )


def test_detection_samples_large_inputs(groups) -> None:
    """More than 100,000 stored values: the answer still follows the data, deterministically."""
    big = np.tile(groups[1], (20, 20))  # 3,460 x 820 = 2.8 M values
    assert detect_input_kind(big) == detect_input_kind(big) == detect_input_kind(sp.csr_matrix(big))
    assert detect_input_kind(big)[0] == "counts"
    assert detect_input_kind(np.log1p(big))[0] == "log"


# -- the transform -----------------------------------------------------------------------------
def test_target_sum_is_the_median_total_of_both_groups(groups) -> None:
    control, perturbed = groups
    both = np.vstack(groups)
    pre = fit_preprocessor(both)
    assert pre.input_kind == "counts"
    assert pre.target_sum == pytest.approx(float(np.median(both.sum(1))), rel=1e-12)
    # neither group's own median: the groups differ in depth
    assert abs(pre.target_sum - np.median(control.sum(1))) > 100
    assert abs(pre.target_sum - np.median(perturbed.sum(1))) > 100


@pytest.mark.parametrize("fmt", [np.asarray, *SPARSE])
def test_transform_equals_hand_computation_with_one_target_sum(groups, fmt) -> None:
    control, perturbed = groups
    pre = fit_preprocessor(fmt(np.vstack(groups)))
    for cells in (control, perturbed):
        out = pre.transform(fmt(cells))
        assert out.dtype == np.float32
        assert isinstance(out, np.ndarray)
        np.testing.assert_allclose(out, hand_log1p(cells, pre.target_sum), rtol=1e-6, atol=1e-6)
        # every cell now totals target_sum before the log
        np.testing.assert_allclose(np.expm1(out.astype(np.float64)).sum(1), pre.target_sum, rtol=1e-5)
    # a cell's value does not depend on which other cells are transformed with it
    together = pre.transform(fmt(np.vstack(groups)))
    np.testing.assert_array_equal(together[: len(control)], pre.transform(fmt(control)))


def test_cells_without_counts_stay_zero(groups) -> None:
    x = groups[0].copy()
    x[5] = 0
    pre = fit_preprocessor(x)
    assert pre.target_sum == pytest.approx(float(np.median(np.delete(x, 5, 0).sum(1))))
    out = pre.transform(x)
    assert np.all(out[5] == 0)
    assert np.isfinite(out).all()


@pytest.mark.parametrize("fmt", [np.asarray, *SPARSE])
def test_inputs_are_not_modified(groups, fmt) -> None:
    for x in (np.asarray(groups[0], dtype=np.float64), groups[0]):  # float64 and float32 arrays
        data = fmt(x.copy())
        before = data.copy()
        pre = fit_preprocessor(data)
        pre.transform(data)
        fit_preprocessor(data, assume="log").transform(data)
        if sp.issparse(data):
            assert (data != before).nnz == 0
            assert data.format == before.format
            np.testing.assert_array_equal(data.indptr, before.indptr)
        else:
            np.testing.assert_array_equal(data, before)


def test_log_input_passes_through_as_float32(groups) -> None:
    logged = hand_log1p(groups[0], 1e4)
    pre = fit_preprocessor(sp.csr_matrix(logged))
    assert pre.input_kind == "log"
    assert pre.target_sum is None
    out = pre.transform(sp.csr_matrix(logged))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, logged.astype(np.float32))


# -- errors ------------------------------------------------------------------------------------
def test_negative_counts_are_an_error_naming_the_fix(groups) -> None:
    x = groups[0].copy()
    x[2, 3] = -1.0
    with pytest.raises(InputError, match=r"negative values.*input_kind='continuous' for values of any sign"):
        fit_preprocessor(x, assume="counts")
    with pytest.raises(InputError, match="negative values"):
        fit_preprocessor(groups[0]).transform(x)
    assert fit_preprocessor(x, assume="log").input_kind == "log"


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_values_are_an_error(groups, bad) -> None:
    x = groups[0].copy()
    x[1, 1] = bad
    with pytest.raises(InputError, match="NaN or inf"):
        fit_preprocessor(sp.csr_matrix(x))
    with pytest.raises(InputError, match="NaN or inf"):
        fit_preprocessor(groups[0]).transform(x)


def test_empty_and_malformed_inputs_are_errors(groups) -> None:
    with pytest.raises(InputError, match="empty"):
        fit_preprocessor(np.zeros((0, 5)))
    with pytest.raises(InputError, match="2-D"):
        fit_preprocessor(np.ones(5))
    with pytest.raises(InputError, match="zero counts"):
        fit_preprocessor(np.zeros((4, 5)), assume="counts")
    with pytest.raises(ConfigError, match="unknown input kind"):
        fit_preprocessor(groups[0], assume="raw")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="X has 40 genes but the preprocessor was fitted on 41"):
        fit_preprocessor(groups[0]).transform(groups[0][:, :40])


def test_json_round_trip(groups) -> None:
    pre = fit_preprocessor(np.vstack(groups))
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again == pre
    np.testing.assert_array_equal(again.transform(groups[1]), pre.transform(groups[1]))
    with pytest.raises(ConfigError, match="unknown Preprocessor fields"):
        Preprocessor.from_dict({**pre.to_dict(), "extra": 1})
    with pytest.raises(ConfigError, match="target_sum"):
        Preprocessor("counts", None, "")


# -- real data ---------------------------------------------------------------------------------
def test_real_data_detection() -> None:
    if not DATA.is_dir():
        pytest.skip(f"real datasets not found at {DATA} (they live beside the project, see its README)")
    import anndata as ad

    with warnings.catch_warnings():  # old-format files: anndata's notices are not ours
        warnings.simplefilter("ignore")
        zhao = ad.read_h5ad(DATA / "zhao2021_glioblastoma_panobinostat.h5ad")
        kang = ad.read_h5ad(DATA / "kang2018_pbmc_ifnb.h5ad")
    kind, reason = detect_input_kind(zhao.X)
    assert kind == "counts"
    assert "raw counts" in reason
    assert detect_input_kind(zhao.layers["logcounts"])[0] == "log"
    assert detect_input_kind(kang.X)[0] == "log"
    pre = fit_preprocessor(zhao.X)
    out = pre.transform(zhao.X[:100])
    np.testing.assert_allclose(out, hand_log1p(zhao.X[:100].toarray(), pre.target_sum), rtol=1e-5, atol=1e-5)


def test_a_given_kind_the_values_contradict_is_warned(caplog: pytest.LogCaptureFixture) -> None:
    """Log-normalised values given as counts, or raw counts given as log, are named in a warning."""
    counts = poisson_counts(200, 30, depth=2000.0, seed=0)  # counts well above 20
    logged = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4).astype(np.float32)
    for values, given, says in ((logged, "counts", "non-integers"), (counts, "log", "look like raw counts")):
        caplog.clear()
        with caplog.at_level("WARNING", logger="cellw1.pp.preprocessing"):
            fit_preprocessor(values, given)
        assert says in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="cellw1.pp.preprocessing"):
        fit_preprocessor(counts, "counts")  # what the values say: no warning
        fit_preprocessor(logged, "log")
        fit_preprocessor((counts > 3).astype(np.float32), "counts")  # small integers may be counts
    assert caplog.text == ""
