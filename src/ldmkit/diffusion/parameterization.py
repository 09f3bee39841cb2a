"""The three parameterizations of a denoiser's output, eps, x0 and v, and every conversion between them.

This is the only module that knows how x0, eps and v relate. With a = alpha-bar_t, x_t = sqrt(a) x0 +
sqrt(1 - a) eps (Ho et al. 2020, Eq. 4), and v = sqrt(a) eps - sqrt(1 - a) x0 (Salimans & Ho 2022, Sec. 4),
so that x0 = sqrt(a) x_t - sqrt(1 - a) v and eps = sqrt(1 - a) x_t + sqrt(a) v.

``alpha_bar`` arguments are tensors of shape ``[N]`` (one value per example, reshaped to broadcast over
``[N, C, H, W]``), a 0-d tensor / Python float, or anything already broadcastable. The square roots are
taken in ``alpha_bar``'s own dtype (pass float64 tables for accuracy) and the results cast to the data's
dtype and device.
"""

from __future__ import annotations

from typing import Literal

import torch

from ldmkit.registry import lookup

PredictionType = Literal["eps", "x0", "v"]
# prediction type -> what the network outputs; the keys are PredictionType's values
PREDICTION_TYPES: dict[str, str] = {
    "eps": "the noise eps (Ho et al. 2020)",
    "x0": "the clean sample x0",
    "v": "the velocity v (Salimans & Ho 2022)",
}


def _coefs(alpha_bar, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(sqrt(a), sqrt(1 - a)) broadcastable to ``like``, in its dtype and device."""
    a = torch.as_tensor(alpha_bar, device=like.device)
    if not a.is_floating_point():
        a = a.double()
    if a.dim() == 1 and like.dim() > 1 and a.shape[0] == like.shape[0]:
        a = a.reshape(-1, *([1] * (like.dim() - 1)))
    return torch.sqrt(a).to(like.dtype), torch.sqrt(1.0 - a).to(like.dtype)


def x0_from_eps(x_t: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """x0 = (x_t - sqrt(1 - a) eps) / sqrt(a), inverting Ho et al. 2020 Eq. 4. Shapes ``[N, ...]``."""
    sa, s1a = _coefs(alpha_bar, x_t)
    return (x_t - s1a * eps) / sa


def eps_from_x0(x_t: torch.Tensor, x0: torch.Tensor, alpha_bar) -> torch.Tensor:
    """eps = (x_t - sqrt(a) x0) / sqrt(1 - a), inverting Ho et al. 2020 Eq. 4. Shapes ``[N, ...]``."""
    sa, s1a = _coefs(alpha_bar, x_t)
    return (x_t - sa * x0) / s1a


def v_from_x0_eps(x0: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """Velocity v = sqrt(a) eps - sqrt(1 - a) x0, Salimans & Ho 2022, Sec. 4. Shapes ``[N, ...]``."""
    sa, s1a = _coefs(alpha_bar, x0)
    return sa * eps - s1a * x0


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar) -> torch.Tensor:
    """x0 = sqrt(a) x_t - sqrt(1 - a) v, Salimans & Ho 2022, Sec. 4. Shapes ``[N, ...]``."""
    sa, s1a = _coefs(alpha_bar, x_t)
    return sa * x_t - s1a * v


def eps_from_v(x_t: torch.Tensor, v: torch.Tensor, alpha_bar) -> torch.Tensor:
    """eps = sqrt(1 - a) x_t + sqrt(a) v, Salimans & Ho 2022, Sec. 4. Shapes ``[N, ...]``."""
    sa, s1a = _coefs(alpha_bar, x_t)
    return s1a * x_t + sa * v


def prediction_from_output(
    output: torch.Tensor, x_t: torch.Tensor, alpha_bar, prediction_type: PredictionType
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpret a network's (mean-channel) output as (x0, eps) under ``prediction_type``.

    Args:
        output: ``[N, ...]`` the network output without variance channels.
        x_t: ``[N, ...]`` the noisy input.
        alpha_bar: ``[N]`` alpha-bar of each example's timestep.
        prediction_type: ``eps``, ``x0`` or ``v``.

    Returns:
        (x0, eps), each ``[N, ...]``; the one that ``output`` is (if any) is returned unchanged.
    """
    lookup(PREDICTION_TYPES, prediction_type, "prediction type")
    if output.shape != x_t.shape:
        raise ValueError(f"network output shape {list(output.shape)} differs from x_t shape {list(x_t.shape)}")
    if prediction_type == "eps":
        return x0_from_eps(x_t, output, alpha_bar), output
    if prediction_type == "x0":
        return output, eps_from_x0(x_t, output, alpha_bar)
    return x0_from_v(x_t, output, alpha_bar), eps_from_v(x_t, output, alpha_bar)


def target(prediction_type: PredictionType, x0: torch.Tensor, eps: torch.Tensor, alpha_bar) -> torch.Tensor:
    """What a network of ``prediction_type`` should output for (x0, eps): the L_simple regression target.

    Applied to a model's predicted (x0, eps) it gives back the model's raw output (up to rounding).

    Args:
        prediction_type: ``eps``, ``x0`` or ``v``.
        x0, eps: ``[N, ...]``.
        alpha_bar: ``[N]``; only used for ``v``.
    """
    lookup(PREDICTION_TYPES, prediction_type, "prediction type")
    if prediction_type == "eps":
        return eps
    if prediction_type == "x0":
        return x0
    return v_from_x0_eps(x0, eps, alpha_bar)


def min_snr_weight(snr: torch.Tensor, gamma: float, prediction_type: PredictionType) -> torch.Tensor:
    """Min-SNR-gamma loss weight, Hang et al. 2023, Eq. 9 and Sec. 3.4, for an MSE on ``prediction_type``.

    The x0-space weight min(SNR, gamma) becomes min(SNR, gamma) / SNR for eps (written min(1, gamma / SNR)
    so that SNR = 0 gives 1), min(SNR, gamma) for x0 and min(SNR, gamma) / (SNR + 1) for v.

    Args:
        snr: ``[N]`` alpha-bar / (1 - alpha-bar) of each example's timestep.
        gamma: the clamp, 5 in the paper.
    """
    lookup(PREDICTION_TYPES, prediction_type, "prediction type")
    if gamma <= 0:
        raise ValueError(f"min_snr_gamma must be positive, got {gamma!r}")
    clamped = torch.clamp(snr, max=gamma)
    if prediction_type == "eps":
        return torch.clamp(gamma / snr, max=1.0)
    if prediction_type == "x0":
        return clamped
    return clamped / (snr + 1.0)
