"""The SYNTHETIC conditional data sets: doses follow their Hill curves, responses follow the vectors."""

from __future__ import annotations

import numpy as np
import pytest

from cellw1.datasets import synthetic_doses, synthetic_embedded_perturbations
from cellw1.errors import InputError


def log_means(adata, mask):
    x = adata.X[mask].toarray()
    return np.log1p(x / x.sum(1, keepdims=True) * 1e4).mean(0)


def test_dose_response_follows_the_hill_curve():
    adata = synthetic_doses(n_control=400, n_per_dose=300, doses=(1.0, 10.0, 100.0), n_genes=40, seed=0)
    labels, doses = adata.obs["condition"].astype(str).to_numpy(), adata.obs["dose"].to_numpy()
    assert sorted(set(doses[labels == "pertA"])) == [1.0, 10.0, 100.0]
    assert set(doses[labels == "control"]) == {0.0}
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
    assert sorted(vectors) == [f"p{i:02d}" for i in range(8)]
    assert all(v.shape == (4,) for v in vectors.values())
    control = log_means(adata, labels == "control")
    shifts = {n: log_means(adata, labels == n) - control for n in vectors}
    names = sorted(vectors)
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    vec = np.array([np.linalg.norm(vectors[a] - vectors[b]) for a, b in pairs])
    resp = np.array([np.linalg.norm(shifts[a] - shifts[b]) for a, b in pairs])
    assert np.corrcoef(vec, resp)[0, 1] > 0.5  # near vectors, near responses


def test_combination_kinds_follow_their_truth():
    from cellw1.datasets import synthetic_combinations

    adata = synthetic_combinations(n_control=600, n_per_condition=400, n_pairs_per_kind=2, n_genes=40, seed=0)
    truth = adata.uns["synthetic"]
    labels = adata.obs["condition"].astype(str).to_numpy()
    assert sorted(set(truth["kinds"].values())) == ["additive", "epistatic", "null_member", "synergistic"]
    control = log_means(adata, labels == "control")

    def shift(label):
        return log_means(adata, labels == label) - control

    gaps = {}  # how far each pair is from the sum of its members (L2 over genes)
    for pair, kind in truth["kinds"].items():
        a, b = pair.split("+")
        gaps[pair] = np.linalg.norm(shift(pair) - shift(a) - shift(b))
        if kind == "epistatic":  # the pair is its masking member alone
            assert np.linalg.norm(shift(pair) - shift(truth["masking"][pair])) < 0.5 * gaps[pair]
        if kind == "synergistic":  # the interaction raises its own program
            genes = adata.var_names.get_indexer(truth["interaction_programs"][pair])
            assert (shift(pair) - shift(a) - shift(b))[genes].mean() > 0.5
    adds = [g for p, g in gaps.items() if truth["kinds"][p] in ("additive", "null_member")]
    departs = [g for p, g in gaps.items() if truth["kinds"][p] in ("synergistic", "epistatic")]
    assert max(adds) < min(departs)
    # a null single moves no more than sampling noise (two halves of the controls); a responding one does
    rows = np.flatnonzero(labels == "control")
    noise = np.linalg.norm(log_means(adata, rows[::2]) - log_means(adata, rows[1::2]))
    assert all(np.linalg.norm(shift(n)) < 2 * noise for n in truth["null_members"])
    assert all(np.linalg.norm(shift(p)) > 2 * noise for p in truth["programs"])


def test_synthetic_doses_takes_one_dose_or_close_doses_and_names_bad_ones() -> None:
    one = synthetic_doses(n_control=50, n_per_dose=20, doses=(10.0,), n_genes=12, seed=0)
    assert sorted(set(one.obs["dose"])) == [0.0, 10.0]
    assert one.uns["synthetic"]["ec50"]["pertA"] == pytest.approx(10.0)  # the geometric middle of one dose
    close = synthetic_doses(n_control=50, n_per_dose=20, doses=(2.0, 8.0), n_genes=12, seed=0)
    assert close.uns["synthetic"]["ec50"]["pertA"] == pytest.approx(4.0)
    for bad in ((), (0.0, 1.0), (-1.0,), ("a",), (float("nan"),)):
        with pytest.raises(InputError, match="doses"):
            synthetic_doses(doses=bad)
