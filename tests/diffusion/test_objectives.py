"""training_losses: exact L_simple and min-SNR values, the hybrid stop-gradient and its variance gradient against a
closed form, timestep mapping, the loss/variance rule, defaults."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from scipy import stats

from ldmkit.diffusion import GaussianProcess, get_betas, training_losses
from ldmkit.diffusion import parameterization as P
from ldmkit.diffusion.config import DiffusionConfig
from ldmkit.diffusion.objectives import LOSS_TYPES, LossType, check_loss_and_variance
from ldmkit.diffusion.process import VARIANCE_TYPES, VarianceType
from ldmkit.registry import ConfigError
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

    def denoiser(x_t, t_model, cond):
        out = P.target(kind, x0, noise, process.alphas_cumprod[t_model]) + 0.1
        return Prediction(*P.prediction_from_output(out, x_t, process.alphas_cumprod[t_model], kind))

    terms = training_losses(denoiser, process, x0, t, noise=noise, prediction_type=kind)
    torch.testing.assert_close(terms["mse"], torch.full((6,), 0.01, dtype=torch.float64), rtol=1e-6, atol=1e-9)
    assert torch.equal(terms["loss"], terms["mse"]) and "vlb" not in terms
    # min-SNR-5 (Hang et al. 2023, Eq. 9 and Sec. 3.4), from the betas in numpy: x0-space weight min(SNR, 5),
    # divided by SNR for eps and by SNR + 1 for v
    abar = np.cumprod(1.0 - get_betas("cosine", 100))[t.numpy()]
    snr = abar / (1.0 - abar)
    expected = {"eps": np.minimum(snr, 5.0) / snr, "x0": np.minimum(snr, 5.0), "v": np.minimum(snr, 5.0) / (snr + 1)}
    assert not np.allclose(expected[kind], 1.0)  # some t of the batch have SNR above 5 and some below
    weighted = training_losses(denoiser, process, x0, t, noise=noise, prediction_type=kind, min_snr_gamma=5.0)
    np.testing.assert_allclose(weighted["mse"].numpy(), 0.01 * expected[kind], rtol=1e-6)


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


@pytest.mark.parametrize("v", [1.5, -1.8, 0.3])
def test_hybrid_trains_learned_range_v_outside_its_range(process, v):
    """L_vlb's gradient on v equals the closed form, also for v outside [-1, 1] (a training clamp made it 0).

    For t > 0, L_t = KL(N(mu, bt) || N(mu_theta, S)) / log 2 per dim with log S = (v+1)/2 log b + (1-v)/2 log bt,
    so dL_t/dv = mean_dims 0.5 (1 - (bt + (mu - mu_theta)^2) / S) * 0.5 (log b - log bt) / log 2, where
    mu - mu_theta = sqrt(abar_{t-1}) b / (1 - abar_t) (x0 - x0_hat) (Ho et al. 2020, Eq. 7).
    """
    x0, noise, t = _data()
    t = t.clamp(min=1)  # KL terms only
    model = _Toy(process)
    with torch.no_grad():
        model.b.fill_(v)
    terms = training_losses(model, process, x0, t, noise=noise, loss_type="hybrid", variance_type="learned_range")
    _, g_b = _grads(model, terms["vlb"])
    betas = get_betas("cosine", 100)
    abar = np.cumprod(1.0 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    ti = t.numpy()
    b, bt = betas[ti], (betas * (1 - abar_prev) / (1 - abar))[ti]
    log_s = (v + 1) / 2 * np.log(b) + (1 - v) / 2 * np.log(bt)
    x0n, noisen = x0.numpy().reshape(6, -1), noise.numpy().reshape(6, -1)
    x_t = np.sqrt(abar[ti])[:, None] * x0n + np.sqrt(1 - abar[ti])[:, None] * noisen
    diff = (np.sqrt(abar_prev) * betas / (1 - abar))[ti][:, None] * (x0n - 0.5 * x_t)  # x0_hat = w x_t, w = 0.5
    d_kl = 0.5 * (1 - (bt[:, None] + diff**2) / np.exp(log_s)[:, None])
    expected = float((d_kl.mean(axis=1) * 0.5 * (np.log(b) - np.log(bt))).sum() / math.log(2))
    assert abs(expected) > 1e-3
    assert g_b == pytest.approx(expected, rel=1e-9)


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
    with pytest.raises(ConfigError, match="loss_type='simple' does not fit variance_type='learned_range': .*"
                                          r"\(valid pairs: 'simple' with fixed_small/fixed_large, 'vlb' with "
                                          r"any, 'hybrid' with learned/learned_range\)"):
        training_losses(model, process, x0, t, variance_type="learned_range")
    with pytest.raises(ConfigError, match="the VLB term of L_hybrid only trains a learned variance"):
        training_losses(model, process, x0, t, loss_type="hybrid", variance_type="fixed_small")
    with pytest.raises(ConfigError, match="unknown loss type 'mse'; valid: hybrid, simple, vlb"):
        training_losses(model, process, x0, t, loss_type="mse")
    with pytest.raises(ConfigError, match="unknown variance type 'fixed'"):
        training_losses(model, process, x0, t, loss_type="vlb", variance_type="fixed")
    with pytest.raises(ConfigError, match="unknown prediction type 'score'; valid: eps, v, x0"):
        training_losses(model, process, x0, t, prediction_type="score")


def test_loss_variance_rule_is_one_table_used_by_the_config_too():
    """simple: fixed variances only; hybrid: learned only; vlb: every variance type (and the registries match the
    Literal types that the config loader checks)."""
    assert set(LOSS_TYPES) == set(LossType.__args__) and set(VARIANCE_TYPES) == set(VarianceType.__args__)
    assert set(P.PREDICTION_TYPES) == set(P.PredictionType.__args__)
    fixed, learned = {"fixed_small", "fixed_large"}, {"learned", "learned_range"}
    allowed = {"simple": fixed, "hybrid": learned, "vlb": fixed | learned}
    for loss_type, ok in allowed.items():
        for variance_type in fixed | learned:
            if variance_type in ok:
                check_loss_and_variance(loss_type, variance_type)
                DiffusionConfig(loss_type=loss_type, variance_type=variance_type)
                continue
            with pytest.raises(ConfigError, match=f"loss_type='{loss_type}' does not fit"):
                check_loss_and_variance(loss_type, variance_type)
            with pytest.raises(ConfigError, match=f"loss_type='{loss_type}' does not fit"):
                DiffusionConfig(loss_type=loss_type, variance_type=variance_type)


def test_training_losses_defaults_are_the_config_defaults():
    defaults = DiffusionConfig()
    params = inspect.signature(training_losses).parameters
    for name in ("loss_type", "variance_type", "prediction_type", "vlb_weight", "min_snr_gamma"):
        assert params[name].default == getattr(defaults, name), name
