"""Frechet Inception Distance, Heusel et al. 2017, Eq. (6): the Frechet (2-Wasserstein) distance between two
Gaussians fitted to feature sets,

    d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

Code name -> symbol: ``mu1, mu2`` = mu_r, mu_g; ``sigma1, sigma2`` = Sigma_r, Sigma_g; ``root1, root2`` =
Sigma_r^(1/2), Sigma_g^(1/2); ``trace_covmean`` = tr (Sigma_r Sigma_g)^(1/2).
"""

from __future__ import annotations

import numpy as np


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of features ``[N, D]`` (N >= 2)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be [N, D] with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(sigma: np.ndarray, name: str, psd_tol: float) -> np.ndarray:
    """Symmetric square root of a covariance ``[D, D]`` via ``eigh``; round-off eigenvalues -> 0."""
    scale = max(float(np.abs(sigma).max()), np.finfo(np.float64).tiny)
    asym = float(np.abs(sigma - sigma.T).max())
    if asym > 1e-8 * scale:
        raise ValueError(f"FID: {name} is not symmetric (max |{name} - {name}^T| = {asym:g}); pass a covariance")
    w, v = np.linalg.eigh((sigma + sigma.T) / 2)
    if w[0] < -psd_tol * max(float(w[-1]), np.finfo(np.float64).tiny):
        raise ValueError(f"FID: {name} is not positive semi-definite (eigenvalues from {w[0]:g} to {w[-1]:g}); "
                         "its square root would be imaginary")
    # Eigenvalues below eigh's own round-off (D * eps * largest) are zero: their square roots, ~1e-8 of the
    # scale, would otherwise add spurious singular values in step 2 of ``frechet_distance``.
    w = np.where(w > len(w) * np.finfo(np.float64).eps * max(float(w[-1]), 0.0), w, 0.0)
    return (v * np.sqrt(w)) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     psd_tol: float = 1e-4) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), stable for singular covariances.

    ``sigma1 sigma2`` is similar to the symmetric ``root1 sigma2 root1`` (``root = sigma^(1/2)``), so
    tr (sigma1 sigma2)^(1/2) = sum sqrt(eig(root1 sigma2 root1)) = sum of the singular values of
    ``root1 @ root2``. The singular values are used rather than square roots of eigenvalues: a zero
    eigenvalue computed as 1e-16 would become 1e-8 under the square root, and a rank-deficient feature set
    (fewer samples than dimensions, dead ReLUs) has many of them; ``scipy.linalg.sqrtm`` of the singular
    product fails the same way and makes FID(x, x) negative.

    1. ``root1``, ``root2`` by symmetric eigendecompositions; eigenvalues below ``-psd_tol * largest`` are
       an error (not a covariance); those within eigh's round-off of 0 (either sign) become 0.
    2. ``trace_covmean`` = sum of the singular values of ``root1 @ root2``.
    3. d^2 >= 0 exactly, so a result within round-off of 0 (``1e-9`` of the traces) is clamped to 0; a
       more negative one is an error.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shape mismatch: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {sigma1.shape}, "
                         f"sigma2 {sigma2.shape}")
    root1, root2 = _psd_sqrt(sigma1, "sigma1", psd_tol), _psd_sqrt(sigma2, "sigma2", psd_tol)
    trace_covmean = float(np.linalg.svd(root1 @ root2, compute_uv=False).sum())
    diff = mu1 - mu2
    mean_term, trace_terms = float(diff @ diff), float(np.trace(sigma1) + np.trace(sigma2))
    value = mean_term + trace_terms - 2.0 * trace_covmean
    if value < -1e-9 * max(1.0, mean_term + trace_terms):
        raise ValueError(f"FID: d^2 = {value:g} < 0 beyond round-off (traces {trace_terms:g}); "
                         "the covariances are not valid")
    return max(value, 0.0)


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets ``[N1, D]`` and ``[N2, D]``."""
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))
