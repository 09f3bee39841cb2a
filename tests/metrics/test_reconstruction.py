"""PSNR and SSIM against hand-computed values and a brute-force windowed oracle."""

import math

import numpy as np
import pytest
import torch

from ldmkit.metrics.reconstruction import psnr, reconstruction_metrics, ssim


def test_psnr_hand_computed():
    x = torch.zeros(2, 1, 8, 8)
    assert psnr(x, x + 0.1, data_range=1.0).tolist() == pytest.approx([20.0, 20.0])
    # [-1, 1] images (range 2), error 0.2: 10 log10(4 / 0.04) = 20 dB; error 0.02 -> 40 dB.
    y = x.clone()
    y[1] += 0.02
    y[0] += 0.2
    assert psnr(x, y).tolist() == pytest.approx([20.0, 40.0])


def test_ssim_identical_is_one():
    x = torch.rand(3, 2, 16, 16) * 2 - 1
    assert ssim(x, x).tolist() == pytest.approx([1.0] * 3)


def test_ssim_constant_images_hand_computed():
    # No variance anywhere: SSIM = (2ab + C1) / (a^2 + b^2 + C1), with C1 = (0.01 L)^2.
    a, b, L = 0.2, -0.5, 2.0
    c1 = (0.01 * L) ** 2
    value = ssim(torch.full((1, 1, 12, 12), a, dtype=torch.float64),
                 torch.full((1, 1, 12, 12), b, dtype=torch.float64), data_range=L).item()
    assert value == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1), rel=1e-9)


def brute_force_ssim(x, y, L, size=11, sigma=1.5):
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-r ** 2 / (2 * sigma ** 2))
    w = np.outer(g, g) / np.outer(g, g).sum()
    c1, c2 = (0.01 * L) ** 2, (0.03 * L) ** 2
    vals = []
    for i in range(x.shape[0] - size + 1):
        for j in range(x.shape[1] - size + 1):
            px, py = x[i:i + size, j:j + size], y[i:i + size, j:j + size]
            mx, my = (w * px).sum(), (w * py).sum()
            vx, vy = (w * (px - mx) ** 2).sum(), (w * (py - my) ** 2).sum()
            cxy = (w * (px - mx) * (py - my)).sum()
            vals.append((2 * mx * my + c1) * (2 * cxy + c2) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2)))
    return float(np.mean(vals))


def test_ssim_matches_windowed_oracle():
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (16, 14))
    y = np.clip(x + rng.normal(0, 0.3, x.shape), -1, 1)
    expected = brute_force_ssim(x, y, 2.0)
    got = ssim(torch.tensor(x)[None, None], torch.tensor(y)[None, None], data_range=2.0).item()
    assert got == pytest.approx(expected, rel=1e-9)
    assert 0 < got < 0.9


def test_ssim_falls_with_noise_and_errors():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 1, 28, 28, generator=g) * 2 - 1
    values = [reconstruction_metrics(x, (x + s * torch.randn(x.shape, generator=g)).clamp(-1, 1))["ssim"]
              for s in (0.05, 0.2, 0.5)]
    assert values[0] > values[1] > values[2]
    with pytest.raises(ValueError, match="smaller than"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))
    assert math.isinf(psnr(x, x)[0].item())
