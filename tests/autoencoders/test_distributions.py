import math

import torch

from ldmkit.autoencoders.distributions import DiagonalGaussian


def _random_gaussian(seed=0, shape=(3, 2, 4, 4)):
    g = torch.Generator().manual_seed(seed)
    mean = torch.randn(shape, generator=g, dtype=torch.float64)
    logvar = torch.randn(shape, generator=g, dtype=torch.float64)
    return DiagonalGaussian(torch.cat([mean, logvar], 1))


def test_kl_to_standard_normal_matches_torch_distributions_and_is_nonnegative():
    q = _random_gaussian()
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(q.mean, q.std),
                                            torch.distributions.Normal(0.0, 1.0)).sum(dim=(1, 2, 3))
    kl = q.kl()
    assert kl.shape == (3,)
    torch.testing.assert_close(kl, ref)
    assert (kl >= 0).all()
    # KL is zero exactly at N(0, I)
    zero = DiagonalGaussian(torch.zeros(2, 4, 3, 3))
    torch.testing.assert_close(zero.kl(), torch.zeros(2))


def test_kl_between_two_gaussians_matches_closed_form():
    p, q = _random_gaussian(1), _random_gaussian(2)
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(p.mean, p.std),
                                            torch.distributions.Normal(q.mean, q.std)).sum(dim=(1, 2, 3))
    torch.testing.assert_close(p.kl(q), ref)
    torch.testing.assert_close(p.kl(p), torch.zeros(3, dtype=torch.float64))


def test_nll_matches_log_prob_and_kl_matches_monte_carlo():
    q = _random_gaussian(3, shape=(2, 1, 2, 2))
    x = torch.randn(q.shape, dtype=torch.float64)
    ref = -torch.distributions.Normal(q.mean, q.std).log_prob(x).sum(dim=(1, 2, 3))
    torch.testing.assert_close(q.nll(x), ref)
    # KL(q || N(0,I)) = E_q[log q(z) - log N(z; 0, I)], estimated with 20000 samples per image
    n = 20000
    g = torch.Generator().manual_seed(0)
    big = DiagonalGaussian(mean=q.mean.repeat(n, 1, 1, 1), logvar=q.logvar.repeat(n, 1, 1, 1))
    z = big.sample(g)
    std_normal = DiagonalGaussian(mean=torch.zeros_like(z), logvar=torch.zeros_like(z))
    est = (std_normal.nll(z) - big.nll(z)).view(n, 2).mean(0)
    assert torch.allclose(est, q.kl(), rtol=0.05, atol=0.05), (est, q.kl())


def test_sample_moments_mode_and_logvar_clamp():
    mean = torch.full((20000, 1, 1, 1), 2.0)
    logvar = torch.full_like(mean, math.log(0.25))
    q = DiagonalGaussian(mean=mean, logvar=logvar)
    z = q.sample(torch.Generator().manual_seed(0))
    assert abs(z.mean().item() - 2.0) < 0.02 and abs(z.std().item() - 0.5) < 0.02
    assert torch.equal(q.mode(), mean)
    extreme = DiagonalGaussian(mean=torch.zeros(1, 1, 1, 1), logvar=torch.full((1, 1, 1, 1), 1e4))
    assert torch.isfinite(extreme.var).all() and torch.isfinite(extreme.kl()).all()


def test_sample_carries_gradients_to_mean_and_logvar():
    params = torch.randn(2, 4, 3, 3, requires_grad=True)
    DiagonalGaussian(params).sample().sum().backward()
    assert params.grad is not None and (params.grad[:, 2:] != 0).any() and (params.grad[:, :2] != 0).all()
