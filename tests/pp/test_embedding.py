"""Embeddings (genes, PCA, autoencoder) against known answers, and their storage round trip."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from cellw1.errors import ConfigError, InputError, ModelFileError
from cellw1.files.model_files import load_tensors, save_tensors
from cellw1.pp.autoencoder import Autoencoder
from cellw1.pp.embedding import EmbeddingConfig, GeneSpace
from cellw1.pp.pca import PCAEmbedding, principal_components
from cellw1.pp.spaces import EMBEDDINGS, fit_embedding, load_embedding

#: a short autoencoder schedule for tests
SHORT = EmbeddingConfig(ae_max_iters=400, ae_eval_every=50, ae_patience=400)


def low_rank(n: int, g: int, rank: int, seed: int, noise: float = 0.0, cell_seed: int | None = None) -> np.ndarray:
    """Cells on a ``rank``-dimensional affine subspace of ``R^g`` (plus optional noise).

    The subspace depends on ``seed`` only; ``cell_seed`` draws other cells on the same one.
    """
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.normal(size=(g, rank)))[0].T * np.linspace(3.0, 1.0, rank)[:, None]
    offset = rng.normal(size=g)
    if cell_seed is not None:
        rng = np.random.default_rng([seed, cell_seed])
    x = rng.normal(size=(n, rank)) @ basis + offset + noise * rng.normal(size=(n, g))
    return x.astype(np.float32)


@pytest.fixture(scope="module")
def cells() -> np.ndarray:
    return low_rank(317, 23, 5, seed=0)


@pytest.fixture(scope="module")
def fitted(cells) -> dict[str, object]:
    return {
        "genes": fit_embedding("genes", cells),
        "pca": fit_embedding("pca", cells, config=EmbeddingConfig(n_components=5)),
        "autoencoder": fit_embedding("autoencoder", cells, config=SHORT),
    }


# -- genes -------------------------------------------------------------------------------------
def test_gene_space_is_the_identity(cells) -> None:
    emb = fit_embedding("genes", cells)
    assert isinstance(emb, GeneSpace)
    assert emb.kind == "genes"
    assert emb.dim == emb.n_features == 23
    z = emb.encode(cells)
    np.testing.assert_array_equal(z, cells)
    np.testing.assert_array_equal(emb.decode(z), cells)
    assert z.dtype == np.float32
    assert not np.shares_memory(z, cells)
    np.testing.assert_array_equal(emb.encode(cells.astype(np.float64)), cells)


# -- PCA ---------------------------------------------------------------------------------------
def test_pca_reconstructs_cells_on_a_subspace_and_has_orthonormal_components(cells) -> None:
    emb = fit_embedding("pca", cells, config=EmbeddingConfig(n_components=5))
    assert isinstance(emb, PCAEmbedding)
    assert emb.dim == 5
    assert emb.n_features == 23
    z = emb.encode(cells)
    assert z.shape == (317, 5)
    assert z.dtype == np.float32
    assert np.abs(emb.decode(z) - cells).max() < 1e-4
    np.testing.assert_allclose(emb.components @ emb.components.T, np.eye(5), atol=1e-5)
    assert emb.info["explained_variance_ratio"] == pytest.approx(1.0, abs=1e-6)
    # fresh cells from the same subspace are reconstructed too; cells off it are not
    fresh = low_rank(50, 23, 5, seed=0, cell_seed=1)
    assert np.abs(emb.decode(emb.encode(fresh)) - fresh).max() < 1e-4
    off = fresh + np.random.default_rng(9).normal(size=fresh.shape).astype(np.float32)
    assert np.abs(emb.decode(emb.encode(off)) - off).max() > 0.1


def test_pca_matches_the_covariance_eigendecomposition() -> None:
    """Known answer: the components are the top eigenvectors of the sample covariance."""
    rng = np.random.default_rng(1)
    rotation = np.linalg.qr(rng.normal(size=(6, 6)))[0]
    x = (rng.normal(size=(401, 6)) * [3.0, 2.0, 1.0, 0.5, 0.2, 0.1]) @ rotation.T
    emb = fit_embedding("pca", x, config=EmbeddingConfig(n_components=3))
    values, vectors = np.linalg.eigh(np.cov(x.T))
    np.testing.assert_allclose(emb.explained_variance, values[::-1][:3], rtol=1e-5)
    overlap = np.abs(emb.components @ vectors[:, ::-1][:, :3])
    np.testing.assert_allclose(overlap, np.eye(3), atol=1e-4)
    np.testing.assert_allclose(emb.mean, x.mean(0), atol=1e-6)
    # encode is the centred projection
    np.testing.assert_allclose(emb.encode(x), (x - x.mean(0)) @ emb.components.T, atol=1e-4)


def test_randomized_and_exact_pca_agree() -> None:
    x = low_rank(600, 300, 10, seed=2, noise=0.05)
    exact = principal_components(x, 10, solver="exact")
    approx = principal_components(x, 10, solver="randomized", seed=3)
    np.testing.assert_allclose(approx[0], exact[0])
    np.testing.assert_allclose(approx[2], exact[2], rtol=1e-4)
    np.testing.assert_allclose(np.abs(approx[1] @ exact[1].T), np.eye(10), atol=1e-4)
    np.testing.assert_allclose(approx[3], exact[3], rtol=1e-5)
    # the same orientation convention: not just the same subspace, the same vectors
    np.testing.assert_allclose(approx[1], exact[1], atol=1e-4)
    with pytest.raises(ConfigError, match="unknown PCA solver"):
        principal_components(x, 3, solver="arpack")  # type: ignore[arg-type]


def test_pca_components_are_clipped_with_a_note(caplog) -> None:
    x = low_rank(12, 30, 4, seed=4, noise=0.1)
    with caplog.at_level(logging.INFO, logger="cellw1.pp.pca"):
        emb = fit_embedding("pca", x)  # default 50 components
    assert emb.dim == 11  # n_cells - 1
    assert "n_components=50 reduced to 11" in caplog.text
    assert fit_embedding("pca", low_rank(100, 7, 3, seed=4)).dim == 7  # n_features


# -- autoencoder -------------------------------------------------------------------------------
def test_autoencoder_reconstructs_held_out_low_rank_cells() -> None:
    train = low_rank(700, 40, 3, seed=5, noise=0.01)
    test = low_rank(200, 40, 3, seed=5, noise=0.01, cell_seed=1)  # other cells, same subspace
    emb = fit_embedding("autoencoder", train, config=EmbeddingConfig(ae_max_iters=1200, ae_eval_every=100))
    # the 4i setting
    assert isinstance(emb, Autoencoder)
    assert emb.dim == 8
    assert emb.net.hidden == (32, 32)
    error = float(np.mean((emb.decode(emb.encode(test)) - test) ** 2))
    variance = float(test.var(0).mean())
    assert error < 0.01 * variance, (error, variance)
    assert emb.info["val_loss"] < 0.01 * emb.info["val_variance"]


def test_early_stopping_triggers_and_keeps_the_best_state() -> None:
    noise = np.random.default_rng(7).normal(size=(300, 30)).astype(np.float32)  # nothing to learn
    config = EmbeddingConfig(ae_max_iters=5000, ae_eval_every=10, ae_patience=30, ae_latent=2)
    emb = fit_embedding("autoencoder", noise, config=config)
    info = emb.info
    assert info["stopped_early"]
    assert info["steps"] < 5000
    assert info["steps"] - info["best_step"] >= 30
    history = emb.history
    assert info["val_loss"] == min(history["val_loss"])
    assert history["step"][int(np.argmin(history["val_loss"]))] == info["best_step"]
    assert len(history["step"]) == info["steps"] // 10
    assert history["best_step"] == [info["best_step"]]
    assert history["stopped_at"] == [info["steps"]]


def test_autoencoder_is_seeded_and_leaves_the_global_rng_alone(cells) -> None:
    config = EmbeddingConfig(ae_max_iters=60, ae_eval_every=20, ae_activation="silu")
    state = torch.random.get_rng_state()
    a = fit_embedding("autoencoder", cells, config=config, seed=3)
    assert torch.equal(torch.random.get_rng_state(), state)
    b = fit_embedding("autoencoder", cells, config=config, seed=3)
    c = fit_embedding("autoencoder", cells, config=config, seed=4)
    np.testing.assert_array_equal(a.encode(cells), b.encode(cells))
    assert not np.allclose(a.encode(cells), c.encode(cells))
    assert isinstance(a.net.encoder[1], torch.nn.SiLU)


def test_autoencoder_default_sizes_for_expression_data() -> None:
    x = np.random.default_rng(8).normal(size=(40, 120)).astype(np.float32)
    emb = fit_embedding("autoencoder", x, config=EmbeddingConfig(ae_max_iters=2, ae_eval_every=1))
    assert emb.net.hidden == (512, 512)
    assert emb.dim == 50
    assert emb.encode(x).shape == (40, 50)
    assert emb.decode(emb.encode(x)).shape == (40, 120)


def test_progress_bar_can_be_turned_off(cells, capsys) -> None:
    config = EmbeddingConfig(ae_max_iters=5, ae_eval_every=5)
    fit_embedding("autoencoder", cells, config=config, progress=False)
    assert capsys.readouterr().err == ""
    fit_embedding("autoencoder", cells, config=config, progress=True)
    assert "autoencoder" in capsys.readouterr().err


# -- storage -----------------------------------------------------------------------------------
@pytest.mark.parametrize("space", list(EMBEDDINGS))
def test_state_round_trip_is_exact(fitted, cells, space, tmp_path) -> None:
    emb = fitted[space]
    path = save_tensors(tmp_path / "emb.safetensors", emb.state_tensors(), emb.header())
    tensors, header = load_tensors(path, kind="embedding")
    again = load_embedding(tensors, header)
    assert type(again) is type(emb)
    assert again.dim == emb.dim
    assert again.n_features == emb.n_features
    z = emb.encode(cells)
    np.testing.assert_array_equal(again.encode(cells), z)
    np.testing.assert_array_equal(again.decode(z), emb.decode(z))
    assert again.header() == emb.header()


def test_broken_state_is_a_model_file_error(fitted) -> None:
    pca, ae = fitted["pca"], fitted["autoencoder"]
    with pytest.raises(ModelFileError, match="unknown embedding kind 'umap'"):
        load_embedding({}, {**pca.header(), "kind": "umap"})
    tensors = pca.state_tensors()
    tensors["components"] = tensors["components"][:, :4]
    with pytest.raises(ModelFileError, match="does not match"):
        load_embedding(tensors, pca.header())
    tensors = ae.state_tensors()
    del tensors["decoder.0.bias"]
    with pytest.raises(ModelFileError, match="does not match"):
        load_embedding(tensors, ae.header())
    with pytest.raises(ModelFileError, match="not 'pca'"):
        PCAEmbedding.from_state(ae.state_tensors(), ae.header())


# -- errors ------------------------------------------------------------------------------------
def test_unknown_space_lists_the_names(cells) -> None:
    with pytest.raises(ConfigError, match="unknown space 'umap'; use one of 'genes', 'pca', 'autoencoder'"):
        fit_embedding("umap", cells)


@pytest.mark.parametrize("space", list(EMBEDDINGS))
def test_wrong_number_of_features_names_expected_and_got(fitted, cells, space) -> None:
    emb = fitted[space]
    with pytest.raises(InputError, match=f"x has 22 features but the {space} embedding was fitted on 23"):
        emb.encode(cells[:, :22])
    with pytest.raises(InputError, match=f"z has {emb.dim + 1} columns but the {space} embedding has {emb.dim} latent"):
        emb.decode(np.zeros((3, emb.dim + 1), np.float32))


def test_bad_inputs_and_configs(cells) -> None:
    bad = cells.copy()
    bad[3, 2] = np.nan
    with pytest.raises(InputError, match="NaN or inf in 1 rows"):
        fit_embedding("pca", bad)
    with pytest.raises(InputError, match="at least 2"):
        fit_embedding("pca", cells[:1])
    with pytest.raises(InputError, match="2-D"):
        fit_embedding("genes", cells[0])
    with pytest.raises(ConfigError, match="ae_activation"):
        EmbeddingConfig(ae_activation="tanh")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ae_val_fraction"):
        EmbeddingConfig(ae_val_fraction=0.7)
    with pytest.raises(ConfigError, match="n_components"):
        EmbeddingConfig(n_components=0)
    assert EmbeddingConfig.from_dict(SHORT.to_dict()) == SHORT


@pytest.mark.parametrize("space", list(EMBEDDINGS))
def test_inputs_are_not_modified(fitted, cells, space) -> None:
    x = cells.copy()
    emb = fit_embedding(space, x, config=EmbeddingConfig(n_components=4, ae_max_iters=3, ae_eval_every=1))
    z = emb.encode(x)
    z_before = z.copy()
    emb.decode(z)
    np.testing.assert_array_equal(x, cells)
    np.testing.assert_array_equal(z, z_before)
