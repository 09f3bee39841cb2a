"""RePaint (Lugmayr et al. 2022): its schedule, an independent step-by-step implementation of Alg. 1 with
jumps, the exact known region, and R = 1 with nothing known = DDPM ancestral sampling."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ldmkit.diffusion.process import GaussianProcess
from ldmkit.samplers import make_generators, repaint_schedule, sample_ddpm, sample_repaint, uniform_grid
from ldmkit.types import Prediction


class LinearDenoiser(torch.nn.Module):
    """eps_hat = a(t) x_t + 0.2 mean(x_t) (a(t) depends on the timestep): closed form, no weights; the mean
    couples the pixels, so the known region's noise level reaches the generated one."""

    def __init__(self, alphas_cumprod):
        super().__init__()
        self.abar = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
        self.calls: list[int] = []

    def forward(self, x_t, t, cond=None):
        self.calls.append(int(t[0]))
        a = (0.3 + 0.01 * t.double()).view(-1, 1, 1, 1).float()
        eps = a * x_t + 0.2 * x_t.mean(dim=(2, 3), keepdim=True)
        abar = self.abar[t].view(-1, 1, 1, 1).float()
        return Prediction(x0=(x_t - (1 - abar).sqrt() * eps) / abar.sqrt(), eps=eps)


def oracle_schedule(T: int, j: int, r: int) -> list[int]:
    """The paper code's jump schedule written as a list of states visited (T = noise ... 0 = clean)."""
    jumps = {k: r - 1 for k in range(0, T - j, j)}
    states, t = [T], T
    while t >= 1:
        t -= 1
        states.append(t)
        if jumps.get(t, 0) > 0:
            jumps[t] -= 1
            for _ in range(j):
                t += 1
                states.append(t)
    return states


def oracle_repaint(T, betas, denoiser, x_T, known, keep, gen, j, r):
    """Alg. 1 spelled out with the scalar formulas of Ho et al. (fixed_large variance, 0-based t)."""
    b = [float(v) for v in betas]
    abar = [math.prod(1 - v for v in b[: k + 1]) for k in range(T)]
    states = oracle_schedule(T, j, r)
    x = x_T
    for prev, nxt in itertools.pairwise(states):
        if nxt == prev + 1:  # x at index prev-1 -> index prev: q(x_t | x_{t-1})
            z = torch.randn(x.shape[1:], generator=gen).unsqueeze(0)
            x = math.sqrt(1 - b[prev]) * x + math.sqrt(b[prev]) * z
            continue
        t = prev - 1
        pred = denoiser(x, torch.tensor([t]))
        ab_prev = abar[t - 1] if t > 0 else 1.0
        c1 = b[t] * math.sqrt(ab_prev) / (1 - abar[t])
        c2 = (1 - ab_prev) * math.sqrt(1 - b[t]) / (1 - abar[t])
        unknown = c1 * pred.x0 + c2 * x
        if t > 0:
            var = b[t]  # fixed_large
            unknown = unknown + math.sqrt(var) * torch.randn(x.shape[1:], generator=gen).unsqueeze(0)
            eps = torch.randn(x.shape[1:], generator=gen).unsqueeze(0)
            known_t = math.sqrt(abar[t - 1]) * known + math.sqrt(1 - abar[t - 1]) * eps
        else:
            known_t = known
        x = keep * known_t + (1 - keep) * unknown
    return x


def test_schedule_counts_and_order():
    assert repaint_schedule(5) == [-1] * 5
    # T' = 6, j = 2, R = 2: jump points at states 0 and 2
    assert repaint_schedule(6, 2, 2) == [-1, -1, -1, -1, 1, 1, -1, -1, -1, -1, 1, 1, -1, -1]
    for T, j, r in ((6, 2, 2), (20, 3, 4), (50, 10, 2), (7, 6, 3)):
        moves = repaint_schedule(T, j, r)
        visited = [T]
        for m in moves:
            visited.append(visited[-1] + m)
        assert visited == oracle_schedule(T, j, r)
        assert min(visited) == 0 and max(visited) == T and visited[-1] == 0
        jump_points = len(range(0, T - j, j))
        assert moves.count(-1) == T + (r - 1) * j * jump_points


@pytest.mark.parametrize("bad, match", [((0, 1, 1), "num_steps=0"), ((5, 1, 0), "resample=0"),
                                        ((5, 5, 2), "jump_length=5 must be in \\[1, 4\\]")])
def test_schedule_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        repaint_schedule(*bad)


@pytest.mark.parametrize("j, r", [(1, 1), (2, 2), (3, 3)])
def test_matches_an_independent_implementation_of_alg1(j, r):
    T = 12
    process = GaussianProcess(torch.linspace(1e-3, 0.2, T, dtype=torch.float64))
    den = LinearDenoiser(process.alphas_cumprod)
    g = torch.Generator().manual_seed(1)
    x_T = torch.randn(1, 1, 4, 5, generator=g)
    known = torch.rand(1, 1, 4, 5, generator=g) * 2 - 1
    fill = torch.zeros(1, 1, 4, 5, dtype=torch.bool)
    fill[..., 1:3, 1:4] = True
    got = sample_repaint(den, x_T, torch.arange(T - 1, -1, -1), process, known=known, mask=fill,
                         generator=torch.Generator().manual_seed(7), resample=r, jump_length=j)
    want = oracle_repaint(T, process.betas, den, x_T, known, (~fill).float(), torch.Generator().manual_seed(7), j, r)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert torch.equal(got[~fill.expand_as(got)], known[~fill.expand_as(known)])  # the known region, exactly


def test_nothing_known_with_r1_is_ddpm_and_respacing_counts_calls():
    process = GaussianProcess(torch.linspace(1e-4, 0.02, 100, dtype=torch.float64))
    grid = uniform_grid(100, 10)
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    den = LinearDenoiser(process.alphas_cumprod)
    ddpm = sample_ddpm(den, x_T, grid, process, generator=make_generators([3, 4]))
    den.calls.clear()
    rp = sample_repaint(den, x_T, grid, process, known=torch.zeros_like(x_T), mask=torch.ones(1, 1, 4, 4),
                        generator=make_generators([3, 4]))
    assert torch.equal(rp, ddpm)
    assert den.calls == grid.tolist()  # the base timesteps of the respaced chain, in order
    den.calls.clear()
    steps = []
    sample_repaint(den, x_T, grid, process, known=torch.zeros_like(x_T), mask=torch.ones(1, 1, 4, 4),
                   resample=3, jump_length=4, callback=lambda info: steps.append(info["i"]))
    assert len(den.calls) == len(steps) == 10 + 2 * 4 * len(range(0, 6, 4))
    assert steps == list(range(len(steps)))


def test_input_checks():
    process = GaussianProcess(torch.linspace(1e-4, 0.02, 10, dtype=torch.float64))
    den = LinearDenoiser(process.alphas_cumprod)
    x = torch.zeros(1, 1, 4, 4)
    with pytest.raises(ValueError, match="known"):
        sample_repaint(den, x, torch.arange(9, -1, -1), process, known=torch.zeros(1, 1, 4, 5), mask=x)
    with pytest.raises(ValueError, match="mask"):
        sample_repaint(den, x, torch.arange(9, -1, -1), process, known=x, mask=torch.zeros(1, 1, 2, 2))
