"""Each deterministic-grid sampler equals a straightforward transcription of its paper's update.

The references below are written from the equations, one loop each, with their own coefficient code
(alpha, sigma, lambda from alpha-bar), on a NON-UNIFORM grid: with a grid even in log-SNR the step ratio
r of DPM-Solver++ is 1 and an inverted r would go unnoticed. The denoiser is a fixed, non-trivial linear
map of x_t and t (not an optimal one), so every coefficient matters. float64 throughout, atol 1e-10.
"""

from __future__ import annotations

import math

import pytest
import torch

from ldmkit.samplers import ddim_invert, sample_ddim, sample_dpmpp_2m
from ldmkit.samplers.noise import randn_like
from ldmkit.types import Prediction

GRID = [999, 870, 600, 433, 200, 91, 17, 3]
ATOL = 1e-10


class LinearDenoiser:
    """x0_hat = (A + (t/T) B) x_t + (t/T) c, eps_hat = (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t)."""

    def __init__(self, alphas_cumprod, d: int = 3, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.abar = alphas_cumprod.double()
        self.a = 0.6 * torch.eye(d, dtype=torch.float64) + 0.15 * torch.randn(d, d, generator=g, dtype=torch.float64)
        self.b = 0.3 * torch.randn(d, d, generator=g, dtype=torch.float64)
        self.c = 0.5 * torch.randn(d, generator=g, dtype=torch.float64)
        self.num_timesteps = len(self.abar)

    def x0(self, x: torch.Tensor, t: int) -> torch.Tensor:
        f = t / self.num_timesteps
        return x @ (self.a + f * self.b).T + f * self.c

    def eps(self, x: torch.Tensor, t: int) -> torch.Tensor:
        a = float(self.abar[t])
        return (x - math.sqrt(a) * self.x0(x, t)) / math.sqrt(1.0 - a)

    def __call__(self, x_t, t, cond=None) -> Prediction:  # the library's contract: t is [N] int64
        t0 = int(t[0])
        assert bool((t == t0).all())
        return Prediction(x0=self.x0(x_t, t0), eps=self.eps(x_t, t0))


@pytest.fixture()
def setup(process):
    den = LinearDenoiser(process.alphas_cumprod)
    x_T = torch.randn(5, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return den, x_T, process.alphas_cumprod.double()


def reference_ddim(den, x_T, grid, abar, eta, generator):
    """Song et al. 2021, Eq. 12, with sigma_t(eta) of Eq. 16; the last step goes to alpha_0 = 1 (x0)."""
    x = x_T
    alphas = [float(abar[t]) for t in grid] + [1.0]  # alpha_t of the paper = our alpha-bar
    for k, t in enumerate(grid):
        a_t, a_prev = alphas[k], alphas[k + 1]
        eps = den.eps(x, t)
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t)) * math.sqrt(1 - a_t / a_prev)
        predicted_x0 = (x - math.sqrt(1 - a_t) * eps) / math.sqrt(a_t)
        x = math.sqrt(a_prev) * predicted_x0 + math.sqrt(1 - a_prev - sigma**2) * eps
        if sigma > 0:
            x = x + sigma * randn_like(x, generator)  # the library's noise stream: one draw per noisy step
    return x


@pytest.mark.parametrize("eta", [0.0, 0.6, 1.0])
def test_ddim_matches_song_eq12_on_nonuniform_grid(setup, process, eta):
    den, x_T, abar = setup
    got = sample_ddim(den, x_T, torch.tensor(GRID), process, eta=eta, generator=torch.Generator().manual_seed(7))
    want = reference_ddim(den, x_T, GRID, abar, eta, torch.Generator().manual_seed(7))
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)


def reference_dpmpp_2m(den, x_T, grid, abar, lower_order_final):
    """Lu et al. 2022 (DPM-Solver++), Algorithm 2, over t_0 = grid[0] > ... > t_M = grid[-1]; then the
    final denoising x0 = x_theta(x_{t_M}, t_M). ``lower_order_final`` makes the step into t_M first order.

        h_i = lambda_{t_i} - lambda_{t_{i-1}},  r_i = h_{i-1} / h_i,
        D_i = (1 + 1/(2 r_i)) x_theta(x_{t_{i-1}}, t_{i-1}) - 1/(2 r_i) x_theta(x_{t_{i-2}}, t_{i-2}),
        x_{t_i} = (sigma_{t_i} / sigma_{t_{i-1}}) x_{t_{i-1}} - alpha_{t_i} (exp(-h_i) - 1) D_i.
    """
    alpha = [math.sqrt(float(abar[t])) for t in grid]
    sigma = [math.sqrt(1.0 - float(abar[t])) for t in grid]
    lam = [math.log(a / s) for a, s in zip(alpha, sigma)]
    big_m = len(grid) - 1
    x = x_T
    data_pred = [den.x0(x, grid[0])]  # x_theta at t_0
    h1 = lam[1] - lam[0]
    x = (sigma[1] / sigma[0]) * x - alpha[1] * (math.exp(-h1) - 1) * data_pred[0]
    for i in range(2, big_m + 1):
        data_pred.append(den.x0(x, grid[i - 1]))
        h_i, h_prev = lam[i] - lam[i - 1], lam[i - 1] - lam[i - 2]
        r_i = h_prev / h_i
        d_i = (1 + 1 / (2 * r_i)) * data_pred[-1] - 1 / (2 * r_i) * data_pred[-2]
        if lower_order_final and i == big_m:
            d_i = data_pred[-1]
        x = (sigma[i] / sigma[i - 1]) * x - alpha[i] * (math.exp(-h_i) - 1) * d_i
    return den.x0(x, grid[-1])


@pytest.mark.parametrize("lower_order_final", [True, False])
def test_dpmpp_2m_matches_lu_alg2_on_nonuniform_grid(setup, process, lower_order_final):
    den, x_T, abar = setup
    got = sample_dpmpp_2m(den, x_T, torch.tensor(GRID), process, lower_order_final=lower_order_final)
    want = reference_dpmpp_2m(den, x_T, GRID, abar, lower_order_final)
    torch.testing.assert_close(got, want, rtol=0, atol=ATOL)
    # The grid's step ratios are far from 1, so the second-order terms matter at this tolerance.
    lam = [0.5 * math.log(float(abar[t]) / (1 - float(abar[t]))) for t in GRID]
    ratios = [(lam[i - 1] - lam[i - 2]) / (lam[i] - lam[i - 1]) for i in range(2, len(GRID))]
    assert min(ratios) < 0.7 and max(ratios) > 2.0, ratios
    first_order = sample_ddim(den, x_T, torch.tensor(GRID), process)  # DPM-Solver++(1) = DDIM
    assert (got - first_order).abs().max() > 1e-3


def test_dpmpp_2m_default_is_lower_order_final(setup, process):
    den, x_T, abar = setup
    got = sample_dpmpp_2m(den, x_T, torch.tensor(GRID), process)
    torch.testing.assert_close(got, reference_dpmpp_2m(den, x_T, GRID, abar, True), rtol=0, atol=ATOL)


def test_ddim_invert_matches_reference(setup, process):
    """Inversion, Song et al. 2021 Sec. 4.3: Eq. 12 with eta = 0 run from the clean state up the grid,
    eps taken at the known point (x_s, s) (at (x0, t_0) on the first step)."""
    den, x0, abar = setup
    x, s = x0, None
    for t in reversed(GRID):
        a_s = 1.0 if s is None else float(abar[s])
        a_t = float(abar[t])
        eps = den.eps(x, t if s is None else s)
        x = math.sqrt(a_t) * (x - math.sqrt(1 - a_s) * eps) / math.sqrt(a_s) + math.sqrt(1 - a_t) * eps
        s = t
    got = ddim_invert(den, x0, torch.tensor(GRID), process)
    torch.testing.assert_close(got, x, rtol=0, atol=ATOL)
