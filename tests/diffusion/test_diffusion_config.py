"""DiffusionConfig: zero-terminal-SNR needs v or x0 prediction, defaults equal the DDPM preset, errors name keys."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from ldmkit.diffusion import parameterization as P
from ldmkit.diffusion.config import DiffusionConfig
from ldmkit.registry import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def test_zero_terminal_snr_with_eps_prediction_is_refused():
    with pytest.raises(ConfigError) as info:
        DiffusionConfig(rescale_zero_terminal_snr=True)  # prediction_type defaults to eps
    message = str(info.value)
    assert "diffusion.rescale_zero_terminal_snr=True" in message and "diffusion.prediction_type='eps'" in message
    assert "use diffusion.prediction_type 'v' or 'x0'" in message
    for kind in ("v", "x0"):
        cfg = DiffusionConfig(schedule="cosine", rescale_zero_terminal_snr=True, prediction_type=kind)
        process = cfg.build_process()
        assert float(process.alphas_cumprod[-1]) == 0.0 and float(process.betas[-1]) == 1.0


def test_why_eps_is_refused_at_zero_terminal_snr():
    """At alpha-bar_T = 0 the eps parameterization cannot give x0 (the NaN the config check prevents); v can."""
    process = DiffusionConfig(rescale_zero_terminal_snr=True, prediction_type="v").build_process()
    abar = process.alphas_cumprod[-1:]
    x_t, out = torch.randn(1, 1, 2, 2, dtype=torch.float64), torch.randn(1, 1, 2, 2, dtype=torch.float64)
    x0_eps, _ = P.prediction_from_output(out, x_t, abar, "eps")
    x0_v, _ = P.prediction_from_output(out, x_t, abar, "v")
    assert not torch.isfinite(x0_eps).any() and torch.equal(x0_v, -out)  # x0 = sqrt(a) x_t - sqrt(1 - a) v


def test_without_rescaling_no_schedule_reaches_zero_snr():
    for schedule in ("linear", "cosine", "scaled_linear", "sigmoid"):
        cfg = DiffusionConfig(schedule=schedule)  # eps is fine: alpha-bar_T > 0
        assert np.prod(1 - cfg.betas()) > 0


def test_defaults_are_the_ddpm_preset():
    """DESIGN principle 6: the library's defaults are DDPM (Ho et al. 2020) as configs/ddpm_fmnist.yaml states it."""
    preset = yaml.safe_load((CONFIGS / "ddpm_fmnist.yaml").read_text())["diffusion"]
    defaults = DiffusionConfig()
    assert DiffusionConfig(**preset) == defaults
    for key, value in preset.items():
        assert getattr(defaults, key) == value, key


def test_errors_name_the_key_and_the_valid_values():
    with pytest.raises(ConfigError, match="unknown diffusion.schedule 'lineer'; valid: cosine, linear, "
                                          "scaled_linear, sigmoid; did you mean 'linear'"):
        DiffusionConfig(schedule="lineer")
    with pytest.raises(ConfigError, match="unknown diffusion.prediction_type 'epsilon'; valid: eps, v, x0"):
        DiffusionConfig(prediction_type="epsilon")
    with pytest.raises(ConfigError, match="unknown diffusion.timestep_sampler"):
        DiffusionConfig(timestep_sampler="importance")
    with pytest.raises(ConfigError, match="loss_type='hybrid' does not fit variance_type='fixed_large'"):
        DiffusionConfig(loss_type="hybrid")
    with pytest.raises(ConfigError, match="cond_drop_prob=1.5"):
        DiffusionConfig(cond_drop_prob=1.5)
