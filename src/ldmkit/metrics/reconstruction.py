"""Reconstruction metrics for autoencoders: PSNR, SSIM (Wang et al. 2004) and rFID.

Images are ``[N, C, H, W]`` tensors (or anything ``features.to_nchw`` accepts for rFID). PSNR and SSIM are
computed per image and averaged over the batch; ``data_range`` is max - min of the value range (2.0 for
ldmkit's [-1, 1] images, 255 for uint8, 1.0 for [0, 1]).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03


def psnr(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """Per-image peak signal-to-noise ratio ``10 log10(data_range^2 / MSE)`` in dB, shape ``[N]``."""
    if x.shape != y.shape:
        raise ValueError(f"psnr: shapes differ: {tuple(x.shape)} vs {tuple(y.shape)}")
    mse = (x.double() - y.double()).pow(2).flatten(1).mean(1)
    return 10.0 * torch.log10(data_range ** 2 / mse)


def gaussian_window(size: int = SSIM_WINDOW, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Normalized 1-D Gaussian ``[size]`` (float64) centred on the middle tap."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    w = torch.exp(-r ** 2 / (2 * sigma ** 2))
    return w / w.sum()


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 2.0, window: int = SSIM_WINDOW,
         sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """Per-image structural similarity (Wang et al. 2004, Eq. 13), shape ``[N]``.

    Local statistics use an ``window x window`` Gaussian (sigma 1.5) over "valid" positions only (no padding);
    C1 = (0.01 L)^2, C2 = (0.03 L)^2 with L = ``data_range``; the SSIM map is averaged over positions and
    channels. Code name -> symbol: ``mu_x`` = mu_x, ``var_x`` = sigma_x^2, ``cov`` = sigma_xy.
    """
    if x.shape != y.shape or x.ndim != 4:
        raise ValueError(f"ssim: need equal [N, C, H, W] shapes, got {tuple(x.shape)} vs {tuple(y.shape)}")
    if min(x.shape[-2:]) < window:
        raise ValueError(f"ssim: images {tuple(x.shape[-2:])} are smaller than the {window}x{window} window")
    c = x.shape[1]
    g = gaussian_window(window, sigma)
    kernel = (g[:, None] * g[None, :]).expand(c, 1, window, window).contiguous()

    def filt(z: torch.Tensor) -> torch.Tensor:
        return F.conv2d(z, kernel, groups=c)

    x, y = x.double(), y.double()
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    mu_x, mu_y = filt(x), filt(y)
    var_x = filt(x * x) - mu_x ** 2
    var_y = filt(y * y) - mu_y ** 2
    cov = filt(x * y) - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (var_x + var_y + c2))
    return ssim_map.flatten(1).mean(1)


def rfid(originals, reconstructions, extractor=None, batch_size: int = 500) -> dict:
    """Reconstruction FID: FID between features of originals and of their reconstructions.

    Returns ``{"rfid": value, "protocol": {...}}``; ``extractor`` defaults to the evaluation network
    (``DEFAULT_EXTRACTOR``, which no autoencoder loss uses).
    """
    from ldmkit.metrics.features import DEFAULT_EXTRACTOR, get_extractor
    from ldmkit.metrics.fid import fid_from_features
    from ldmkit.metrics.protocol import small_sample_warning
    extractor = extractor or get_extractor(DEFAULT_EXTRACTOR)
    a = extractor.extract(originals, batch_size=batch_size)
    b = extractor.extract(reconstructions, batch_size=batch_size)
    n = len(a.features)
    protocol = {**extractor.describe(), "n_generated": len(b.features), "n_reference": n,
                "reference": "originals", "resize_generated": b.resize, "resize_reference": a.resize}
    protocol["warnings"] = small_sample_warning(min(n, len(b.features)))
    return {"rfid": fid_from_features(a.features, b.features), "protocol": protocol}


def reconstruction_metrics(originals: torch.Tensor, reconstructions: torch.Tensor,
                           data_range: float = 2.0) -> dict[str, float]:
    """Mean PSNR and SSIM over a batch, as plain floats (for logs and JSON)."""
    return {"psnr": float(np.mean(psnr(originals, reconstructions, data_range).numpy())),
            "ssim": float(np.mean(ssim(originals, reconstructions, data_range).numpy()))}
