"""Combinations ("A+B") of the conditional model: order, null members, additive composition, unseen members, files."""

from __future__ import annotations

import json

import numpy as np
import pytest

import cellw1
from cellw1.datasets import synthetic_combinations
from cellw1.errors import InputError
from cellw1.files.model_files import load_tensors, save_tensors
from cellw1.ot.conditional import interaction_test

FAST = cellw1.ConditionalConfig(potential_iters=80, regression_iters=40, energy_iters=20, batch_size=128, eval_every=20)


@pytest.fixture(scope="module")
def data():
    return synthetic_combinations(
        n_control=200, n_per_condition=120, n_singles=3, n_null=1, n_pairs_per_kind=1, n_genes=24, seed=1
    )


@pytest.fixture(scope="module")
def kinds(data):
    return {kind: pair for pair, kind in data.uns["synthetic"]["kinds"].items()}


@pytest.fixture(scope="module")
def model(data, kinds):
    """Trained on every single and every pair but the additive and the null-member ones (unseen pairs)."""
    train = data[~data.obs["condition"].isin([kinds["additive"], kinds["null_member"]])].copy()
    return cellw1.fit_conditional(train, "condition", "control", space="genes", config=FAST, progress=False)


def controls(adata):
    return adata[adata.obs["condition"] == "control"][:100].copy()


def test_order_does_not_matter_bit_for_bit(data, model, kinds):
    ctrl = controls(data)
    for pair in (kinds["additive"], kinds["epistatic"]):  # unseen and trained
        a, b = pair.split("+")
        np.testing.assert_array_equal(
            model.predict(ctrl, perturbation=f"{a}+{b}").X, model.predict(ctrl, perturbation=f"{b}+{a}").X
        )


def test_a_null_member_adds_nothing(data, model, kinds):
    pair = kinds["null_member"]
    (null,) = data.uns["synthetic"]["null_members"]
    (member,) = [m for m in pair.split("+") if m != null]
    assert (null, None) in model.without_response
    ctrl = controls(data)
    together = model.predict(ctrl, perturbation=pair)
    # the member's whole response, as in any combination (test_members_add_their_whole_responses)
    np.testing.assert_array_equal(together.X, model.unshrunk(member).predict(ctrl).X)
    assert (together.obs["perturbation"] == pair).all()


def test_an_unseen_pair_adds_its_members_changes(data, model, kinds):
    # in gene space the model's reconstruction is the input itself: pair = A + B - input, clipped at 0
    pair = kinds["additive"]
    a, b = sorted(pair.split("+"))
    ctrl = controls(data)
    x = model.preprocessor.transform(ctrl.X)
    pred = model.predict(ctrl, perturbation=pair)
    assert pred.uns["cellw1"]["output"] == "calibrated_additive"
    expected = np.maximum(model.unshrunk(a).predict(ctrl).X + model.unshrunk(b).predict(ctrl).X - x, 0.0)
    np.testing.assert_allclose(pred.X, expected, atol=1e-5)


def test_members_add_their_whole_responses(data, model, kinds):
    # each member alone moves a cell its resolved share s < 1 of its map's step; in a pair it adds the whole step
    a, b = sorted(kinds["additive"].split("+"))
    shares = [model.response_share(m, None) for m in (a, b)]
    assert all(0.0 < s < 1.0 for s in shares)
    z = model.embedding.encode(model.preprocessor.transform(controls(data).X))
    for member, share in zip((a, b), shares, strict=True):
        alone, whole = model.view(member).method, model.unshrunk(member).method
        assert alone.response_share == share  # a single condition's prediction keeps its share
        assert whole.response_share == 1.0
        np.testing.assert_allclose(whole.predict(z) - z, (alone.predict(z) - z) / share, rtol=1e-4, atol=1e-5)
    pair = model.view(kinds["additive"]).method
    whole_steps = sum(model.unshrunk(m).method.predict(z) - z for m in (a, b))
    np.testing.assert_allclose(pair.predict(z) - z, whole_steps, rtol=1e-4, atol=1e-5)
    shrunk_steps = sum(model.view(m).method.predict(z) - z for m in (a, b))
    assert np.abs(pair.predict(z) - z).sum() > 1.01 * np.abs(shrunk_steps).sum()


def test_the_interaction_test_knows_additive_from_masked_pairs():
    rng = np.random.default_rng(0)
    a, b = np.zeros(20), np.zeros(20)
    a[:5], b[5:10] = 1.0, -1.0

    def cells(shift):
        return rng.normal(0.0, 1.0, size=(300, 20)) + shift

    control = cells(0.0)
    additive = interaction_test(control, [cells(a), cells(b)], cells(a + b))
    masked = interaction_test(control, [cells(a), cells(b)], cells(a))  # A masks B
    assert additive.p_value > 0.05
    assert not additive.detected(0.05)
    assert masked.p_value < 1e-6
    assert masked.detected(0.05)
    assert masked.share > 0.8
    # |r| is B's shift, sqrt(5) here
    assert abs(masked.distance - np.sqrt(5.0)) < 0.5


def test_an_unseen_member_is_named(data, model, kinds):
    ctrl = controls(data)
    a = kinds["additive"].split("+")[0]
    with pytest.raises(InputError, match=r"'pZZ'.*never seen, alone or in a combination"):
        model.predict(ctrl, perturbation=f"{a}+pZZ")


def test_save_load_keeps_combinations_and_old_files_load(data, model, kinds, tmp_path):
    ctrl = controls(data)
    trained = kinds["epistatic"]
    assert model.interaction(trained) is not None
    assert model.interaction(trained).detected(0.05)
    model.save(tmp_path / "m")
    loaded = cellw1.load(tmp_path / "m")
    assert loaded.interactions == model.interactions
    for pair in (kinds["additive"], trained, kinds["null_member"]):
        np.testing.assert_array_equal(
            model.predict(ctrl, perturbation=pair).X, loaded.predict(ctrl, perturbation=pair).X
        )
    # a file of format version 2 (before the interaction tests) loads; a trained pair is its own map
    tensors, header = load_tensors(tmp_path / "m" / "model.safetensors", kind="model")
    header["format_version"] = 2
    del header["interactions"]
    save_tensors(tmp_path / "m" / "model.safetensors", tensors, header)
    old = cellw1.load(tmp_path / "m")
    assert old.interactions == []
    assert json.loads((tmp_path / "m" / "model.json").read_text())
    np.testing.assert_array_equal(
        old.predict(ctrl, perturbation=trained).X, model.view(trained, compose=False).predict(ctrl).X
    )
    np.testing.assert_array_equal(
        old.predict(ctrl, perturbation=kinds["additive"]).X, model.predict(ctrl, perturbation=kinds["additive"]).X
    )


def test_gene_vectors_follow_co_expression():
    import anndata as ad

    rng = np.random.default_rng(0)
    module = rng.poisson(5.0, size=(200, 1)).astype(np.float32)
    counts = np.hstack([module, module, rng.poisson(5.0, size=(200, 4)), np.full((200, 1), 3.0)]).astype(np.float32)
    adata = ad.AnnData(counts, obs={"target": ["ctrl"] * 200})
    adata.var_names = ["A", "A2", "B", "C", "D", "E", "FLAT"]
    vectors = cellw1.gene_vectors(adata, "target", "ctrl", n_components=3, input_kind="log")
    assert sorted(vectors) == sorted(adata.var_names)
    assert all(v.shape == (3,) for v in vectors.values())
    np.testing.assert_allclose(vectors["A"], vectors["A2"], atol=1e-5)  # the same co-expression, the same vector
    assert np.abs(vectors["A"]).max() > 0.9  # A and A2 make the first component together
    np.testing.assert_array_equal(vectors["FLAT"], 0.0)  # constant in the controls: no direction
    with pytest.raises(InputError, match="n_components"):
        cellw1.gene_vectors(adata, "target", "ctrl", n_components=10, input_kind="log")
