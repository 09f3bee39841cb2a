"""Solver accuracy beyond moments: DPM-Solver++ beats DDIM at 10 steps; the error falls with the step
count on every grid; DDIM determinism and inversion; DDPM respacing with exact learned variances."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from sampler_oracles import MixtureOracle, gaussian_oracle, mixture_oracle

from ldmkit.samplers import SAMPLERS, ddim_invert, make_timestep_grid, sample_ddim, sample_ddpm
from ldmkit.types import Prediction


def exact_moments(sampler, oracle, grid, process, d):
    """Mean and covariance of a deterministic sampler's output on Gaussian data, without sampling.

    With a Gaussian oracle the sampler is an affine map x_T -> A x_T + b, so the output is N(b, A A^T)
    exactly; b = f(0) and the columns of A are f(e_j) - b.
    """
    basis = torch.cat([torch.zeros(1, d, dtype=torch.float64), torch.eye(d, dtype=torch.float64)])
    out = sampler(oracle, basis, grid, process)
    b = out[0]
    a = (out[1:] - b).T
    return b, a @ a.T


def whitened_cov_error(cov, true_cov):
    chol = torch.linalg.cholesky(true_cov)
    w = torch.linalg.solve_triangular(chol, torch.linalg.solve_triangular(chol, cov, upper=False).T, upper=False)
    return float((w - torch.eye(cov.shape[0], dtype=cov.dtype)).norm())


@pytest.mark.parametrize("grid_name", ["uniform", "quadratic", "logsnr"])
@pytest.mark.parametrize("d", [2, 16])
def test_dpmpp_2m_beats_ddim_at_10_steps_exact(process, grid_name, d):
    """Exact distribution error (no Monte Carlo) at 10 steps on the same grid."""
    oracle = gaussian_oracle(process.alphas_cumprod, d, seed=d)
    grid = make_timestep_grid(grid_name, process.num_timesteps, 10, alphas_cumprod=process.alphas_cumprod)
    errors = {}
    for name in ("ddim", "dpmpp_2m"):
        _, cov = exact_moments(SAMPLERS[name].fn, oracle, grid, process, d)
        errors[name] = whitened_cov_error(cov, oracle.cov)
    assert errors["dpmpp_2m"] < errors["ddim"], errors


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("grid_name", ["uniform", "quadratic", "logsnr", "trailing"])
@pytest.mark.parametrize("name", ["ddim", "dpmpp_2m"])
def test_error_falls_with_steps_on_every_grid(schedule, grid_name, name):
    """Exact whitened covariance error at 5, 10, 20, 40 steps falls strictly, on every grid.

    d = 16 with eigenvalues spread over [0.05, 1.5], so no single direction's error passing through zero
    decides the norm. DPM-Solver++(2M) with first order into the last grid entry only below 15 steps
    failed this on the uniform grid (linear schedule, docs/benchmarks.md: 1.72 at 10 steps, 2.04 at 20)."""
    from ldmkit.diffusion.process import GaussianProcess
    from ldmkit.diffusion.schedules import get_betas

    proc = GaussianProcess(get_betas(schedule, 1000))
    d = 16
    oracle = gaussian_oracle(proc.alphas_cumprod, d, seed=d, diagonal=True)
    errors = []
    for steps in (5, 10, 20, 40):
        grid = make_timestep_grid(grid_name, 1000, steps, alphas_cumprod=proc.alphas_cumprod)
        _, cov = exact_moments(SAMPLERS[name].fn, oracle, grid, proc, d)
        errors.append(whitened_cov_error(cov, oracle.cov))
    assert all(later < earlier for earlier, later in pairwise(errors)), errors


def test_dpmpp_2m_beats_ddim_at_10_steps_mixture(process):
    """On a (non-Gaussian) mixture, both solve the same probability-flow ODE: from the same 10,000
    x_T, DPM-Solver++'s 10-step samples are closer to the converged solution (DPM-Solver++ with 200
    log-SNR steps) than DDIM's, and its sample covariance error is lower."""
    d = 4
    oracle = mixture_oracle(process.alphas_cumprod, d, seed=1)
    g = torch.Generator().manual_seed(5)
    x_T = torch.randn(10_000, d, generator=g, dtype=torch.float64)
    grid = make_timestep_grid("logsnr", process.num_timesteps, 10, alphas_cumprod=process.alphas_cumprod)
    fine = make_timestep_grid("logsnr", 1000, 200, alphas_cumprod=process.alphas_cumprod)
    ref = SAMPLERS["dpmpp_2m"].fn(oracle, x_T, fine, process)
    path_err = {n: float((SAMPLERS[n].fn(oracle, x_T, grid, process) - ref).pow(2).sum(1).mean().sqrt())
                for n in ("ddim", "dpmpp_2m")}
    assert path_err["dpmpp_2m"] < 0.5 * path_err["ddim"], path_err


def test_ddim_eta0_is_deterministic(process):
    oracle = mixture_oracle(process.alphas_cumprod, 3, seed=2)
    x_T = torch.randn(64, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    grid = make_timestep_grid("uniform", 1000, 20)
    a = sample_ddim(oracle, x_T, grid, process, eta=0.0, generator=torch.Generator().manual_seed(1))
    b = sample_ddim(oracle, x_T, grid, process, eta=0.0, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    c = sample_ddim(oracle, x_T, grid, process, eta=1.0, generator=torch.Generator().manual_seed(1))
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("fixed_point_iters,tol", [(0, 0.15), (4, 1e-3)])
def test_ddim_inversion_round_trip(process, fixed_point_iters, tol):
    """Invert images (mixture samples) to noise and regenerate them with eta = 0 over 50 steps.

    Measured max relative error: 0.097 with the usual one-evaluation inversion, 7e-5 with 4 fixed-point
    refinements per step (the exact inverse of the sampler's step)."""
    d = 4
    oracle = mixture_oracle(process.alphas_cumprod, d, seed=3)
    x0 = oracle.sample(32, torch.Generator().manual_seed(0))
    grid = make_timestep_grid("uniform", 1000, 50)
    x_T = ddim_invert(oracle, x0, grid, process, fixed_point_iters=fixed_point_iters)
    assert x_T.std() > 0.5  # it really is noise-like, not x0
    back = sample_ddim(oracle, x_T, grid, process, eta=0.0)
    err = float((back - x0).abs().max() / x0.abs().max())
    assert err < tol, err


class _ExactVarianceOracle(MixtureOracle):
    """Diagonal-Gaussian oracle that also returns the exact log-variance of p(x_{t-1} | x_t) for one
    (respaced) process: beta-tilde_t + c1_t^2 Var[x0 | x_t] per coordinate."""

    def __init__(self, base: MixtureOracle, sampling_process):
        super().__init__(base.abar, base.log_w.exp(), base.means, base.eigvecs, base.eigvals, diagonal=True)
        self.sp = sampling_process
        self.index_of = {int(b): i for i, b in enumerate(sampling_process.timestep_map)}

    def __call__(self, x_t, t, cond=None):
        pred = super().__call__(x_t, t, cond)
        i = torch.tensor([self.index_of[int(v)] for v in t])
        a2 = self.abar[t].view(-1, 1)
        post_var_x0 = self.eigvals[0] * (1 - a2) / (a2 * self.eigvals[0] + 1 - a2)
        c1 = self.sp.posterior_mean_coef1[i].view(-1, 1)
        var = self.sp.posterior_variance[i].view(-1, 1) + c1**2 * post_var_x0
        return Prediction(pred.x0, pred.eps, var_output=var.log())


def test_ddpm_respaced_learned_variance_is_exact(process):
    """With 20 respaced steps, DDPM with the exact learned variance reproduces the covariance, and
    the fixed-small variance (too small on long steps) does not."""
    d, steps = 8, 20
    base = gaussian_oracle(process.alphas_cumprod, d, seed=4, diagonal=True)
    grid = make_timestep_grid("uniform", 1000, steps)
    oracle = _ExactVarianceOracle(base, process.respace(grid.tolist()))
    g = torch.Generator().manual_seed(0)
    x_T = torch.randn(10_000, d, generator=g, dtype=torch.float64)
    learned = sample_ddpm(oracle, x_T, grid, process, variance_type="learned", generator=g)
    small = sample_ddpm(oracle, x_T, grid, process, variance_type="fixed_small", generator=g)
    ratio_learned = torch.var(learned, 0) / base.eigvals[0]
    ratio_small = torch.var(small, 0) / base.eigvals[0]
    assert (ratio_learned - 1).abs().max() < 0.1, ratio_learned
    assert (ratio_small - 1).abs().max() > 0.2, ratio_small


def test_ddpm_learned_range_ends_match_fixed(process):
    """learned_range with v = -1 is fixed_small and with v = +1 is fixed_large (same noise)."""
    d = 3
    base = gaussian_oracle(process.alphas_cumprod, d, seed=5, diagonal=True)
    grid = make_timestep_grid("uniform", 1000, 10)
    x_T = torch.randn(16, d, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def with_v(v):
        def den(x_t, t, cond=None):
            p = base(x_t, t, cond)
            return Prediction(p.x0, p.eps, var_output=torch.full_like(x_t, v))
        return den

    for v, fixed in ((-1.0, "fixed_small"), (1.0, "fixed_large")):
        a = sample_ddpm(with_v(v), x_T, grid, process, variance_type="learned_range",
                        generator=torch.Generator().manual_seed(1))
        b = sample_ddpm(base, x_T, grid, process, variance_type=fixed, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_zero_terminal_snr_schedule(process):
    """abar_{T-1} = 0 (Lin et al. 2024): lambda = -inf at the first step. Every sampler stays finite; the
    deterministic ones get the mean exactly (x_T ~ N(0, I) is then the true prior) and the covariance
    within their usual 50-step discretisation error."""
    from ldmkit.diffusion.process import GaussianProcess
    from ldmkit.diffusion.schedules import get_betas

    zsnr = GaussianProcess(get_betas("linear", 1000, rescale_zero_terminal_snr=True))
    assert float(zsnr.alphas_cumprod[-1]) == 0.0
    d = 4
    oracle = gaussian_oracle(zsnr.alphas_cumprod, d, seed=7)
    # measured: whitened covariance error 0.28 (DDIM) and 0.018 (DPM-Solver++), mean error < 1e-15
    for name, grid_name, tol in (("ddim", "trailing", 0.5), ("dpmpp_2m", "logsnr", 0.05)):
        grid = make_timestep_grid(grid_name, 1000, 50, alphas_cumprod=zsnr.alphas_cumprod)
        assert int(grid[0]) == 999
        mean, cov = exact_moments(SAMPLERS[name].fn, oracle, grid, zsnr, d)
        # At SNR 0 the sampler starts from the exact prior, so even the mean is exact up to discretisation.
        assert float((mean - oracle.mean).abs().max()) < 1e-9, name
        assert whitened_cov_error(cov, oracle.cov) < tol, name
    x = sample_ddpm(oracle, torch.randn(256, d, dtype=torch.float64), make_timestep_grid("trailing", 1000, 20), zsnr,
                    generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(x).all()
