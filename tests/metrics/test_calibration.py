"""ECE and temperature scaling against hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from cellbench.metrics.calibration import expected_calibration_error, fit_temperature, nll, softmax


def test_ece_of_a_perfectly_calibrated_and_of_an_overconfident_model():
    # 10 samples at confidence 0.8, 8 correct: calibrated, ECE 0
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0)
    # confidence 0.99 with 50% right: ECE = 0.49
    probs = np.tile([0.99, 0.01], (10, 1))
    labels = np.array([0] * 5 + [1] * 5)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.49)


def test_temperature_recovers_the_scale_of_overconfident_logits():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 5)) * 2.0
    labels = np.array([rng.choice(5, p=p) for p in softmax(true_logits)])
    overconfident = true_logits * 3.0  # what an overfitted head outputs
    t = fit_temperature(overconfident, labels)
    assert t == pytest.approx(3.0, rel=0.1)
    assert nll(overconfident, labels, t) < nll(overconfident, labels)
    before = expected_calibration_error(softmax(overconfident), labels)
    after = expected_calibration_error(softmax(overconfident, t), labels)
    assert after < before / 2
    assert (softmax(overconfident, t).argmax(1) == overconfident.argmax(1)).all()
