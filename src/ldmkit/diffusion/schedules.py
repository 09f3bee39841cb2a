"""Noise schedules beta_1..beta_T (float64 numpy); ``ldmkit.training.plot.plot_schedules`` draws them.

Schedules (``SCHEDULES``):

- ``linear``: Ho et al. 2020, Sec. 4: beta linear from 1e-4 to 0.02 at T=1000. For other T both ends are
  multiplied by ``1000 / T`` (as improved-diffusion does), so alpha-bar_T stays about the same.
- ``cosine``: Nichol & Dhariwal 2021, Eq. 17: alpha-bar(t) = f(t)/f(0), f(t) = cos((t/T + s)/(1 + s) * pi/2)^2,
  s = 0.008, beta_t = 1 - alpha-bar_t / alpha-bar_{t-1} clipped at 0.999.
- ``scaled_linear``: Rombach et al. 2022 (LDM / Stable Diffusion): sqrt(beta) linear from sqrt(0.00085) to
  sqrt(0.012). Not rescaled with T (as in the LDM code).
- ``sigmoid``: Chen 2023, "On the Importance of Noise Scheduling for Diffusion Models", Alg. 1 with
  start=-3, end=3, tau=1: alpha-bar(t) = (sigmoid(end/tau) - sigmoid((t(end-start)+start)/tau)) /
  (sigmoid(end/tau) - sigmoid(start/tau)), betas derived and clipped at 0.999 as for cosine.

``rescale_zero_terminal_snr=True`` applies Lin et al. 2024, "Common Diffusion Noise Schedules and Sample
Steps are Flawed", Alg. 1: sqrt(alpha-bar) is shifted and scaled so that its first value is unchanged and
its last is exactly 0 (beta_T = 1, SNR_T = 0). Use it with v-prediction: an eps-prediction model cannot
recover x0 at SNR 0.
"""

from __future__ import annotations

import math

import numpy as np

from ldmkit.registry import lookup

MAX_BETA = 0.999


def _linear(num_timesteps: int) -> np.ndarray:
    scale = 1000.0 / num_timesteps
    if scale * 0.02 >= 1.0:
        raise ValueError(f"the linear schedule needs num_timesteps > 20 (its last beta, 0.02 * 1000 / T, must stay "
                         f"below 1); got {num_timesteps}. Use 'cosine' or respace a longer process instead")
    return np.linspace(scale * 1e-4, scale * 0.02, num_timesteps, dtype=np.float64)


def _betas_from_alpha_bar_fn(fn, num_timesteps: int) -> np.ndarray:
    """beta_t = 1 - abar(t/T) / abar((t-1)/T), clipped at ``MAX_BETA`` (Nichol & Dhariwal 2021, Sec. 3.2)."""
    grid = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
    abar = fn(grid)
    betas = 1.0 - abar[1:] / abar[:-1]
    return np.clip(betas, 0.0, MAX_BETA)


def _cosine(num_timesteps: int, s: float = 0.008) -> np.ndarray:
    return _betas_from_alpha_bar_fn(lambda u: np.cos((u + s) / (1 + s) * math.pi / 2) ** 2, num_timesteps)


def _scaled_linear(num_timesteps: int) -> np.ndarray:
    return np.linspace(0.00085**0.5, 0.012**0.5, num_timesteps, dtype=np.float64) ** 2


def _sigmoid(num_timesteps: int, start: float = -3.0, end: float = 3.0, tau: float = 1.0) -> np.ndarray:
    def sig(z):
        return 1.0 / (1.0 + np.exp(-z))

    v_start, v_end = sig(start / tau), sig(end / tau)
    return _betas_from_alpha_bar_fn(
        lambda u: (v_end - sig((u * (end - start) + start) / tau)) / (v_end - v_start), num_timesteps
    )


SCHEDULES = {
    "linear": _linear,
    "cosine": _cosine,
    "scaled_linear": _scaled_linear,
    "sigmoid": _sigmoid,
}


def rescale_betas_zero_terminal_snr(betas: np.ndarray) -> np.ndarray:
    """Zero-terminal-SNR rescaling, Lin et al. 2024, Alg. 1.

    Args:
        betas: ``[T]`` float64.

    Returns:
        ``[T]`` float64 betas whose sqrt(alpha-bar) is linearly remapped so that sqrt(alpha-bar_1) is kept
        and sqrt(alpha-bar_T) = 0, hence ``betas[-1] == 1``.
    """
    sqrt_abar = np.sqrt(np.cumprod(1.0 - np.asarray(betas, dtype=np.float64)))
    first, last = sqrt_abar[0], sqrt_abar[-1]
    sqrt_abar = (sqrt_abar - last) * first / (first - last)
    abar = sqrt_abar**2
    alphas = np.concatenate([abar[:1], abar[1:] / abar[:-1]])
    return 1.0 - alphas


def get_betas(name: str, num_timesteps: int = 1000, *, rescale_zero_terminal_snr: bool = False) -> np.ndarray:
    """Noise schedule ``name`` (one of ``SCHEDULES``) as ``[T]`` float64 betas.

    Args:
        name: ``linear``, ``cosine``, ``scaled_linear`` or ``sigmoid`` (see the module docstring).
        num_timesteps: T >= 1.
        rescale_zero_terminal_snr: apply Lin et al. 2024, Alg. 1 (beta_T = 1).

    Raises:
        ValueError: for an unknown name (the message lists the valid ones) or T < 1.
    """
    schedule = lookup(SCHEDULES, name, "noise schedule")
    if isinstance(num_timesteps, bool) or not isinstance(num_timesteps, (int, np.integer)) or num_timesteps < 1:
        raise ValueError(f"num_timesteps must be a positive integer, got {num_timesteps!r}")
    betas = schedule(int(num_timesteps))
    if rescale_zero_terminal_snr:
        betas = rescale_betas_zero_terminal_snr(betas)
    return betas
