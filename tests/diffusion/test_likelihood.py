"""KL / decoder likelihoods against numerical integration, and the VLB against an exact Gaussian oracle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from ldmkit.diffusion import GaussianProcess, get_betas
from ldmkit.diffusion import parameterization as P
from ldmkit.diffusion.likelihood import (
    continuous_gaussian_log_likelihood,
    dataset_bits_per_dim,
    discretized_gaussian_log_likelihood,
    normal_kl,
    prior_bpd,
    vlb_bits_per_dim,
    vlb_term_bpd,
)
from ldmkit.types import Prediction

LOG2 = math.log(2.0)


def _t64(*values):
    return [torch.tensor(v, dtype=torch.float64) for v in values]


@pytest.mark.parametrize("m1,s1,m2,s2", [(0.0, 1.0, 0.0, 1.0), (0.3, 0.5, -0.2, 1.7), (2.0, 0.05, 1.9, 0.1)])
def test_normal_kl_matches_integration(m1, s1, m2, s2):
    p, q = stats.norm(m1, s1), stats.norm(m2, s2)
    expected, _ = integrate.quad(lambda x: p.pdf(x) * (p.logpdf(x) - q.logpdf(x)), m1 - 12 * s1, m1 + 12 * s1,
                                 epsabs=1e-13, epsrel=1e-11, limit=200)
    mean1, lv1, mean2, lv2 = _t64(m1, 2 * math.log(s1), m2, 2 * math.log(s2))
    assert float(normal_kl(mean1, lv1, mean2, lv2)) == pytest.approx(expected, rel=1e-7, abs=1e-12)


def test_continuous_gaussian_log_likelihood():
    x, m, ls = _t64([-1.0, 0.2, 3.0], [0.0, 0.1, -1.0], [0.0, math.log(0.3), math.log(2.0)])
    expected = stats.norm(m.numpy(), np.exp(ls.numpy())).logpdf(x.numpy())
    np.testing.assert_allclose(continuous_gaussian_log_likelihood(x, m, ls).numpy(), expected, rtol=1e-12)


@pytest.mark.parametrize("mean,scale", [(0.0, 0.01), (-0.5, 0.3), (0.9, 2.0), (0.004, 0.002)])
def test_discretized_gaussian_matches_integration(mean, scale):
    levels = torch.linspace(-1, 1, 256, dtype=torch.float64)
    logp = discretized_gaussian_log_likelihood(levels, torch.tensor(mean, dtype=torch.float64),
                                               torch.tensor(math.log(scale), dtype=torch.float64))
    assert float(torch.logsumexp(logp, 0).exp()) == pytest.approx(1.0, abs=1e-9)  # a distribution over levels
    dist = stats.norm(mean, scale)
    half = 1 / 255
    for i in [0, 1, 100, 127, 128, 129, 200, 254, 255]:
        x = levels[i].item()
        lo = -np.inf if i == 0 else x - half
        hi = np.inf if i == 255 else x + half
        expected, _ = integrate.quad(dist.pdf, lo, hi, epsabs=0, epsrel=1e-12,
                                     points=None if np.isinf(lo) or np.isinf(hi) else [mean] if lo < mean < hi else None)
        if expected > 1e-11:  # below 1e-12 the log-mass is clamped, as improved-diffusion does
            assert math.exp(logp[i].item()) == pytest.approx(expected, rel=1e-6), (i, x)


def test_prior_bpd_closed_form():
    process = GaussianProcess(get_betas("linear", 1000))
    x0 = torch.tensor([[0.0, 1.0], [-1.0, 0.5]], dtype=torch.float64)
    a = process.alphas_cumprod[-1].item()
    per_dim = 0.5 * (a * x0**2 + (1 - a) - 1 - math.log(1 - a)) / LOG2
    torch.testing.assert_close(prior_bpd(process, x0), per_dim.mean(1), rtol=1e-9, atol=1e-15)


# ------------------------------------------------------------------------------------- Gaussian oracle

MU, SIGMA = 0.3, 0.5  # data x0 ~ N(MU, SIGMA^2) in every dimension


def gaussian_oracle(process: GaussianProcess, vary: str = "learned"):
    """The exact reverse conditionals q(x_{t-1} | x_t) for N(MU, SIGMA^2) data, as a denoiser of base timesteps.

    With V_t = abar_t SIGMA^2 + 1 - abar_t and M_t = sqrt(abar_t) MU the marginals of x_t, q(x_{t-1} | x_t) has
    mean M_{t-1} + sqrt(alpha_t) V_{t-1} / V_t (x_t - M_t) and variance V_{t-1} beta_t / V_t. The mean is handed
    over as the x0 that gives it through the posterior mean; the log-variance as ``var_output`` (``learned``).
    """
    index_of = torch.full((int(process.timestep_map.max()) + 1,), -1, dtype=torch.int64)
    index_of[process.timestep_map] = torch.arange(process.num_timesteps)

    def denoiser(x_t, t_model, cond):
        t = index_of[t_model]
        assert (t >= 0).all(), "denoiser called with a timestep outside the process's timestep_map"
        row = lambda name: process.gather(name, t, x_t)
        v_t = row("alphas_cumprod") * SIGMA**2 + 1 - row("alphas_cumprod")
        v_prev = row("alphas_cumprod_prev") * SIGMA**2 + 1 - row("alphas_cumprod_prev")
        mean = (row("alphas_cumprod_prev").sqrt() * MU
                + row("alphas").sqrt() * v_prev / v_t * (x_t - row("alphas_cumprod").sqrt() * MU))
        var = v_prev * row("betas") / v_t
        x0 = (mean - row("posterior_mean_coef2") * x_t) / row("posterior_mean_coef1")
        eps = P.eps_from_x0(x_t, x0, process.alphas_cumprod[t])
        return Prediction(x0, eps, torch.log(var).expand_as(x_t))

    return denoiser


def true_nll_bpd(x0):
    return (0.5 * math.log(2 * math.pi * SIGMA**2) + (x0 - MU) ** 2 / (2 * SIGMA**2)).mean(1) / LOG2


def expected_bound_bpd(process, denoiser, x0, variance_type):
    """E over x_{1:T} of the bound for each x0, exactly: every term is quadratic in its x_t, so the two-point
    Gauss-Hermite rule x_t = sqrt(abar) x0 +- sqrt(1 - abar) integrates it exactly."""
    T, m = process.num_timesteps, x0.shape[0]
    t = torch.arange(T).repeat_interleave(m)
    x0_rep = x0.repeat(T, 1)
    total = prior_bpd(process, x0)
    for sign in (1.0, -1.0):
        x_t = process.q_sample(x0_rep, t, torch.full_like(x0_rep, sign))
        pred = denoiser(x_t, process.model_timesteps(t), None)
        terms = vlb_term_bpd(process, pred, x0_rep, x_t, t, variance_type, decoder="continuous")
        total = total + 0.5 * terms.reshape(T, m).sum(0)
    return total


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_gaussian_oracle_vlb_equals_true_nll(schedule):
    process = GaussianProcess(get_betas(schedule, 1000))
    oracle = gaussian_oracle(process)
    gen = torch.Generator().manual_seed(0)
    x0 = MU + SIGMA * torch.randn(48, 4, generator=gen, dtype=torch.float64)
    nll = true_nll_bpd(x0)
    bound = expected_bound_bpd(process, oracle, x0, "learned")
    # exact reverse conditionals: the bound is tight up to the prior mismatch q(x_T) vs N(0, I)
    assert torch.all((bound - nll).abs() <= 0.01 * nll.abs()), (bound - nll).abs().max()
    assert float((bound - nll).abs().max()) < 1e-4
    for fixed in ["fixed_small", "fixed_large"]:
        loose = expected_bound_bpd(process, oracle, x0, fixed)  # same means, wrong variances
        assert float(loose.mean() - nll.mean()) > 0.01 * float(nll.mean()), fixed


def test_vlb_bits_per_dim_is_an_unbiased_estimate_on_a_respaced_process():
    """The T-step Monte Carlo bound of ``vlb_bits_per_dim`` (fresh noise per t, denoiser called with
    timestep_map[t]) averages to the exact expected bound, and stays close to the true NLL."""
    process = GaussianProcess(get_betas("cosine", 1000)).respace(np.linspace(0, 999, 40).round().astype(int))
    oracle = gaussian_oracle(process)
    gen = torch.Generator().manual_seed(1)
    x0 = MU + SIGMA * torch.randn(512, 8, generator=gen, dtype=torch.float64)
    calls = []
    result = vlb_bits_per_dim(oracle, process, x0, variance_type="learned", decoder="continuous",
                              generator=gen, progress=lambda done, total: calls.append((done, total)))
    assert calls == [(i, 40) for i in range(1, 41)]
    assert result.terms_bpd.shape == (512, 40) and result.x0_mse.shape == (512, 40)
    torch.testing.assert_close(result.total_bpd, result.terms_bpd.sum(1) + result.prior_bpd)
    torch.testing.assert_close(result.prior_bpd, prior_bpd(process, x0))
    exact = expected_bound_bpd(process, oracle, x0, "learned")
    diff = result.total_bpd - exact
    stderr = float(diff.std() / math.sqrt(len(diff)))
    assert abs(float(diff.mean())) < 5 * stderr, (float(diff.mean()), stderr)
    assert float(exact.mean()) == pytest.approx(float(true_nll_bpd(x0).mean()), rel=1e-3)

    # dataset level: batches of x0 (or (x0, cond)), truncated at max_examples, with a progress callback
    seen = []
    summary = dataset_bits_per_dim(oracle, process, [x0[:200], (x0[200:400], None), x0[400:]],
                                   variance_type="learned", decoder="continuous", generator=gen,
                                   max_examples=300, progress=lambda n, bpd: seen.append(n))
    assert seen == [200, 300] and summary.num_examples == 300
    assert abs(summary.bpd - float(exact[:300].mean())) < 5 * summary.bpd_stderr
    assert summary.terms_bpd.shape == (40,)


def test_clip_x0_clamps_the_predicted_clean_sample_first():
    process = GaussianProcess(get_betas("cosine", 50))
    gen = torch.Generator().manual_seed(3)
    x0 = torch.randint(0, 256, (4, 1, 2, 2), generator=gen).double() / 127.5 - 1
    t = torch.tensor([0, 1, 20, 49])
    x_t = process.q_sample(x0, t, generator=gen)
    wild = Prediction(3 * torch.randn(x0.shape, generator=gen, dtype=torch.float64), torch.zeros_like(x0))
    clipped = Prediction(wild.x0.clamp(-1, 1), wild.eps)
    a = vlb_term_bpd(process, wild, x0, x_t, t, "fixed_large", clip_x0=True)
    torch.testing.assert_close(a, vlb_term_bpd(process, clipped, x0, x_t, t, "fixed_large"))
    assert not torch.allclose(a, vlb_term_bpd(process, wild, x0, x_t, t, "fixed_large"))
