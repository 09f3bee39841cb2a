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


def _rank_deficient_sets(rng):
    """50 samples of 128-d features (rank 49), and 200 samples of rank-3 features with a large offset."""
    rank3 = rng.normal(size=(200, 3)) @ rng.normal(size=(3, 128)) * 10.0 + 5.0
    return [rng.normal(size=(50, 128)), rank3]


@pytest.mark.parametrize("index", [0, 1])
def test_identical_rank_deficient_sets_have_zero_fid(index):
    # sqrtm of the singular sigma @ sigma used to give FID(x, x) < 0 (-4e-6 and -9e-3 for these sets).
    x = _rank_deficient_sets(np.random.default_rng(7))[index]
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-8)
    mu, sigma = gaussian_stats(x)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def _fid_from_centered_features(f1, f2):
    """Independent route: tr (S1 S2)^1/2 = nuclear norm of A B^T / sqrt((N1-1)(N2-1)), A, B centered features
    (the non-zero eigenvalues of S1 S2 are those of A S2 A^T / (N1-1), i.e. sigma(A B^T)^2 / ((N1-1)(N2-1)))."""
    a, b = f1 - f1.mean(0), f2 - f2.mean(0)
    nuclear = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt((len(a) - 1) * (len(b) - 1))
    diff = f1.mean(0) - f2.mean(0)
    return float(diff @ diff + (a**2).sum() / (len(a) - 1) + (b**2).sum() / (len(b) - 1) - 2 * nuclear)


def test_different_rank_deficient_sets_match_independent_computation():
    rng = np.random.default_rng(8)
    x50, x3 = _rank_deficient_sets(rng)
    y50 = rng.normal(size=(50, 128)) * 1.5 + 0.2
    y3 = rng.normal(size=(150, 3)) @ rng.normal(size=(3, 128)) * 10.0 + 4.0
    for f1, f2 in [(x50, y50), (x3, y3), (x50, x3)]:
        assert fid_from_features(f1, f2) == pytest.approx(_fid_from_centered_features(f1, f2), rel=1e-9)


def test_full_rank_sets_match_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    rng = np.random.default_rng(9)
    f1 = rng.normal(size=(400, 16)) @ rng.normal(size=(16, 16))
    f2 = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16)) + 0.3
    (mu1, s1), (mu2, s2) = gaussian_stats(f1), gaussian_stats(f2)
    covmean = linalg.sqrtm(s1 @ s2).real
    expected = float((mu1 - mu2) @ (mu1 - mu2) + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    assert fid_from_features(f1, f2) == pytest.approx(expected, rel=1e-9)


def test_non_covariance_inputs_are_errors():
    with pytest.raises(ValueError, match="sigma2 is not symmetric"):
        frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.array([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="sigma1 is not positive semi-definite"):
        frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))
