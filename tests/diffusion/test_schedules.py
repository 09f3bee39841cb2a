"""Noise schedules against their defining formulas, and their Pillow plot (``ldmkit.training.plot``) / CLI."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from ldmkit.cli import main
from ldmkit.diffusion.schedules import SCHEDULES, get_betas
from ldmkit.registry import ConfigError
from ldmkit.training.plot import plot_schedules


def test_linear_matches_ho_and_scales_with_T():
    b = get_betas("linear", 1000)
    assert b.dtype == np.float64 and b.shape == (1000,)
    assert b[0] == pytest.approx(1e-4, rel=1e-12) and b[-1] == pytest.approx(0.02, rel=1e-12)
    assert np.allclose(np.diff(b), np.diff(b)[0], rtol=1e-9)
    b4000 = get_betas("linear", 4000)  # improved-diffusion: both ends times 1000 / T
    assert b4000[0] == pytest.approx(2.5e-5, rel=1e-12) and b4000[-1] == pytest.approx(0.005, rel=1e-12)
    # the scaling keeps the final alpha-bar close to the T=1000 one
    assert np.log(np.prod(1 - b4000)) == pytest.approx(np.log(np.prod(1 - b)), rel=0.01)


def test_cosine_matches_nichol_dhariwal_eq17():
    T, s = 1000, 0.008
    b = get_betas("cosine", T)
    abar = np.cumprod(1 - b)
    f = lambda t: np.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2
    t = np.arange(1, T + 1)
    unclipped = b < 0.999
    assert unclipped[:-1].all() and b.max() == pytest.approx(0.999)
    np.testing.assert_allclose(abar[:-1], (f(t) / f(0))[:-1], rtol=1e-10)


def test_scaled_linear_and_sigmoid():
    b = get_betas("scaled_linear", 1000)
    assert b[0] == pytest.approx(0.00085) and b[-1] == pytest.approx(0.012)
    assert np.allclose(np.diff(np.sqrt(b)), np.diff(np.sqrt(b))[0], rtol=1e-9)
    abar = np.cumprod(1 - get_betas("sigmoid", 1000))
    assert np.all(np.diff(abar) < 0) and abar[0] > 0.999
    assert abar[499] == pytest.approx(0.5, abs=1e-12)  # symmetric sigmoid: alpha-bar(T/2) = 1/2


def _chen_gamma(u: float, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> float:
    """Chen 2023, Alg. 1 (sigmoid_schedule, continuous time u in [0, 1]), in plain Python floats."""
    def sig(z):
        return 1.0 / (1.0 + math.exp(-z))

    return (sig(end / tau) - sig((u * (end - start) + start) / tau)) / (sig(end / tau) - sig(start / tau))


@pytest.mark.parametrize("T", [50, 1000])
def test_sigmoid_endpoints_match_chen_alg1(T):
    """alpha-bar at index t is gamma((t+1)/T); beta_0 = 1 - gamma(1/T); gamma(1) = 0 makes beta_{T-1} hit the clip."""
    b = get_betas("sigmoid", T)
    abar = np.cumprod(1 - b)
    assert _chen_gamma(0.0) == 1.0 and _chen_gamma(1.0) == 0.0
    assert b[0] == pytest.approx(1.0 - _chen_gamma(1 / T), rel=1e-10)
    assert abar[0] == pytest.approx(_chen_gamma(1 / T), rel=1e-12)
    assert b[-2] == pytest.approx(1.0 - _chen_gamma((T - 1) / T) / _chen_gamma((T - 2) / T), rel=1e-10)
    assert abar[-2] == pytest.approx(_chen_gamma((T - 1) / T), rel=1e-9)
    assert b[-1] == 0.999  # 1 - gamma(1) / gamma((T-1)/T) = 1, clipped at MAX_BETA as for cosine
    assert abar[-1] == pytest.approx(0.001 * _chen_gamma((T - 1) / T), rel=1e-9)
    # and in the middle, every step against the closed form
    t = np.arange(T - 1)
    np.testing.assert_allclose(abar[:-1], [_chen_gamma((i + 1) / T) for i in t], rtol=1e-9)


@pytest.mark.parametrize("name", sorted(SCHEDULES))
def test_zero_terminal_snr_rescaling(name):
    base = np.sqrt(np.cumprod(1 - get_betas(name, 200)))
    b = get_betas(name, 200, rescale_zero_terminal_snr=True)
    sqrt_abar = np.sqrt(np.cumprod(1 - b))
    assert b[-1] == 1.0 and sqrt_abar[-1] == 0.0
    assert sqrt_abar[0] == pytest.approx(base[0], rel=1e-12)
    # Lin et al. Alg. 1: the new sqrt(alpha-bar) is an affine function of the old one
    slope, intercept = np.polyfit(base, sqrt_abar, 1)
    np.testing.assert_allclose(slope * base + intercept, sqrt_abar, atol=1e-12)
    assert np.all((b > 0) & (b <= 1))


def test_unknown_schedule_lists_valid_names():
    with pytest.raises(ConfigError, match="unknown noise schedule 'quadratic'; valid: cosine, linear, "
                                          "scaled_linear, sigmoid"):
        get_betas("quadratic", 100)
    with pytest.raises(ValueError, match="positive integer"):
        get_betas("linear", 0)
    with pytest.raises(ValueError, match="num_timesteps > 20"):
        get_betas("linear", 20)


def test_plot_draws_every_curve(tmp_path):
    curves = {name: np.cumprod(1 - get_betas(name, 100)) for name in ["linear", "cosine", "sigmoid"]}
    path = plot_schedules(curves, tmp_path / "sub" / "s.png")
    img = np.asarray(Image.open(path).convert("RGB"))
    assert img.shape == (460, 1000, 3)
    for color in [(31, 119, 180), (255, 127, 14), (44, 160, 44)]:  # one per schedule (curve + legend)
        assert np.all(img == color, axis=-1).sum() > 200, color


def test_cli_schedule_plot(tmp_path, capsys):
    out = tmp_path / "schedules.png"
    assert main(["schedule", "plot", "linear", "cosine", "-o", str(out), "-T", "50"]) == 0
    assert out.is_file() and "cosine" in capsys.readouterr().out
    assert main(["schedule", "plot", "linear", "nope", "-o", str(tmp_path / "x.png")]) == 2
    assert "unknown noise schedule 'nope'; valid: cosine, linear" in capsys.readouterr().err
