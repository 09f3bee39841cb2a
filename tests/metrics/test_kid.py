"""KID: the estimator equals a brute-force sum, is unbiased, and separates different distributions."""

import numpy as np
import pytest

from ldmkit.metrics.kid import kernel_inception_distance, mmd2_unbiased, polynomial_kernel


def brute_force_mmd2(x, y):
    m, d = len(x), x.shape[1]
    k = lambda a, b: (a @ b / d + 1.0) ** 3
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m ** 2
    return xx + yy - 2 * xy


def test_matches_brute_force():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.3
    assert mmd2_unbiased(x, y) == pytest.approx(brute_force_mmd2(x, y), rel=1e-12)
    assert polynomial_kernel(np.ones((1, 4)), np.ones((1, 4)))[0, 0] == pytest.approx(8.0)


def test_unbiased_for_one_distribution():
    # Mean over many independent small-sample draws is ~0 (within 4 standard errors); the biased V-statistic
    # (diagonal terms kept) on the same draws is clearly positive, so this test can tell the two apart.
    rng = np.random.default_rng(1)
    m, reps, d = 10, 400, 8
    unbiased, biased = [], []
    for _ in range(reps):
        x, y = rng.normal(size=(m, d)), rng.normal(size=(m, d))
        unbiased.append(mmd2_unbiased(x, y))
        kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
        biased.append(kxx.mean() + kyy.mean() - 2 * kxy.mean())
    unbiased, biased = np.array(unbiased), np.array(biased)
    se = unbiased.std() / np.sqrt(reps)
    assert abs(unbiased.mean()) < 4 * se
    assert biased.mean() > 4 * biased.std() / np.sqrt(reps)


def test_kid_same_vs_different_distributions():
    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(3000, 16)), rng.normal(size=(3000, 16))
    c = rng.normal(size=(3000, 16)) * 1.2 + 0.3
    same_mean, same_std = kernel_inception_distance(a, b, num_subsets=20, subset_size=500, seed=0)
    diff_mean, diff_std = kernel_inception_distance(a, c, num_subsets=20, subset_size=500, seed=0)
    assert abs(same_mean) < 3 * same_std
    assert diff_mean > 10 * diff_std and diff_mean > 20 * abs(same_mean)
    # Seeded: identical inputs and seed give identical values.
    assert kernel_inception_distance(a, c, num_subsets=20, subset_size=500, seed=0) == (diff_mean, diff_std)


def test_errors():
    with pytest.raises(ValueError, match="equal D"):
        kernel_inception_distance(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="equal size"):
        mmd2_unbiased(np.zeros((5, 2)), np.zeros((4, 2)))
