"""GaussianProcess against Monte Carlo, brute-force Gaussian conditioning and Ho et al.'s closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldmkit.diffusion import GaussianProcess, get_betas
from ldmkit.diffusion.parameterization import x0_from_eps
from ldmkit.registry import ConfigError
from ldmkit.types import Prediction

SCHEDULE_NAMES = ["linear", "cosine"]


@pytest.fixture(scope="module", params=SCHEDULE_NAMES)
def process(request):
    return GaussianProcess(get_betas(request.param, 1000))


def _full(t, n):
    return torch.full((n,), t, dtype=torch.int64)


@pytest.mark.parametrize("steps", [1, 10, 500])
def test_iterated_q_step_matches_q_sample(process, steps):
    """Paper step ``steps`` = index steps-1: iterate q(x_t | x_{t-1}) from x0, compare with q(x_t | x0)."""
    n = 10_000
    gen = torch.Generator().manual_seed(steps)
    x0 = torch.tensor([-1.0, 0.5, 1.0], dtype=torch.float64).expand(n, 3).clone()
    x = x0
    for index in range(steps):
        x = process.q_step(x, _full(index, n), generator=gen)
    mean, var, log_var = process.q_mean_variance(x0[:1], _full(steps - 1, 1))
    assert torch.allclose(log_var, torch.log(var))
    # sample mean within 5 standard errors; sample variance within 5 standard errors (Gaussian: sd = var*sqrt(2/n))
    assert torch.all((x.mean(0) - mean[0]).abs() < 5 * torch.sqrt(var[0] / n))
    assert torch.all((x.var(0) - var[0]).abs() < 5 * var[0] * (2 / n) ** 0.5)
    # and q_sample draws the same distribution
    y = process.q_sample(x0, _full(steps - 1, n), generator=gen)
    assert torch.all((y.mean(0) - mean[0]).abs() < 5 * torch.sqrt(var[0] / n))
    assert torch.all((y.var(0) - var[0]).abs() < 5 * var[0] * (2 / n) ** 0.5)


def test_posterior_equals_brute_force_conditioning(process):
    """q(x_{t-1} | x_t, x0) from the joint Gaussian of (x_{t-1}, x_t) given x0, solved with linear algebra."""
    abar = process.alphas_cumprod.numpy()
    betas = process.betas.numpy()
    rng = np.random.default_rng(0)
    for t in [0, 1, 2, 10, 100, 500, 998, 999]:
        abar_prev = 1.0 if t == 0 else abar[t - 1]
        x0, x_t = rng.normal(size=2)
        # x_{t-1} = sqrt(abar_prev) x0 + sqrt(1 - abar_prev) e1;  x_t = sqrt(1 - beta) x_{t-1} + sqrt(beta) e2
        A = np.array([[np.sqrt(1 - abar_prev), 0.0],
                      [np.sqrt(1 - betas[t]) * np.sqrt(1 - abar_prev), np.sqrt(betas[t])]])
        mu = np.array([np.sqrt(abar_prev), np.sqrt(1 - betas[t]) * np.sqrt(abar_prev)]) * x0
        cov = A @ A.T
        if t == 0:
            cond_mean, cond_var = x0, 0.0
        else:
            cond_mean = mu[0] + cov[0, 1] * np.linalg.solve(cov[1:, 1:], [x_t - mu[1]])[0]
            cond_var = cov[0, 0] - cov[0, 1] * np.linalg.solve(cov[1:, 1:], [cov[1, 0]])[0]
        mean, var, log_var = process.q_posterior_mean_variance(
            torch.tensor([[x0]], dtype=torch.float64), torch.tensor([[x_t]], dtype=torch.float64), _full(t, 1))
        assert float(mean) == pytest.approx(cond_mean, rel=1e-9, abs=1e-12), t
        assert float(var) == pytest.approx(cond_var, rel=1e-9, abs=1e-15), t
        expected_log = np.log(cond_var) if t > 0 else np.log(process.posterior_variance[1].item())
        assert float(log_var) == pytest.approx(expected_log, rel=1e-9), t


def test_ho_simplified_mean_equals_two_coefficient_form(process):
    """Ho Eq. 11: mu = (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t), with x0 written through eps."""
    gen = torch.Generator().manual_seed(1)
    t = torch.arange(process.num_timesteps)
    x_t = torch.randn(len(t), 3, generator=gen, dtype=torch.float64)
    eps = torch.randn(len(t), 3, generator=gen, dtype=torch.float64)
    abar = process.alphas_cumprod[t]
    x0 = x0_from_eps(x_t, eps, abar)
    mean, _, _ = process.p_mean_variance(Prediction(x0, eps), x_t, t, "fixed_small")
    beta, alpha = process.betas[t, None], process.alphas[t, None]
    ho = (x_t - beta / torch.sqrt(1 - abar[:, None]) * eps) / torch.sqrt(alpha)
    torch.testing.assert_close(mean, ho, rtol=1e-9, atol=1e-9)


def test_variance_types(process):
    T = process.num_timesteps
    t = torch.arange(T)
    x_t = torch.zeros(T, 2, dtype=torch.float64)
    pred = Prediction(x_t, x_t)
    beta, beta_tilde = process.betas[:, None], process.posterior_variance[:, None]
    _, small, _ = process.p_mean_variance(pred, x_t, t, "fixed_small")
    _, large, log_large = process.p_mean_variance(pred, x_t, t, "fixed_large")
    torch.testing.assert_close(small[1:], beta_tilde[1:].expand(-1, 2), rtol=1e-12, atol=0)
    torch.testing.assert_close(large[1:], beta[1:].expand(-1, 2), rtol=1e-12, atol=0)
    # t = 0 uses beta-tilde_1 for both (improved-diffusion)
    assert float(small[0, 0]) == float(large[0, 0]) == pytest.approx(float(beta_tilde[1, 0]), rel=1e-12)
    torch.testing.assert_close(log_large, torch.log(large))
    lv = torch.full_like(x_t, -3.0)
    _, learned, log_learned = process.p_mean_variance(Prediction(x_t, x_t, lv), x_t, t, "learned")
    assert torch.equal(log_learned, lv) and torch.allclose(learned, torch.exp(lv))
    lo, hi = beta_tilde.clone(), beta.clone()
    lo[0] = beta_tilde[1]
    for v, expected in [(1.0, hi), (-1.0, lo), (0.0, torch.sqrt(hi * lo)), (4.0, hi), (-7.0, lo)]:
        out = torch.full_like(x_t, v)
        _, var, _ = process.p_mean_variance(Prediction(x_t, x_t, out), x_t, t, "learned_range")
        torch.testing.assert_close(var, expected.expand(-1, 2), rtol=1e-10, atol=0)
    # without the clamp (training) v extrapolates the log-linear interpolation (Nichol & Dhariwal Eq. 15)
    for v in (4.0, -7.0, 0.5):
        out = torch.full_like(x_t, v)
        _, var, _ = process.p_mean_variance(Prediction(x_t, x_t, out), x_t, t, "learned_range",
                                            clamp_learned_range=False)
        expected = torch.exp((v + 1) / 2 * torch.log(hi) + (1 - v) / 2 * torch.log(lo))
        torch.testing.assert_close(var, expected.expand(-1, 2), rtol=1e-10, atol=0)
    with pytest.raises(ValueError, match="needs Prediction.var_output"):
        process.p_mean_variance(pred, x_t, t, "learned_range")
    with pytest.raises(ConfigError, match="unknown variance type 'fixed'; valid: fixed_large, fixed_small, "
                                          "learned, learned_range"):
        process.p_mean_variance(pred, x_t, t, "fixed")
    with pytest.raises(ConfigError, match="unknown process table 'beta'; valid: .*betas"):
        process.gather("beta", t, x_t)


def test_respace_keeps_alpha_bar_exactly(process):
    keep = [0, 3, 10, 99, 250, 500, 998, 999]
    sub = process.respace(keep)
    assert sub.num_timesteps == len(keep)
    assert torch.equal(sub.alphas_cumprod, process.alphas_cumprod[keep])
    assert torch.equal(sub.timestep_map, torch.tensor(keep))
    torch.testing.assert_close(torch.cumprod(1 - sub.betas, 0), sub.alphas_cumprod, rtol=1e-12, atol=1e-15)
    # respacing composes through timestep_map
    subsub = sub.respace([1, 4, 7])
    assert torch.equal(subsub.timestep_map, torch.tensor([3, 250, 999]))
    assert torch.equal(subsub.alphas_cumprod, process.alphas_cumprod[[3, 250, 999]])
    assert torch.equal(sub.model_timesteps(torch.tensor([2, 0])), torch.tensor([10, 0]))
    # the full grid gives the same process back
    same = process.respace(range(process.num_timesteps))
    torch.testing.assert_close(same.betas, process.betas, rtol=1e-9, atol=1e-15)
    with pytest.raises(ValueError, match="duplicates"):
        process.respace([1, 1, 2])
    with pytest.raises(ValueError, match=r"\[0, 999\]"):
        process.respace([5, 1000])


def test_dtype_and_device_follow_input():
    process = GaussianProcess.from_schedule("linear", 100)
    assert torch.equal(process.betas, torch.from_numpy(get_betas("linear", 100)))
    assert process.alphas_cumprod.dtype == torch.float64
    x0 = torch.randn(3, 1, 4, 4, dtype=torch.float32)
    t = torch.tensor([0, 50, 99])
    assert process.q_sample(x0, t).dtype == torch.float32
    mean, var, log_var = process.p_mean_variance(Prediction(x0, x0), x0, t, "fixed_large")
    assert mean.dtype == var.dtype == log_var.dtype == torch.float32 and var.shape == x0.shape
    assert process.q_sample(x0.bfloat16(), t).dtype == torch.bfloat16
    assert process.q_sample(x0, 7).shape == x0.shape  # a Python int means that t for every example


def test_bad_inputs_are_named():
    with pytest.raises(ValueError, match=r"betas\[2\]"):
        GaussianProcess([0.1, 0.2, 0.0])
    process = GaussianProcess(get_betas("cosine", 10))
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match=r"t must lie in \[0, 9\]"):
        process.q_sample(x, torch.tensor([0, 10]))
    with pytest.raises(ValueError, match=r"t must have shape \[2\]"):
        process.q_sample(x, torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer tensor"):
        process.q_sample(x, torch.tensor([0.0, 1.0]))
