"""Known answers of the Systema metrics (:mod:`cellw1.eval.systema`) and the response distribution (:mod:`cellw1.eval.response`)."""

from __future__ import annotations

import numpy as np
import pytest

from cellw1.errors import InputError
from cellw1.eval.response import ResponseAxis, responder_share, response_distance
from cellw1.eval.systema import centroid_accuracy, pearson_delta


@pytest.fixture(scope="module")
def groups() -> list[np.ndarray]:
    """Four perturbations of 37 cells x 11 genes, each shifted on its own genes."""
    rng = np.random.default_rng(0)
    out = []
    for k in range(4):
        shift = np.zeros(11)
        shift[2 * k : 2 * k + 3] = 1.5 + k
        out.append(rng.normal(size=(37, 11)) + shift)
    return out


def test_pearson_delta_from_the_perturbed_centroid_is_1_for_the_truth(groups):
    centroid = np.concatenate(groups).mean(0)
    truth = groups[1]
    assert pearson_delta(truth, truth, centroid) == pytest.approx(1.0)
    # a prediction at the centroid has no change of its own: its correlation is undefined or near 0, never 1
    noisy_centroid = centroid + np.random.default_rng(1).normal(scale=1e-3, size=(5, 11))
    assert abs(pearson_delta(noisy_centroid, truth, centroid)) < 0.9


def test_pearson_delta_is_undefined_for_a_constant_change():
    ref = np.zeros(3)
    assert np.isnan(pearson_delta(np.ones((4, 3)), np.arange(12.0).reshape(4, 3), ref))
    with pytest.raises(InputError, match="features"):
        pearson_delta(np.ones((4, 3)), np.ones((4, 3)), np.zeros(2))


def test_centroid_accuracy_is_1_for_the_observed_cells(groups):
    centroids = np.stack([g.mean(0) for g in groups])
    assert [centroid_accuracy(g, centroids, k) for k, g in enumerate(groups)] == [1.0] * 4
    # another perturbation's cells are nearest their own centroid, not this one's
    assert centroid_accuracy(groups[2], centroids, 0) == 0.0
    with pytest.raises(InputError, match="k >= 2"):
        centroid_accuracy(groups[0], centroids[:1], 0)


def test_response_distance_is_0_for_identical_samples_and_the_shift_for_a_translated_one():
    scores = np.random.default_rng(2).gamma(2.0, size=173)
    assert response_distance(scores, scores) == pytest.approx(0.0, abs=1e-12)
    assert response_distance(scores + 0.37, scores) == pytest.approx(0.37)
    assert response_distance(scores, scores - 1.25) == pytest.approx(1.25)


def test_response_scores_put_controls_at_0_and_the_mean_response_at_1(groups):
    rng = np.random.default_rng(3)
    control, perturbed = rng.normal(size=(29, 11)), groups[0]
    axis = ResponseAxis.fit(control, perturbed)
    assert axis.scores(control).mean() == pytest.approx(0.0, abs=1e-12)
    assert axis.scores(perturbed).mean() == pytest.approx(1.0)
    # cells translated by half the response along the axis score 0.5 higher; orthogonal moves change nothing
    direction = perturbed.mean(0) - control.mean(0)
    assert axis.scores(control + 0.5 * direction).mean() == pytest.approx(0.5)
    with pytest.raises(InputError, match="length 0"):
        ResponseAxis.fit(control, control).scores(control)


def test_responder_share_counts_scores_above_half_the_response():
    assert responder_share([0.0, 0.4, 0.5, 0.6, 2.0]) == pytest.approx(0.4)  # 0.5 itself is not above
    assert responder_share([0.0, 0.4], threshold=0.3) == pytest.approx(0.5)
