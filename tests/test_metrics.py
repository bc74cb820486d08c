"""benchmark.metrics: the one accuracy and log loss that members, ensembles and reports share."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import accuracy_score
from sklearn.metrics import log_loss as sklearn_log_loss

from benchmark import metrics
from benchmark.metrics import EPS, accuracy, log_loss

PROBS = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]])
LABELS = np.array([0, 1, 1])


def test_known_values():
    assert accuracy(PROBS, LABELS) == pytest.approx(2 / 3)
    assert accuracy(PROBS.argmax(axis=1), LABELS) == pytest.approx(2 / 3)  # predicted classes
    assert log_loss(PROBS, LABELS) == pytest.approx(
        -(math.log(0.9) + math.log(0.8) + math.log(0.4)) / 3
    )
    assert log_loss(np.eye(3), [0, 1, 2]) == 0.0


def test_empty_input_is_nan_not_zero():
    for score in (
        accuracy(np.zeros((0, 10)), []),
        accuracy(np.zeros(0, int), []),
        log_loss(np.zeros((0, 10)), np.zeros(0, int)),
    ):
        assert math.isnan(score)


def test_log_loss_clips_a_zero_probability_to_eps():
    assert log_loss([[1.0, 0.0]], [1]) == pytest.approx(-math.log(EPS))  # finite: about 16.1
    assert np.isfinite(log_loss(np.zeros((4, 3)), [0, 1, 2, 0]))


def test_agrees_with_sklearn_on_probabilities_above_eps():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(10), size=500)
    probs = np.clip(probs, 1e-6, None)
    probs /= probs.sum(axis=1, keepdims=True)
    labels = rng.integers(0, 10, size=500)
    assert accuracy(probs, labels) == accuracy_score(labels, probs.argmax(axis=1))
    assert log_loss(probs, labels) == pytest.approx(
        sklearn_log_loss(labels, probs, labels=np.arange(10)), rel=1e-12
    )


def test_a_member_and_a_one_member_ensemble_of_it_score_the_same_loss():
    """float32 member predictions and their float64 average tie exactly: the ranking's tie-break."""
    probs = np.random.default_rng(1).dirichlet(np.ones(10), size=2000).astype(np.float32)
    y = np.random.default_rng(2).integers(0, 10, size=2000)
    assert log_loss(probs, y) == log_loss(probs.astype(np.float64) * 1.0, y)
    before = float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))))
    assert log_loss(probs, y) == pytest.approx(before, rel=1e-6)


def test_mismatched_or_misshapen_input_is_a_clear_error():
    with pytest.raises(ValueError, match="labels must be a 1-D array of 3 class indices"):
        accuracy(PROBS, [0, 1])
    with pytest.raises(ValueError, match="log_loss needs"):
        log_loss(np.zeros(3), [0, 1, 2])


def test_every_caller_uses_this_definition():
    from ensembles import build, methods

    assert methods.log_loss is metrics.log_loss
    assert build.accuracy is metrics.accuracy and build.log_loss is metrics.log_loss


def test_importing_metrics_imports_no_keras():
    code = "import sys, benchmark.metrics; assert 'keras' not in sys.modules, 'keras imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
