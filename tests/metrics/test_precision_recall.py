"""Improved precision/recall (k=3) on point clouds whose supports overlap by known fractions."""

import numpy as np
import pytest
from scipy.spatial.distance import cdist

from ldmkit.metrics.precision_recall import knn_radii, precision_recall


def brute_force(real, fake, k=3):
    def radii(p):
        return np.sort(cdist(p, p), axis=1)[:, k]
    r_real, r_fake = radii(real), radii(fake)
    precision = np.mean([(cdist(f[None], real)[0] <= r_real).any() for f in fake])
    recall = np.mean([(cdist(r[None], fake)[0] <= r_fake).any() for r in real])
    return precision, recall


def test_matches_brute_force_and_is_batch_invariant():
    rng = np.random.default_rng(0)
    real, fake = rng.normal(size=(120, 3)), rng.normal(size=(90, 3)) * 1.5 + 0.5
    expected = brute_force(real, fake)
    assert precision_recall(real, fake, batch_size=7) == pytest.approx(expected)
    assert precision_recall(real, fake, batch_size=1000) == pytest.approx(expected)


def test_radius_excludes_the_point_itself():
    pts = np.array([[0.0], [1.0], [3.0], [6.0], [10.0]])
    # k=1: nearest other point; squared distances.
    np.testing.assert_allclose(knn_radii(__import__("torch").tensor(pts), k=1).numpy(), [1, 1, 4, 9, 16])


def _uniform(rng, n, x0, x1):
    return np.stack([rng.uniform(x0, x1, n), rng.uniform(0, 1, n)], 1)


def test_fake_covers_half_of_real():
    # real ~ U([0,1]^2), fake ~ U([0.5,1] x [0,1]): every fake point lies in the real support (precision 1),
    # half of the real points lie in the fake support (recall 1/2). Tolerances: the union of k-NN balls leaves
    # small holes inside a support (about 1-2% of it for k=3 in 2-D) and overshoots its edge by about
    # sqrt(k / (pi n)) ~ 0.02.
    rng = np.random.default_rng(1)
    p, r = precision_recall(_uniform(rng, 3000, 0, 1), _uniform(rng, 1500, 0.5, 1))
    assert p == pytest.approx(1.0, abs=0.03)
    assert r == pytest.approx(0.5, abs=0.04)


def test_shifted_supports_overlap_by_a_quarter():
    rng = np.random.default_rng(2)
    p, r = precision_recall(_uniform(rng, 3000, 0, 1), _uniform(rng, 3000, 0.75, 1.75))
    assert p == pytest.approx(0.25, abs=0.04)
    assert r == pytest.approx(0.25, abs=0.04)


def test_disjoint_supports():
    rng = np.random.default_rng(3)
    assert precision_recall(_uniform(rng, 500, 0, 1), _uniform(rng, 500, 2, 3)) == (0.0, 0.0)


def test_errors():
    with pytest.raises(ValueError, match="equal D"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 3)))
    with pytest.raises(ValueError, match="more than k"):
        precision_recall(np.zeros((3, 2)), np.zeros((10, 2)))
