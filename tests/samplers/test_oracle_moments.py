"""Samplers reproduce the data distribution with an exact (analytic) denoiser.

Error measures, in the data's whitened coordinates (Sigma = L L^T):
  mean error = ||L^-1 (m - mu)||_2,   covariance error = ||L^-1 S L^-T - I||_F,
where m, S are the sample mean and covariance. With N samples from the exact distribution these are
about sqrt(d / N) and sqrt(d (d + 1) / N) (Monte Carlo error). The stated tolerance is

  mean:       3 sqrt(d / N)            + 0.02
  covariance: 3 sqrt(d (d + 1) / N)    + c_sampler sqrt(d)

with the discretisation allowance c = 0.02 (DDPM, 1000 steps), 0.10 (DDIM, 50 quadratic steps), 0.04
(DPM-Solver++(2M), 20 log-SNR steps). The exact (sample-free) discretisation errors of the deterministic
samplers, from their affine maps on Gaussian data, are 0.10 / 0.27 (DDIM, d = 2 / 16) and 0.04 / 0.12
(DPM-Solver++) in the same units. The whitened units weigh the smallest-variance direction (variance 0.05,
30x below the largest) as much as the largest, which is what makes few-step samplers look worst.
A sampler with a wrong coefficient fails these tolerances (see the wrong-schedule test).
"""

from __future__ import annotations

import math

import pytest
import torch
from sampler_oracles import gaussian_oracle, mixture_oracle

from ldmkit.diffusion.process import GaussianProcess
from ldmkit.diffusion.schedules import get_betas
from ldmkit.samplers import SAMPLERS, make_timestep_grid

N = 10_000
MC_FACTOR = 3.0
DISCRETISATION = {"ddpm": 0.02, "ddim": 0.10, "dpmpp_2m": 0.04}
CASES = [("ddpm", 1000, "uniform"), ("ddim", 50, "quadratic"), ("dpmpp_2m", 20, "logsnr")]


def whitened_errors(samples: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    chol = torch.linalg.cholesky(cov)
    z = torch.linalg.solve_triangular(chol, (samples - mean).T, upper=False).T  # whitened samples
    m = z.mean(0)
    s = torch.cov(z.T)
    eye = torch.eye(cov.shape[0], dtype=cov.dtype)
    return float(m.norm()), float((s - eye).norm())


def tolerances(d: int, name: str) -> tuple[float, float]:
    return (MC_FACTOR * math.sqrt(d / N) + 0.02,
            MC_FACTOR * math.sqrt(d * (d + 1) / N) + DISCRETISATION[name] * math.sqrt(d))


def run(name, steps, grid, oracle, process, d, seed=0, **opts):
    g = torch.Generator().manual_seed(seed)
    x_T = torch.randn(N, d, generator=g, dtype=torch.float64)
    timesteps = make_timestep_grid(grid, process.num_timesteps, steps, alphas_cumprod=process.alphas_cumprod)
    return SAMPLERS[name].fn(oracle, x_T, timesteps, process, generator=g, **opts)


# DDPM's 1000 steps on 10,000 samples are the slow part: on the Gaussian it runs once, at d = 8 (the
# mixture test runs it in d = 3 with rotated covariances); DDIM and DPM-Solver++ run at d = 2 and 16.
# Stochastic DDIM (eta > 0) runs at d = 2 with 100 quadratic steps (measured covariance error 0.05 / 0.09
# for eta = 0.5 / 1; at 50 steps 0.12 / 0.18).
GAUSSIAN_CASES = [(*case, d, {}) for case in CASES for d in ((8,) if case[0] == "ddpm" else (2, 16))]
GAUSSIAN_CASES += [("ddim", 100, "quadratic", 2, {"eta": eta}) for eta in (0.5, 1.0)]


@pytest.mark.parametrize("name,steps,grid,d,opts", GAUSSIAN_CASES)
def test_gaussian_mean_and_covariance(process, name, steps, grid, d, opts):
    # The samplers are rotation-equivariant (scalar coefficients, isotropic noise), so a diagonal
    # covariance loses no generality; d = 16 uses one to keep the oracle elementwise (fast), d = 2 a
    # rotated one.
    oracle = gaussian_oracle(process.alphas_cumprod, d, seed=d, diagonal=d > 2)
    x = run(name, steps, grid, oracle, process, d, **opts)
    assert x.shape == (N, d) and x.dtype == torch.float64
    err_m, err_c = whitened_errors(x, oracle.mean, oracle.cov)
    tol_m, tol_c = tolerances(d, name)
    print(f"{name} d={d}: mean error {err_m:.4f} (tol {tol_m:.4f}), covariance error {err_c:.4f} (tol {tol_c:.4f})")
    assert err_m < tol_m, f"{name}: mean error {err_m:.4f} >= {tol_m:.4f}"
    assert err_c < tol_c, f"{name}: covariance error {err_c:.4f} >= {tol_c:.4f}"


@pytest.mark.parametrize("name,steps,grid", CASES)
def test_mixture_mean_and_covariance(process, name, steps, grid):
    d = 3
    oracle = mixture_oracle(process.alphas_cumprod, d, seed=1)
    x = run(name, steps, grid, oracle, process, d, seed=1)
    err_m, err_c = whitened_errors(x, oracle.mean, oracle.cov)
    tol_m, tol_c = tolerances(d, name)
    print(f"{name} d={d}: mean error {err_m:.4f} (tol {tol_m:.4f}), covariance error {err_c:.4f} (tol {tol_c:.4f})")
    assert err_m < tol_m, f"{name}: mean error {err_m:.4f} >= {tol_m:.4f}"
    assert err_c < tol_c, f"{name}: covariance error {err_c:.4f} >= {tol_c:.4f}"


def test_tolerance_detects_wrong_schedule(process):
    """Negative control: sampling with the cosine schedule's coefficients while the oracle assumes the
    linear one must fail the same tolerance, so the tests above can fail."""
    d = 2
    oracle = gaussian_oracle(process.alphas_cumprod, d, seed=d)
    wrong = GaussianProcess(get_betas("cosine", 1000))
    x = run("ddim", 50, "quadratic", oracle, wrong, d)
    err_m, err_c = whitened_errors(x, oracle.mean, oracle.cov)
    tol_m, tol_c = tolerances(d, "ddim")
    print(f"wrong schedule: mean error {err_m:.4f} (tol {tol_m:.4f}), covariance error {err_c:.4f} (tol {tol_c:.4f})")
    assert err_m > tol_m or err_c > tol_c
