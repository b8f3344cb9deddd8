"""Pairwise confidence, temperature scaling and calibration error on hand-computed values."""
from __future__ import annotations

import math

import numpy as np
import pytest

from ser.calibration import (expected_calibration_error, fit_temperature, pair_probability, precision_threshold,
                             reliability)


def test_temperature_mle_by_hand():
    # 3 pairs ranked right by a gap of 2, 1 ranked wrong by 2: the MLE has sigmoid(2 / T) = 3/4
    assert fit_temperature([2, 2, 2, -2]) == pytest.approx(2 / math.log(3), rel=1e-6)
    # scaling the scores scales T: the fitted probabilities do not depend on the score scale
    assert fit_temperature([20, 20, 20, -20]) == pytest.approx(20 / math.log(3), rel=1e-6)
    assert fit_temperature([1, 2, 3]) == pytest.approx(1e-4, rel=1e-3)  # separable: T at the lower bound
    with pytest.raises(ValueError):
        fit_temperature([])


def test_pair_probability_and_confidence():
    p, conf = pair_probability([1.0, 0.0], [0.0, 1.0], temperature=0.5)
    s = 1 / (1 + math.exp(-2))
    assert p == pytest.approx([s, 1 - s]) and conf == pytest.approx([s, s])


def test_ece_and_reliability_by_hand():
    conf, ok = [0.55, 0.65, 0.95, 0.95], [1, 0, 1, 0]
    bins = reliability(conf, ok)
    assert [(b["n"], b["accuracy"]) for b in bins] == [(1, 1.0), (1, 0.0), (2, 0.5)]
    assert [round(b["low"], 2) for b in bins] == [0.55, 0.65, 0.95]
    assert expected_calibration_error(conf, ok) == pytest.approx(0.45 / 4 + 0.65 / 4 + 0.45 / 2)
    assert expected_calibration_error([1.0, 1.0], [1, 1]) == 0.0  # confidence 1 falls in the last bin
    assert math.isnan(expected_calibration_error([], []))


def test_precision_threshold_by_hand():
    conf, ok = [0.9, 0.8, 0.7, 0.6], [1, 1, 0, 1]  # precision of the top n: 1, 1, 2/3, 3/4
    assert precision_threshold(conf, ok, 0.75, min_pairs=1) == 0.6
    assert precision_threshold(conf, ok, 0.9, min_pairs=1) == 0.8
    assert precision_threshold(conf, ok, 0.75, min_pairs=3) == 0.6
    assert precision_threshold(conf, ok, 1.01, min_pairs=1) is None
    # ties with the cut are kept together: with 0.8 tied, the top set is both 0.8s
    assert precision_threshold([0.9, 0.8, 0.8], [1, 1, 0], 0.8, min_pairs=1) == 0.9
    assert precision_threshold(np.array([0.9, 0.8, 0.8]), np.array([1, 1, 1]), 0.8, min_pairs=1) == 0.8


def test_cross_fitted_calibration():
    from ser.calibration import cross_fitted

    rng = np.random.default_rng(0)
    d = rng.normal(0.5, 1.0, 400) * 10  # a score scale of 10: sigmoid(r1 - r2) is overconfident
    cal = cross_fitted(d, np.zeros_like(d))
    assert cal["ece"] < cal["ece_raw"]  # temperature scaling repairs the scale
    assert cal["temperature"] > 1
    assert sum(b["n"] for b in cal["bins"]) == 400
