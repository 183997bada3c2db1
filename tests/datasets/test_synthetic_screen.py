"""The synthetic screen (cellw1.datasets.synthetic_screen): its truth, and the same cells in memory and on disk."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest

from cellw1.datasets import synthetic_screen
from cellw1.errors import ConfigError, InputError


def test_truth_matches_the_cells() -> None:
    adata = synthetic_screen(60, 500, 40, effect_fraction=0.25, seed=3)
    truth = adata.uns["screen_truth"]
    counts = adata.obs["perturbation"].value_counts()
    assert counts["non-targeting"] == 500
    np.testing.assert_array_equal([counts[p] for p in truth["perturbation"]], truth["n_cells"])
    assert (truth["effect"] > 0).sum() == 15
    assert np.all(truth["group"][truth["effect"] == 0] == -1)
    by_label = adata.obs.groupby("perturbation", observed=True)["responded"].mean()
    null = [p for p, e in zip(truth["perturbation"], truth["effect"], strict=True) if e == 0]
    assert by_label[null].max() == 0.0
    assert by_label["non-targeting"] == 0.0
    effect = [p for p, e in zip(truth["perturbation"], truth["effect"], strict=True) if e > 0]
    pen = truth["penetrance"][truth["effect"] > 0]
    assert np.corrcoef(by_label[effect], pen)[0, 1] > 0.5  # responders follow each perturbation's penetrance
    assert adata.X.min() >= 0
    assert np.all(np.round(adata.X) == adata.X)


@pytest.mark.parametrize("suffix", [".h5ad", ".zarr"])
def test_written_in_blocks_equals_memory(tmp_path, suffix, monkeypatch) -> None:
    monkeypatch.setattr("cellw1.datasets.screen.BLOCK_CELLS", 256)  # several blocks
    path = synthetic_screen(30, 300, 25, seed=1, path=tmp_path / f"screen{suffix}")
    monkeypatch.setattr("cellw1.datasets.screen.BLOCK_CELLS", 256)
    memory = synthetic_screen(30, 300, 25, seed=1)
    disk = ad.read_h5ad(path) if suffix == ".h5ad" else ad.read_zarr(path)
    np.testing.assert_array_equal(disk.X, memory.X)
    assert disk.obs.equals(memory.obs)


def test_bad_settings() -> None:
    with pytest.raises(ConfigError, match="effect_fraction"):
        synthetic_screen(10, 100, 30, effect_fraction=1.5)
    with pytest.raises(InputError, match=".h5ad or .zarr"):
        synthetic_screen(10, 100, 30, path="screen.csv")
