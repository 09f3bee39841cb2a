"""Kernel Inception Distance, Binkowski et al. 2018: the unbiased estimator of squared MMD with the cubic
polynomial kernel k(x, y) = (x . y / d + 1)^3, averaged over random subsets (mean and std reported).

For subsets X, Y of size m:  MMD^2_u = sum_{i!=j} k(x_i,x_j) / (m(m-1)) + sum_{i!=j} k(y_i,y_j) / (m(m-1))
- 2 sum_{i,j} k(x_i,y_j) / m^2  (Gretton et al. 2012, Eq. 3), whose expectation is exactly MMD^2 (0 when
both samples come from one distribution).
"""

from __future__ import annotations

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray, degree: int = 3, coef0: float = 1.0) -> np.ndarray:
    """``(x y^T / d + coef0) ** degree`` for ``x [n, d]``, ``y [m, d]``."""
    return (x @ y.T / x.shape[1] + coef0) ** degree


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between equal-size samples ``x [m, d]`` and ``y [m, d]`` (cubic kernel)."""
    m = len(x)
    if m < 2 or len(y) != m:
        raise ValueError(f"mmd2_unbiased needs two samples of equal size >= 2, got {len(x)} and {len(y)}")
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    sum_xx = kxx.sum() - np.trace(kxx)
    sum_yy = kyy.sum() - np.trace(kyy)
    return float(sum_xx / (m * (m - 1)) + sum_yy / (m * (m - 1)) - 2.0 * kxy.sum() / m ** 2)


def kernel_inception_distance(features1: np.ndarray, features2: np.ndarray, *, num_subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID mean and std over ``num_subsets`` subsets of ``min(subset_size, N1, N2)`` points each.

    Subsets are drawn without replacement within a subset, independently across subsets, from
    ``numpy.random.default_rng(seed)`` (recorded in the protocol so the value can be reproduced).
    """
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    if f1.ndim != 2 or f2.ndim != 2 or f1.shape[1] != f2.shape[1]:
        raise ValueError(f"features must be [N, D] with equal D, got {f1.shape} and {f2.shape}")
    m = min(subset_size, len(f1), len(f2))
    rng = np.random.default_rng(seed)
    values = np.array([mmd2_unbiased(f1[rng.choice(len(f1), m, replace=False)],
                                     f2[rng.choice(len(f2), m, replace=False)]) for _ in range(num_subsets)])
    return float(values.mean()), float(values.std())
