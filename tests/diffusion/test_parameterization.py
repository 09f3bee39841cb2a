"""eps / x0 / v conversions: exact float64 round trips, consistency with q_sample, min-SNR weights."""

from __future__ import annotations

import pytest
import torch

from ldmkit.diffusion import GaussianProcess, get_betas
from ldmkit.diffusion import parameterization as P
from ldmkit.registry import ConfigError

EPS64 = torch.finfo(torch.float64).eps


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_round_trips_are_exact_in_float64(schedule):
    process = GaussianProcess(get_betas(schedule, 1000))
    t = torch.arange(1000)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(1000, 2, 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(1000, 2, 3, generator=gen, dtype=torch.float64)
    a = process.alphas_cumprod[t]
    x_t = process.q_sample(x0, t, eps)
    v = P.v_from_x0_eps(x0, eps, a)
    # rounding grows with the conditioning of each inversion: 1/sqrt(a) for x0 from eps, 1/sqrt(1-a) for eps from x0
    inv_sa = (1 / a.sqrt()).reshape(-1, 1, 1)
    inv_s1a = (1 / (1 - a).sqrt()).reshape(-1, 1, 1)
    tol = 16 * EPS64
    assert ((P.x0_from_eps(x_t, eps, a) - x0).abs() <= tol * (1 + inv_sa) * 4).all()
    assert ((P.eps_from_x0(x_t, x0, a) - eps).abs() <= tol * (1 + inv_s1a) * 4).all()
    assert ((P.x0_from_v(x_t, v, a) - x0).abs() <= tol * 4).all()
    assert ((P.eps_from_v(x_t, v, a) - eps).abs() <= tol * 4).all()
    for kind in P.PREDICTION_TYPES:
        out = P.target(kind, x0, eps, a)
        x0_hat, eps_hat = P.prediction_from_output(out, x_t, a, kind)
        assert ((x0_hat - x0).abs() <= tol * (1 + inv_sa) * 4).all(), kind
        assert ((eps_hat - eps).abs() <= tol * (1 + inv_s1a) * 4).all(), kind
        # and back to the network output
        assert ((P.target(kind, x0_hat, eps_hat, a) - out).abs() <= tol * (1 + inv_sa + inv_s1a) * 8).all(), kind


def test_v_is_the_velocity_of_the_unit_circle_parameterization():
    """Salimans & Ho: with a = cos^2(phi), x_t = cos(phi) x0 + sin(phi) eps and v = d x_t / d phi."""
    phi = torch.tensor([0.1, 0.7, 1.3], dtype=torch.float64, requires_grad=True)
    x0 = torch.tensor([0.3, -1.0, 0.8], dtype=torch.float64)
    eps = torch.tensor([1.1, 0.2, -0.5], dtype=torch.float64)
    x_t = torch.cos(phi) * x0 + torch.sin(phi) * eps
    (grad,) = torch.autograd.grad(x_t.sum(), phi)
    v = P.v_from_x0_eps(x0, eps, torch.cos(phi.detach()) ** 2)
    torch.testing.assert_close(v, grad, rtol=1e-12, atol=1e-12)


def test_dtype_follows_data_and_errors():
    a = torch.tensor([0.5, 0.9], dtype=torch.float64)
    x = torch.randn(2, 1, 4, 4)
    x0, eps = P.prediction_from_output(x, x, a, "v")
    assert x0.dtype == eps.dtype == torch.float32 and x0.shape == x.shape
    with pytest.raises(ConfigError, match="unknown prediction type 'score'; valid: eps, v, x0"):
        P.prediction_from_output(x, x, a, "score")
    with pytest.raises(ValueError, match="differs from x_t shape"):
        P.prediction_from_output(x[:, :, :2], x, a, "eps")


def test_min_snr_weights_agree_across_parameterizations():
    """The same prediction error, measured as an eps / x0 / v MSE and min-SNR-weighted, gives one loss."""
    process = GaussianProcess(get_betas("cosine", 1000, rescale_zero_terminal_snr=True))
    t = torch.tensor([0, 10, 300, 700, 998])
    a, snr = process.alphas_cumprod[t], process.snr[t]
    gen = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 8, generator=gen, dtype=torch.float64), torch.randn(5, 8, generator=gen, dtype=torch.float64)
    x_t = process.q_sample(x0, t, eps)
    x0_hat = x0 + 0.1 * torch.randn(5, 8, generator=gen, dtype=torch.float64)
    eps_hat = P.eps_from_x0(x_t, x0_hat, a)
    losses = []
    for kind in P.PREDICTION_TYPES:
        mse = ((P.target(kind, x0, eps, a) - P.target(kind, x0_hat, eps_hat, a)) ** 2).mean(1)
        losses.append(mse * P.min_snr_weight(snr, 5.0, kind))
    torch.testing.assert_close(losses[0], losses[1], rtol=1e-8, atol=0)
    torch.testing.assert_close(losses[1], losses[2], rtol=1e-8, atol=0)
    # SNR = 0 at the zero-terminal-SNR end must not give NaN for eps
    assert torch.isfinite(P.min_snr_weight(torch.tensor([0.0], dtype=torch.float64), 5.0, "eps")).all()
    assert P.min_snr_weight(torch.tensor([100.0]), 5.0, "x0").item() == 5.0
