"""Frechet Inception Distance, Heusel et al. 2017, Eq. (6): the Frechet (2-Wasserstein) distance between two
Gaussians fitted to feature sets,

    d^2 = |mu1 - mu2|^2 + tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^(1/2)).

Code name -> symbol: ``mu1, mu2`` = mu_r, mu_g; ``sigma1, sigma2`` = Sigma_r, Sigma_g; ``covmean`` =
(Sigma_r Sigma_g)^(1/2) (scipy.linalg.sqrtm).
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
from scipy import linalg

logger = logging.getLogger(__name__)


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``[D]`` and unbiased covariance ``[D, D]`` (float64) of features ``[N, D]`` (N >= 2)."""
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features must be [N, D] with N >= 2, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     eps: float = 1e-6, imag_tol: float = 1e-3) -> float:
    """Squared Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), computed stably.

    1. ``covmean = sqrtm(sigma1 @ sigma2)``; if it is not finite (near-singular product), retry with
       ``eps * I`` added to both covariances.
    2. Round-off can leave a complex result: imaginary parts on the diagonal above ``imag_tol`` (relative to
       the trace scale) are an error, smaller ones are dropped.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (len(mu1), len(mu1)):
        raise ValueError(f"shape mismatch: mu1 {mu1.shape}, mu2 {mu2.shape}, sigma1 {sigma1.shape}, "
                         f"sigma2 {sigma2.shape}")
    diff = mu1 - mu2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", linalg.LinAlgWarning)
        covmean = linalg.sqrtm(sigma1 @ sigma2)
    if caught:  # e.g. feature dimensions that are always 0 (dead ReLUs), or fewer samples than dimensions
        logger.debug("FID: sigma1 @ sigma2 is singular (%s)", caught[0].message)
    if not np.isfinite(covmean).all():
        logger.warning("FID: sqrtm(sigma1 sigma2) is not finite; adding %g * I to both covariances", eps)
        offset = np.eye(len(mu1)) * eps
        covmean = linalg.sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        scale = max(1.0, float(np.abs(np.trace(sigma1)) + np.abs(np.trace(sigma2))))
        max_imag = float(np.max(np.abs(np.diagonal(covmean).imag)))
        if max_imag > imag_tol * scale:
            raise ValueError(f"FID: sqrtm(sigma1 sigma2) has imaginary diagonal entries up to {max_imag:g}; "
                             "the covariances are too ill-conditioned (too few samples for the feature "
                             "dimension?)")
        covmean = covmean.real
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))
    return max(value, 0.0) if value > -1e-6 * max(1.0, abs(value)) else value


def fid_from_features(features1: np.ndarray, features2: np.ndarray) -> float:
    """FID between two feature sets ``[N1, D]`` and ``[N2, D]``."""
    return frechet_distance(*gaussian_stats(features1), *gaussian_stats(features2))
