"""training_losses: exact L_simple values, the hybrid stop-gradient, timestep mapping, errors."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from ldmkit.diffusion import GaussianProcess, get_betas, training_losses
from ldmkit.diffusion import parameterization as P
from ldmkit.types import Prediction


@pytest.fixture(scope="module")
def process():
    return GaussianProcess(get_betas("cosine", 100))


def _data(n=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randint(0, 256, (n, 1, 4, 4), generator=gen).double() / 127.5 - 1
    noise = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    t = torch.randint(0, 100, (n,), generator=gen)
    return x0, noise, t


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
def test_simple_loss_is_the_mse_of_the_chosen_target(process, kind):
    """A denoiser whose raw output is the true target + 0.1 has L_simple = 0.01 under its own parameterization."""
    x0, noise, t = _data()
    a = process.alphas_cumprod[t]

    def denoiser(x_t, t_model, cond):
        out = P.target(kind, x0, noise, process.alphas_cumprod[t_model]) + 0.1
        return Prediction(*P.prediction_from_output(out, x_t, process.alphas_cumprod[t_model], kind))

    terms = training_losses(denoiser, process, x0, t, noise=noise, prediction_type=kind)
    torch.testing.assert_close(terms["mse"], torch.full((6,), 0.01, dtype=torch.float64), rtol=1e-6, atol=1e-9)
    assert torch.equal(terms["loss"], terms["mse"]) and "vlb" not in terms
    weighted = training_losses(denoiser, process, x0, t, noise=noise, prediction_type=kind, min_snr_gamma=5.0)
    torch.testing.assert_close(weighted["mse"], terms["mse"] * P.min_snr_weight(process.snr[t], 5.0, kind))
    assert a.shape == (6,)


class _Toy(torch.nn.Module):
    """x0_hat = w * x_t, var_output = b: separate parameters for the mean and for the variance."""

    def __init__(self, process):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(0.2, dtype=torch.float64))
        self.process = process
        self.seen_t = []

    def forward(self, x_t, t_model, cond):
        self.seen_t.append(t_model.clone())
        x0 = self.w * x_t
        eps = P.eps_from_x0(x_t, x0, self.process.alphas_cumprod[t_model])
        return Prediction(x0, eps, self.b * torch.ones_like(x_t))


def _grads(model, value):
    model.zero_grad()
    value.sum().backward(retain_graph=True)
    return [0.0 if p.grad is None else float(p.grad) for p in (model.w, model.b)]


def test_hybrid_vlb_term_trains_only_the_variance(process):
    x0, noise, t = _data()
    t[0] = 0  # include the decoder term
    model = _Toy(process)
    terms = training_losses(model, process, x0, t, noise=noise, loss_type="hybrid", variance_type="learned_range")
    T = process.num_timesteps
    torch.testing.assert_close(terms["loss"], terms["mse"] + 0.001 * T * terms["vlb"])
    g_vlb_w, g_vlb_b = _grads(model, terms["vlb"])
    g_mse_w, g_mse_b = _grads(model, terms["mse"])
    assert g_vlb_w == 0.0 and g_vlb_b != 0.0  # stop-gradient on the mean
    assert g_mse_w != 0.0 and g_mse_b == 0.0
    # the pure VLB objective trains the mean too
    terms = training_losses(model, process, x0, t, noise=noise, loss_type="vlb", variance_type="learned")
    torch.testing.assert_close(terms["loss"], T * terms["vlb"])
    g_w, g_b = _grads(model, terms["loss"])
    assert g_w != 0.0 and g_b != 0.0
    assert terms["prior"].shape == (6,) and not terms["prior"].requires_grad


def test_denoiser_sees_base_timesteps_of_a_respaced_process(process):
    sub = process.respace([0, 10, 50, 99])
    x0, noise, _ = _data(4)
    model = _Toy(process)  # a denoiser knows the base process's alpha-bar only
    t = torch.tensor([3, 2, 1, 0])
    training_losses(model, sub, x0, t, noise=noise, loss_type="vlb", variance_type="fixed_large")
    assert torch.equal(model.seen_t[-1], torch.tensor([99, 50, 10, 0]))


def test_vlb_term_is_the_decoder_nll_at_t0_and_a_kl_elsewhere(process):
    """With a perfect x0 prediction and fixed_small variance every KL term vanishes; the t = 0 term does not."""
    x0, noise, _ = _data(4)
    t = torch.tensor([0, 1, 50, 99])

    def perfect(x_t, t_model, cond):
        return Prediction(x0, P.eps_from_x0(x_t, x0, process.alphas_cumprod[t_model]))

    terms = training_losses(perfect, process, x0, t, noise=noise, loss_type="vlb", variance_type="fixed_small")
    assert torch.all(terms["vlb"][1:].abs() < 1e-9)
    # decoder: -log2 of the mass of the +-1/255 bin around each level under N(x0, beta-tilde_1), one-sided at +-1
    z = (1 / 255) / math.sqrt(float(process.posterior_variance[1]))
    edge = (x0[0].abs() > 0.999).double()
    mass = edge * stats.norm.cdf(z) + (1 - edge) * (stats.norm.cdf(z) - stats.norm.cdf(-z))
    expected = -torch.log2(mass).mean()
    assert float(terms["vlb"][0]) == pytest.approx(float(expected), rel=1e-9)


def test_invalid_combinations_are_named(process):
    x0, _, t = _data(2)
    model = _Toy(process)
    with pytest.raises(ValueError, match="'simple' does not train a 'learned_range' variance"):
        training_losses(model, process, x0, t, variance_type="learned_range")
    with pytest.raises(ValueError, match="'hybrid' adds a VLB term"):
        training_losses(model, process, x0, t, loss_type="hybrid", variance_type="fixed_small")
    with pytest.raises(ValueError, match="valid loss types: simple, vlb, hybrid"):
        training_losses(model, process, x0, t, loss_type="mse")
    with pytest.raises(ValueError, match="valid prediction types"):
        training_losses(model, process, x0, t, prediction_type="score")
