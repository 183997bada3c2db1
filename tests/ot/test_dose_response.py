"""Dose-response curves (cellw1.ot.conditional.dose_response): known Hill curves, one direction or not, the weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from cellw1.ot.conditional import DoseResponse, fit_dose_response

DOSES = [0.1, 0.3, 1.0, 10.0]
V = np.concatenate([[2.0, -1.0, 0.5], np.zeros(17)])  # 20 genes, 3 respond


def hill(d, ec50=1.0, slope=1.5):
    return d**slope / (d**slope + ec50**slope)


def groups(shift_of, doses=DOSES, n=4000, seed=0):
    rng = np.random.default_rng(seed)
    control = rng.normal(size=(n, V.size))
    return control, [rng.normal(size=(n, V.size)) + shift_of(d) for d in doses]


def test_hill_curve_recovered():
    """Shifts h(d) v with h a Hill curve (ec50 1, slope 1.5): the fit finds it, and the weights
    of the training doses' displacements give the shift of an unseen dose between them.
    """
    control, cells = groups(lambda d: hill(d) * V)
    curve = fit_dose_response(DOSES, control, cells)
    assert curve is not None
    assert curve.hill is not None
    assert curve.residual < 3.0
    top, ec50, slope = curve.hill
    assert ec50 == pytest.approx(1.0, rel=0.15)
    assert slope == pytest.approx(1.5, rel=0.2)
    assert top == pytest.approx(1.0 / hill(10.0), rel=0.05)  # magnitudes are relative to the largest dose
    np.testing.assert_allclose(curve.magnitudes, [hill(d) / hill(10.0) for d in DOSES], atol=0.02)
    blended = sum(a * hill(d) * V for a, d in zip(curve.weights(3.0), DOSES, strict=True))
    np.testing.assert_allclose(blended, hill(3.0) * V, atol=0.03)
    # linear interpolation in log dose between 1 and 10 is 0.11 off at dose 3
    w = (np.log(3.0) - np.log(1.0)) / (np.log(10.0) - np.log(1.0))
    assert abs((1 - w) * hill(1.0) + w * hill(10.0) - hill(3.0)) > 0.1
    assert curve.covers(3.0)
    assert not curve.covers(20.0)


def test_direction_that_turns_is_refused(caplog):
    """Low doses move along one gene, high doses along another: no curve, and the log says why."""
    a, b = np.eye(V.size)[0] * 2.0, np.eye(V.size)[1] * 2.0
    control, cells = groups(lambda d: a if d < 1.0 else b)
    with caplog.at_level(logging.INFO, logger="cellw1"):
        assert fit_dose_response(DOSES, control, cells, name="'drugX'") is None
    assert "doses of 'drugX' do not share one response direction" in caplog.text


def test_too_few_doses_or_no_shift():
    control, cells = groups(lambda d: hill(d) * V)
    assert fit_dose_response(DOSES[:2], control, cells[:2]) is None
    control, cells = groups(lambda d: 0.0 * V)
    assert fit_dose_response(DOSES, control, cells) is None


def test_not_a_hill_curve_interpolates_linearly():
    """A response that rises then falls keeps its direction but is no Hill curve: the magnitudes are
    interpolated in log1p(dose).
    """
    size = {0.1: 0.2, 0.3: 1.0, 1.0: 0.3, 10.0: 0.9}
    control, cells = groups(lambda d: size[d] * V)
    curve = fit_dose_response(DOSES, control, cells)
    assert curve is not None
    assert curve.hill is None
    np.testing.assert_allclose(curve.magnitudes, [size[d] for d in DOSES], atol=0.02)
    expected = np.interp(np.log1p(3.0), np.log1p(DOSES), curve.magnitudes)
    assert float(curve.magnitude(3.0)) == pytest.approx(expected, abs=1e-12)


def test_round_trip_and_order():
    control, cells = groups(lambda d: hill(d) * V)
    curve = fit_dose_response(DOSES[::-1], control, cells[::-1])  # any order in, ascending out
    assert curve is not None
    assert curve.doses == tuple(DOSES)
    assert DoseResponse.from_dict(curve.to_dict()) == curve
