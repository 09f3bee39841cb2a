"""Controlled degradations of real images, for calibrating metrics (FID must grow with noise and blur).

Both take ``[N, C, H, W]`` float images in [-1, 1] and return the same shape, clamped to [-1, 1].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def add_gaussian_noise(images: torch.Tensor, sigma: float, seed: int = 0) -> torch.Tensor:
    """``clamp(x + sigma * eps)`` with eps ~ N(0, I) drawn from ``torch.Generator().manual_seed(seed)``."""
    gen = torch.Generator().manual_seed(seed)
    return (images + sigma * torch.randn(images.shape, generator=gen)).clamp(-1.0, 1.0)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (kernel radius ceil(3 sigma), reflect padding); ``sigma = 0`` is the identity."""
    if sigma <= 0:
        return images.clone()
    radius = max(1, math.ceil(3 * sigma))
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    g = torch.exp(-r ** 2 / (2 * sigma ** 2))
    g = g / g.sum()
    c = images.shape[1]
    x = F.pad(images.float(), (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
    return x.clamp(-1.0, 1.0)
