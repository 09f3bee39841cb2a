"""Improved precision and recall, Kynkaanniemi et al. 2019, Sec. 2 / Eq. (1)-(2).

Each feature set approximates its manifold by the union of balls around its points, each ball's radius being
the distance to the point's k-th nearest neighbour (k = 3) within the same set. Precision = fraction of
generated points inside the real manifold; recall = fraction of real points inside the generated manifold.
Distances are computed in row batches so memory stays ``batch_size x N``.
"""

from __future__ import annotations

import numpy as np
import torch


def _sq_dists(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ``[len(a), len(b)]`` (clamped at 0 against round-off)."""
    return (a.pow(2).sum(1, keepdim=True) + b.pow(2).sum(1)[None] - 2.0 * a @ b.T).clamp_min_(0.0)


def knn_radii(points: torch.Tensor, k: int = 3, batch_size: int = 2000) -> torch.Tensor:
    """Squared distance from each point to its k-th nearest neighbour in the same set (itself excluded)."""
    if len(points) <= k:
        raise ValueError(f"need more than k={k} points for k-NN radii, got {len(points)}")
    out = []
    for i in range(0, len(points), batch_size):
        d = _sq_dists(points[i:i + batch_size], points)
        out.append(d.kthvalue(k + 1, dim=1).values)   # the smallest (index 1) is the point itself
    return torch.cat(out)


def coverage_fraction(queries: torch.Tensor, support: torch.Tensor, radii: torch.Tensor,
                      batch_size: int = 2000) -> float:
    """Fraction of ``queries`` within distance radius_j of at least one ``support`` point j (Eq. 1, f(phi))."""
    inside = 0
    for i in range(0, len(queries), batch_size):
        d = _sq_dists(queries[i:i + batch_size], support)
        inside += int((d <= radii[None]).any(dim=1).sum())
    return inside / len(queries)


def precision_recall(real_features: np.ndarray, fake_features: np.ndarray, k: int = 3,
                     batch_size: int = 2000) -> tuple[float, float]:
    """Improved precision and recall of ``fake_features [Nf, D]`` against ``real_features [Nr, D]``."""
    real = torch.as_tensor(np.asarray(real_features), dtype=torch.float32)
    fake = torch.as_tensor(np.asarray(fake_features), dtype=torch.float32)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"features must be [N, D] with equal D, got {tuple(real.shape)} and {tuple(fake.shape)}")
    precision = coverage_fraction(fake, real, knn_radii(real, k, batch_size), batch_size)
    recall = coverage_fraction(real, fake, knn_radii(fake, k, batch_size), batch_size)
    return precision, recall
