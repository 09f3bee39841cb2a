"""Training objectives of DDPM and Improved DDPM: L_simple, L_vlb and L_hybrid, per example.

Code name -> paper symbol: ``mse`` L_simple (Ho et al. 2020, Eq. 14, generalised to eps / x0 / v targets),
``vlb`` the single-step term L_t in bits/dim (Ho Eq. 5; Nichol & Dhariwal 2021, Eq. 4-6), ``T * vlb`` the
one-sample estimate of sum_t L_t, ``vlb_weight`` lambda in L_hybrid = L_simple + lambda L_vlb (Nichol &
Dhariwal Eq. 16, lambda = 0.001), ``min_snr_gamma`` gamma of Hang et al. 2023.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from ldmkit.diffusion import parameterization as param
from ldmkit.diffusion.likelihood import mean_flat, prior_bpd, vlb_term_bpd
from ldmkit.diffusion.process import VARIANCE_TYPES, GaussianProcess, VarianceType, is_learned_variance
from ldmkit.registry import ConfigError, lookup
from ldmkit.types import Cond, Prediction

LossType = Literal["simple", "vlb", "hybrid"]
# The one statement of which variance types each loss can train (the keys are LossType's values):
# L_simple has no variance term, so only a fixed variance fits it (Ho et al. 2020, Sec. 3.2); the L_vlb
# term of L_hybrid trains only the variance (Nichol & Dhariwal 2021, Sec. 3.1), so it needs a learned one;
# L_vlb alone trains the mean and, if learned, the variance, so every variance type fits it.
LOSS_TYPES: dict[str, tuple[str, ...]] = {
    "simple": tuple(v for v, learned in VARIANCE_TYPES.items() if not learned),
    "vlb": tuple(VARIANCE_TYPES),
    "hybrid": tuple(v for v, learned in VARIANCE_TYPES.items() if learned),
}
_LOSS_RULES = {  # why a combination is refused, and what to use instead
    "simple": "L_simple has no variance term, so it cannot train a learned variance; use loss_type 'hybrid' "
              "(Improved DDPM) or 'vlb'",
    "hybrid": "the VLB term of L_hybrid only trains a learned variance; use loss_type 'simple' (or 'vlb')",
}


def check_loss_and_variance(loss_type: str, variance_type: str) -> None:
    """Raise a :class:`ConfigError` unless ``loss_type`` can train ``variance_type`` (the ``LOSS_TYPES`` table)."""
    allowed = lookup(LOSS_TYPES, loss_type, "loss type")
    is_learned_variance(variance_type)  # an unknown name is its own error
    if variance_type not in allowed:
        pairs = ", ".join(f"{name!r} with {'/'.join(v) if v != tuple(VARIANCE_TYPES) else 'any'}"
                          for name, v in LOSS_TYPES.items())
        raise ConfigError(f"loss_type={loss_type!r} does not fit variance_type={variance_type!r}: "
                          f"{_LOSS_RULES[loss_type]} (valid pairs: {pairs})")


def training_losses(
    denoiser: Callable[[torch.Tensor, torch.Tensor, Cond | None], Prediction],
    process: GaussianProcess,
    x0: torch.Tensor,
    t: torch.Tensor,
    *,
    cond: Cond | None = None,
    noise: torch.Tensor | None = None,
    loss_type: LossType = "simple",
    variance_type: VarianceType = "fixed_large",
    prediction_type: param.PredictionType = "eps",
    vlb_weight: float = 0.001,
    min_snr_gamma: float | None = None,
    generator: torch.Generator | None = None,
) -> dict[str, torch.Tensor]:
    """Per-example DDPM / Improved DDPM training losses at timesteps ``t`` (Ho et al. 2020 Alg. 1; Nichol & Dhariwal 2021).

    Steps: (1) x_t = q_sample(x0, t, noise); (2) prediction = denoiser(x_t, process.model_timesteps(t), cond);
    (3) ``mse`` = mean over dims of (target - output)^2 where both are ``parameterization.target`` of
    ``prediction_type`` (for eps / x0 the network's own output; for v it is rebuilt from the predicted
    x0 and eps, which is the network output up to rounding), times the min-SNR weight if ``min_snr_gamma``;
    (4) ``vlb`` = L_t in bits/dim; for ``hybrid`` it is computed on a prediction whose x0 / eps are detached,
    so it trains only the variance (Nichol & Dhariwal Sec. 3.1); (5) combine:

    - ``simple``: loss = mse (fixed variance types only).
    - ``vlb``: loss = T * vlb, an unbiased estimate of sum_t L_t (add ``prior`` for the full bound).
    - ``hybrid``: loss = mse + vlb_weight * T * vlb (learned variance types only). With T = 1000 and
      lambda = 0.001 this is improved-diffusion's ``mse + vb``.

    With a non-uniform timestep sampler multiply ``loss`` by its importance weights before averaging, and
    feed ``loss.detach()`` to ``sampler.update_with_losses``.

    Args:
        denoiser: ``denoiser(x_t, t_model, cond) -> Prediction``; it is called with the base-model timesteps
            ``process.timestep_map[t]``.
        process: the (usually base, un-respaced) process ``t`` indexes.
        x0: ``[N, ...]`` clean data (or latents).
        t: ``[N]`` int64 in [0, T-1].
        cond: passed to the denoiser unchanged.
        noise: ``[N, ...]`` eps; drawn from ``generator`` if omitted.
        loss_type: ``simple``, ``vlb`` or ``hybrid``.
        variance_type: ``fixed_small``, ``fixed_large``, ``learned`` or ``learned_range``.
        prediction_type: ``eps``, ``x0`` or ``v`` (what the network outputs; decides the MSE target).
        vlb_weight: lambda of L_hybrid.
        min_snr_gamma: if set, weight the MSE with min-SNR-gamma (Hang et al. 2023).

    Returns:
        dict of ``[N]`` tensors: ``loss``; ``mse`` (simple, hybrid); ``vlb`` (vlb, hybrid; bits/dim of L_t);
        ``prior`` (bits/dim, no gradient); ``x_t`` is not returned.
    """
    check_loss_and_variance(loss_type, variance_type)
    lookup(param.PREDICTION_TYPES, prediction_type, "prediction type")
    t = process.check_timesteps(t, x0)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = process.q_sample(x0, t, noise)
    prediction = denoiser(x_t, process.model_timesteps(t), cond)
    if prediction.x0.shape != x0.shape or prediction.eps.shape != x0.shape:
        raise ValueError(f"denoiser returned x0 {list(prediction.x0.shape)} / eps {list(prediction.eps.shape)} "
                         f"for data of shape {list(x0.shape)}")
    terms: dict[str, torch.Tensor] = {}
    if loss_type in ("simple", "hybrid"):
        alpha_bar = process.alphas_cumprod.to(x0.device)[t]  # float64 [N]; the conversions cast
        target = param.target(prediction_type, x0, noise, alpha_bar)
        output = param.target(prediction_type, prediction.x0, prediction.eps, alpha_bar)
        mse = mean_flat((target - output) ** 2)
        if min_snr_gamma is not None:
            snr = process.snr.to(x0.device)[t]
            mse = mse * param.min_snr_weight(snr, min_snr_gamma, prediction_type).to(mse.dtype)
        terms["mse"] = mse
    if loss_type in ("vlb", "hybrid"):
        vlb_prediction = prediction
        if loss_type == "hybrid":  # stop-gradient on the mean: L_vlb trains only the variance
            vlb_prediction = Prediction(prediction.x0.detach(), prediction.eps.detach(), prediction.var_output)
        # no clamp of a learned_range v: outside [-1, 1] it would get no gradient (improved-diffusion)
        terms["vlb"] = vlb_term_bpd(process, vlb_prediction, x0, x_t, t, variance_type, clamp_learned_range=False)
    T = process.num_timesteps
    if loss_type == "simple":
        terms["loss"] = terms["mse"]
    elif loss_type == "vlb":
        terms["loss"] = T * terms["vlb"]
    else:
        terms["loss"] = terms["mse"] + vlb_weight * T * terms["vlb"]
    with torch.no_grad():
        terms["prior"] = prior_bpd(process, x0)
    return terms
