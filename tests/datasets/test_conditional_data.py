"""The SYNTHETIC conditional data sets: doses follow their Hill curves, responses follow the vectors."""

from __future__ import annotations

import numpy as np

from cellw1.datasets import synthetic_doses, synthetic_embedded_perturbations


def log_means(adata, mask):
    x = adata.X[mask].toarray()
    return np.log1p(x / x.sum(1, keepdims=True) * 1e4).mean(0)


def test_dose_response_follows_the_hill_curve():
    adata = synthetic_doses(n_control=400, n_per_dose=300, doses=(1.0, 10.0, 100.0), n_genes=40, seed=0)
    labels, doses = adata.obs["condition"].astype(str).to_numpy(), adata.obs["dose"].to_numpy()
    assert sorted(set(doses[labels == "pertA"])) == [1.0, 10.0, 100.0] and set(doses[labels == "control"]) == {0.0}
    genes = adata.var_names.get_indexer(adata.uns["synthetic"]["programs"]["pertA"])
    control = log_means(adata, labels == "control")[genes]
    response = [
        np.abs(log_means(adata, (labels == "pertA") & (doses == d))[genes] - control).mean() for d in (1, 10, 100)
    ]
    assert response[0] < response[1] < response[2]
    assert np.array_equal(
        synthetic_doses(n_control=50, n_per_dose=20, seed=3).X.toarray(),
        synthetic_doses(n_control=50, n_per_dose=20, seed=3).X.toarray(),
    )


def test_embedded_responses_are_smooth_in_the_vectors():
    adata = synthetic_embedded_perturbations(n_control=400, n_perturbed=300, n_perturbations=8, seed=0)
    labels = adata.obs["condition"].astype(str).to_numpy()
    vectors = adata.uns["vectors"]
    assert sorted(vectors) == [f"p{i:02d}" for i in range(8)] and all(v.shape == (4,) for v in vectors.values())
    control = log_means(adata, labels == "control")
    shifts = {n: log_means(adata, labels == n) - control for n in vectors}
    names = sorted(vectors)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    vec = np.array([np.linalg.norm(vectors[a] - vectors[b]) for a, b in pairs])
    resp = np.array([np.linalg.norm(shifts[a] - shifts[b]) for a, b in pairs])
    assert np.corrcoef(vec, resp)[0, 1] > 0.5  # near vectors, near responses
