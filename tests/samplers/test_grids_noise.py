"""Timestep grids, per-sample noise and x0 post-processing."""

from __future__ import annotations

import pytest
import torch

from ldmkit.registry import ConfigError
from ldmkit.samplers import GRIDS, make_generators, make_timestep_grid, randn
from ldmkit.samplers.common import dynamic_threshold, postprocess_x0
from ldmkit.types import Prediction


def test_uniform_grid_values():
    assert make_timestep_grid("uniform", 1000, 5).tolist() == [999, 749, 500, 250, 0]  # round(linspace(0, 999, 5))
    assert make_timestep_grid("uniform", 1000, 1000).tolist() == list(range(999, -1, -1))


def test_trailing_grid_values():
    # Lin et al. 2024, Table 2, trailing with T = 1000, 10 steps: 999, 899, ..., 99
    assert make_timestep_grid("trailing", 1000, 10).tolist() == list(range(999, 0, -100))


def test_quadratic_grid_values():
    g = make_timestep_grid("quadratic", 1000, 10)
    expected = torch.round(torch.linspace(0, 999**0.5, 10, dtype=torch.float64) ** 2).long().flip(0)
    assert g.tolist() == expected.tolist()


def test_logsnr_grid_is_even_in_log_snr(process):
    g = make_timestep_grid("logsnr", 1000, 20, alphas_cumprod=process.alphas_cumprod)
    abar = process.alphas_cumprod[g]
    lam = 0.5 * torch.log(abar / (1 - abar))
    steps = lam[1:] - lam[:-1]
    assert g[0] == 999 and g[-1] == 0
    assert steps.min() > 0.5 * steps.mean() and steps.max() < 1.5 * steps.mean()
    with pytest.raises(ValueError, match="alphas_cumprod"):
        make_timestep_grid("logsnr", 1000, 20)


@pytest.mark.parametrize("name", sorted(GRIDS))
@pytest.mark.parametrize("num_timesteps,num_steps", [(1000, 1), (1000, 7), (1000, 50), (100, 100), (10, 9)])
def test_grids_are_strictly_decreasing_and_in_range(process, name, num_timesteps, num_steps):
    abar = torch.linspace(0.9999, 0.001, num_timesteps, dtype=torch.float64)
    g = make_timestep_grid(name, num_timesteps, num_steps, alphas_cumprod=abar)
    assert g.dtype == torch.int64 and g.numel() == num_steps
    assert (g[1:] < g[:-1]).all() and g.min() >= 0 and g.max() <= num_timesteps - 1


def test_grid_errors():
    with pytest.raises(ConfigError, match="unknown timestep grid 'cosine'; valid: logsnr, quadratic, trailing, uniform"):
        make_timestep_grid("cosine", 1000, 10)
    with pytest.raises(ValueError, match="num_steps=0"):
        make_timestep_grid("uniform", 1000, 0)
    with pytest.raises(ValueError, match="num_steps=2000"):
        make_timestep_grid("trailing", 1000, 2000)


def test_per_sample_noise_depends_on_seed_only():
    a = randn((4, 3, 5), make_generators([1, 2, 3, 4]))
    b = randn((1, 3, 5), make_generators([3]))
    assert torch.equal(a[2], b[0])
    c = randn((4, 3, 5), make_generators([1, 2, 3, 4]), dtype=torch.float64)
    assert torch.equal(c.float(), a)  # same numbers in every dtype
    with pytest.raises(ValueError, match="2 generators for a batch of 3"):
        randn((3, 2), make_generators([0, 1]))


def test_dynamic_threshold_matches_definition():
    x0 = torch.tensor([[0.5, -0.2, 0.1, 0.3], [3.0, -2.0, 0.5, 1.0]])
    out = dynamic_threshold(x0, 1.0)
    torch.testing.assert_close(out[0], x0[0])  # s = max(0.5, 1) = 1: unchanged
    torch.testing.assert_close(out[1], x0[1] / 3.0)  # s = 3
    q = dynamic_threshold(x0, 0.5)[1]  # s = median(|x|) = 1.5 -> clamp to [-1.5, 1.5] then / 1.5
    torch.testing.assert_close(q, torch.tensor([1.0, -1.0, 0.5 / 1.5, 1.0 / 1.5]))


def test_postprocess_recomputes_eps_consistently():
    abar = 0.3
    x0 = torch.tensor([[2.0, -0.5]], dtype=torch.float64)
    eps = torch.tensor([[0.1, 0.2]], dtype=torch.float64)
    x_t = abar**0.5 * x0 + (1 - abar) ** 0.5 * eps
    p = postprocess_x0(Prediction(x0, eps), x_t, abar, clip_denoised=True, dynamic_threshold_percentile=None)
    assert p.x0.tolist() == [[1.0, -0.5]]
    torch.testing.assert_close(abar**0.5 * p.x0 + (1 - abar) ** 0.5 * p.eps, x_t)
