"""Inception Score against hand-computed cases."""

import math

import numpy as np
import pytest

from ldmkit.metrics.inception_score import inception_score


def test_uninformative_classifier_scores_one():
    assert inception_score(np.zeros((100, 10)), splits=5)[0] == pytest.approx(1.0)


def test_confident_balanced_classifier_scores_num_classes():
    logits = 50.0 * np.eye(10)[np.arange(1000) % 10]
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(10.0, rel=1e-6) and std < 1e-6


def test_two_class_hand_computed():
    # p(y|x) = (0.9, 0.1) for half the samples and (0.1, 0.9) for the rest; p(y) = (0.5, 0.5).
    p = np.array([[0.9, 0.1]] * 50 + [[0.1, 0.9]] * 50)
    kl = 0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5)
    assert inception_score(np.log(p), splits=1)[0] == pytest.approx(math.exp(kl), rel=1e-12)


def test_too_few_samples_for_splits():
    with pytest.raises(ValueError, match="splits"):
        inception_score(np.zeros((5, 3)), splits=10)
