"""Inception Score, Salimans et al. 2016: IS = exp(E_x KL(p(y|x) || p(y))), computed on ``splits`` disjoint
chunks of the samples (mean and std over chunks), from a classifier's logits.

With ldmkit's Fashion-MNIST classifier the score lies in [1, 10] (10 classes); with the FID Inception-v3 it
uses the 1008-way logits as the TF reference implementation does.
"""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax


def inception_score(logits: np.ndarray, splits: int = 10) -> tuple[float, float]:
    """Mean and std of the Inception Score over ``splits`` consecutive chunks of ``logits [N, K]``."""
    logits = np.asarray(logits, np.float64)
    if logits.ndim != 2 or len(logits) < splits:
        raise ValueError(f"logits must be [N, K] with N >= splits ({splits}), got shape {logits.shape}")
    scores = []
    for chunk in np.array_split(logits, splits):
        log_p = log_softmax(chunk, axis=1)                                   # log p(y|x)
        log_marginal = np.log(np.exp(log_p).mean(axis=0))                    # log p(y)
        kl = (np.exp(log_p) * (log_p - log_marginal)).sum(axis=1).mean()    # E_x KL
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))
