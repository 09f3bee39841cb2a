"""Frechet distance against closed forms: 1-D, commuting (diagonal) and general Gaussians."""

import numpy as np
import pytest

from ldmkit.metrics.fid import fid_from_features, frechet_distance, gaussian_stats


def _spd(rng, d):
    a = rng.normal(size=(d, d))
    return a @ a.T + 0.1 * np.eye(d)


def _psd_sqrt(m):
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def closed_form(mu1, s1, mu2, s2):
    """d^2 = |mu1-mu2|^2 + tr(S1 + S2 - 2 (S1^1/2 S2 S1^1/2)^1/2), via symmetric eigendecompositions."""
    r1 = _psd_sqrt(s1)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(_psd_sqrt(r1 @ s2 @ r1)))


def test_one_dimensional_gaussians():
    # W2^2 between N(m1, s1^2) and N(m2, s2^2) is (m1-m2)^2 + (s1-s2)^2.
    assert frechet_distance([1.0], [[4.0]], [-2.0], [[0.25]]) == pytest.approx(9.0 + 1.5 ** 2, rel=1e-12)


def test_diagonal_gaussians():
    rng = np.random.default_rng(0)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_general_gaussians_match_closed_form(seed):
    rng = np.random.default_rng(seed)
    d = 8
    mu1, mu2, s1, s2 = rng.normal(size=d), rng.normal(size=d), _spd(rng, d), _spd(rng, d)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(closed_form(mu1, s1, mu2, s2), rel=1e-8)
    assert frechet_distance(mu1, s1, mu1, s1) == pytest.approx(0.0, abs=1e-8)


def test_rank_deficient_covariances_are_handled():
    # Fewer samples than dimensions: singular covariances; result must be finite and match the closed form.
    rng = np.random.default_rng(4)
    f1, f2 = rng.normal(size=(5, 12)), rng.normal(size=(5, 12)) + 0.5
    mu1, s1 = gaussian_stats(f1)
    mu2, s2 = gaussian_stats(f2)
    value = fid_from_features(f1, f2)
    assert np.isfinite(value) and value >= 0
    assert value == pytest.approx(closed_form(mu1, s1, mu2, s2), rel=1e-4, abs=1e-4)


def test_large_imaginary_component_is_an_error():
    # A "covariance" with a negative eigenvalue has no real square root: refuse rather than drop it silently.
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def test_gaussian_stats_and_shape_errors():
    rng = np.random.default_rng(5)
    f = rng.normal(size=(50, 3))
    mu, sigma = gaussian_stats(f)
    np.testing.assert_allclose(mu, f.mean(0))
    np.testing.assert_allclose(sigma, (f - f.mean(0)).T @ (f - f.mean(0)) / 49)
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(3), np.eye(3))
    with pytest.raises(ValueError, match="N >= 2"):
        gaussian_stats(np.zeros((1, 3)))


def test_sample_fid_converges_to_population_value():
    # FID of samples from two known Gaussians approaches the closed form as N grows (bias ~ 1/N).
    rng = np.random.default_rng(6)
    d = 4
    s1, s2 = _spd(rng, d), _spd(rng, d)
    mu2 = np.full(d, 0.3)
    truth = closed_form(np.zeros(d), s1, mu2, s2)
    f1 = rng.multivariate_normal(np.zeros(d), s1, size=200_000)
    f2 = rng.multivariate_normal(mu2, s2, size=200_000)
    assert fid_from_features(f1, f2) == pytest.approx(truth, rel=0.02)
