"""Timestep samplers: uniform, and the loss-second-moment importance sampler of Improved DDPM."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ldmkit.diffusion.timesteps import LossSecondMomentSampler, UniformSampler, create_timestep_sampler
from ldmkit.registry import ConfigError


def test_uniform_sampler():
    sampler = UniformSampler(50)
    t, w = sampler.sample(20_000, generator=torch.Generator().manual_seed(0))
    assert t.dtype == torch.int64 and t.min() >= 0 and t.max() <= 49
    assert torch.all(w == 1.0)
    counts = torch.bincount(t, minlength=50).double()
    assert float(((counts - 400) ** 2 / 400).sum()) < 100  # chi-square, 49 dof: P(> 100) ~ 2e-5


def test_loss_second_moment_sampler_weights():
    T = 20
    sampler = LossSecondMomentSampler(T, history_per_term=10, uniform_prob=0.001)
    losses = torch.arange(1, T + 1, dtype=torch.float64)
    for _ in range(9):
        sampler.update_with_losses(torch.arange(T), losses)
    assert not sampler.warmed_up and np.all(sampler.weights() == 1.0)  # warm-up: uniform
    sampler.update_with_losses(torch.arange(T - 1), losses[:-1])
    assert not sampler.warmed_up  # the last t has only 9 losses
    sampler.update_with_losses(torch.tensor([T - 1]), losses[-1:])
    assert sampler.warmed_up
    expected = 0.999 * losses.numpy() / losses.sum().item() + 0.001 / T  # sqrt(E[L^2]) = L for constant losses
    np.testing.assert_allclose(sampler.weights(), expected, rtol=1e-12)
    # the history keeps the last 10 losses per t: ten 0s at t=0 overwrite the history, nothing else moves
    sampler.update_with_losses(torch.zeros(10, dtype=torch.int64), torch.zeros(10))
    assert sampler.weights()[0] == pytest.approx(0.001 / T)
    # importance weights 1 / (T p_t) make the weighted mean unbiased for the uniform average
    p = sampler.weights() / sampler.weights().sum()
    f = np.random.default_rng(0).normal(size=T)
    assert np.sum(p * f / (T * p)) == pytest.approx(f.mean())
    t, w = sampler.sample(50_000, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(w.numpy(), 1.0 / (T * p[t.numpy()]), rtol=1e-6)
    freq = np.bincount(t.numpy(), minlength=T) / 50_000
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / 50_000) + 1e-4)


def test_state_dict_round_trip_and_errors():
    a = LossSecondMomentSampler(5, history_per_term=2)
    a.update_with_losses(torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4]), torch.arange(10.0))
    b = LossSecondMomentSampler(5, history_per_term=2)
    b.load_state_dict(a.state_dict())
    assert b.warmed_up and np.array_equal(a.weights(), b.weights())
    with pytest.raises(ValueError, match="expected"):
        LossSecondMomentSampler(6, history_per_term=2).load_state_dict(a.state_dict())
    with pytest.raises(ValueError, match="outside"):
        a.update_with_losses(torch.tensor([5]), torch.tensor([1.0]))
    with pytest.raises(ConfigError, match="unknown timestep sampler 'importance'; valid: loss_second_moment, uniform"):
        create_timestep_sampler("importance", 10)
    assert isinstance(create_timestep_sampler("loss_second_moment", 10), LossSecondMomentSampler)
