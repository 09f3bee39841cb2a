"""Likelihood evaluation: Gaussian KL, decoder log-likelihoods, and the full T-step variational bound in bits/dim.

The bound (Ho et al. 2020, Eq. 5; Nichol & Dhariwal 2021, Eq. 4-6), with this package's 0-based index
(``t`` = paper step t+1, see ``process.py``):

    L_vlb = L_prior + sum_{t=1}^{T-1} L_t + L_0,
    L_prior = KL(q(x_T | x0) || N(0, I)),   L_t = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)),
    L_0 = -log p(x0 | x_1)   (the decoder term, index 0).

Every term is averaged over the data dimensions and divided by log 2, so results are bits/dim. With the
``discretized`` decoder (data in [-1, 1] on 256 levels) the result is the bits/dim of the 8-bit data, as
in improved-diffusion's NLL script; the ``continuous`` decoder gives a density bound for continuous data.

A denoiser is always called as ``denoiser(x_t, process.model_timesteps(t), cond)``: ``t`` is the index
into ``process``, the denoiser sees the base model's timestep ``process.timestep_map[t]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch

from ldmkit.diffusion.process import GaussianProcess, VarianceType
from ldmkit.registry import lookup
from ldmkit.types import Cond, Prediction

DecoderType = Literal["discretized", "continuous"]
LOG2 = math.log(2.0)


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over all but the batch dimension: ``[N, ...] -> [N]``."""
    return x.reshape(x.shape[0], -1).mean(dim=1)


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    """KL(N(mean1, exp(logvar1)) || N(mean2, exp(logvar2))) in nats, elementwise (broadcasting).

    KL = 0.5 (logvar2 - logvar1 + exp(logvar1 - logvar2) + (mean1 - mean2)^2 exp(-logvar2) - 1).
    """
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2) - 1.0)


def continuous_gaussian_log_likelihood(x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor) -> torch.Tensor:
    """log N(x; means, exp(log_scales)^2) in nats, elementwise (``log_scales`` = log standard deviation)."""
    z = (x - means) * torch.exp(-log_scales)
    return -0.5 * z**2 - log_scales - 0.5 * math.log(2.0 * math.pi)


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, means: torch.Tensor, log_scales: torch.Tensor, *, num_bins: int = 256
) -> torch.Tensor:
    """Discretized Gaussian decoder log-likelihood, Ho et al. 2020, Eq. 13, in nats, elementwise.

    ``x`` lies on ``num_bins`` levels spread evenly over [-1, 1]; each level owns the interval of half-width
    1 / (num_bins - 1) around it, and the two edge levels extend to -inf / +inf. The probability mass of
    N(means, exp(log_scales)^2) over that interval is computed with the exact normal CDF, taking the
    difference in the tail where it is accurate (the upper tail for x > mean).

    Args:
        x: ``[N, ...]`` data in [-1, 1].
        means, log_scales: broadcastable to ``x``; ``log_scales`` is the log standard deviation.
    """
    half = 1.0 / (num_bins - 1)
    inv_std = torch.exp(-log_scales)
    upper = (x - means + half) * inv_std
    lower = (x - means - half) * inv_std
    # P(lower < z < upper), from whichever tail keeps the difference away from cancellation
    mass = torch.where(
        lower > 0,
        torch.special.ndtr(-lower) - torch.special.ndtr(-upper),
        torch.special.ndtr(upper) - torch.special.ndtr(lower),
    )
    log_mid = torch.log(mass.clamp(min=1e-12))
    edge = 1.0 - half  # x at the lowest / highest level (tolerant of rounding)
    return torch.where(
        x < -edge,
        torch.special.log_ndtr(upper),
        torch.where(x > edge, torch.special.log_ndtr(-lower), log_mid),
    )


# decoder -> log p(x0 | x_1) elementwise, as f(x0, means, log_scales); the keys are DecoderType's values
DECODER_TYPES: dict[str, Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "discretized": discretized_gaussian_log_likelihood,
    "continuous": continuous_gaussian_log_likelihood,
}


def vlb_term_bpd(
    process: GaussianProcess,
    prediction: Prediction,
    x0: torch.Tensor,
    x_t: torch.Tensor,
    t: torch.Tensor,
    variance_type: VarianceType,
    *,
    decoder: DecoderType = "discretized",
    clip_x0: bool = False,
    clamp_learned_range: bool = True,
) -> torch.Tensor:
    """One term of the variational bound in bits/dim, Ho et al. 2020 Eq. 5 (Nichol & Dhariwal Eq. 4-6).

    For t > 0: L_t = KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) (Gaussian KL, the true posterior's log-variance
    clipped as in ``q_posterior_mean_variance``). For t = 0: L_0 = -log p(x0 | x_1) under ``decoder``.
    Gradients flow to whatever of ``prediction`` carries them (the hybrid loss passes a detached mean).

    Args:
        process: the process ``t`` indexes.
        prediction: the denoiser's output for ``x_t``.
        x0, x_t: ``[N, ...]``.
        t: ``[N]`` int64 in [0, T-1].
        variance_type: how ``p`` gets its variance (``GaussianProcess.p_log_variance``).
        decoder: ``discretized`` (8-bit data in [-1, 1]) or ``continuous``.
        clip_x0: clamp the predicted x0 to [-1, 1] before forming the mean (improved-diffusion's NLL
            evaluation does, with its default ``clip_denoised=True``; training does not).
        clamp_learned_range: clamp a ``learned_range`` v to [-1, 1] (NLL evaluation of the model that is
            sampled from); training passes ``False`` so that L_vlb has a gradient for every v.

    Returns:
        ``[N]`` bits/dim.
    """
    log_likelihood = lookup(DECODER_TYPES, decoder, "decoder")
    true_mean, _, true_log_var = process.q_posterior_mean_variance(x0, x_t, t)
    model_mean, _, model_log_var = process.p_mean_variance(prediction, x_t, t, variance_type, clip_x0=clip_x0,
                                                           clamp_learned_range=clamp_learned_range)
    kl = mean_flat(normal_kl(true_mean, true_log_var, model_mean, model_log_var)) / LOG2
    decoder_nll = -mean_flat(log_likelihood(x0, model_mean, 0.5 * model_log_var)) / LOG2
    t = process.check_timesteps(t, x_t)
    return torch.where(t == 0, decoder_nll, kl)


def prior_bpd(process: GaussianProcess, x0: torch.Tensor) -> torch.Tensor:
    """Prior term L_T = KL(q(x_T | x0) || N(0, I)) in bits/dim, ``[N]`` (constant in the model's parameters)."""
    t = torch.full((x0.shape[0],), process.num_timesteps - 1, dtype=torch.int64, device=x0.device)
    mean, _, log_var = process.q_mean_variance(x0, t)
    zero = torch.zeros((), dtype=x0.dtype, device=x0.device)
    return mean_flat(normal_kl(mean, log_var, zero, zero)) / LOG2


@dataclass
class VLBResult:
    """Per-example output of ``vlb_bits_per_dim``.

    Attributes:
        total_bpd: ``[N]`` the full bound L_vlb in bits/dim.
        prior_bpd: ``[N]`` L_T.
        terms_bpd: ``[N, T]`` L_t for every index t (column 0 is the decoder NLL).
        x0_mse: ``[N, T]`` mean squared error of the predicted x0 at every t.
    """

    total_bpd: torch.Tensor
    prior_bpd: torch.Tensor
    terms_bpd: torch.Tensor
    x0_mse: torch.Tensor


@torch.no_grad()
def vlb_bits_per_dim(
    denoiser: Callable[[torch.Tensor, torch.Tensor, Cond | None], Prediction],
    process: GaussianProcess,
    x0: torch.Tensor,
    cond: Cond | None = None,
    *,
    variance_type: VarianceType,
    decoder: DecoderType = "discretized",
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> VLBResult:
    """Full T-step variational bound of a batch in bits/dim (Ho et al. 2020 Eq. 5, as improved-diffusion's NLL).

    Steps: (1) for t = T-1 down to 0 draw x_t ~ q(x_t | x0) with fresh noise; (2) call
    ``denoiser(x_t, process.model_timesteps(t), cond)``; (3) L_t = ``vlb_term_bpd``; (4) add L_prior.
    This costs T denoiser calls; evaluate on a respaced process for a cheaper (looser) bound.

    Args:
        denoiser: ``denoiser(x_t, t_model, cond) -> Prediction``.
        process: the process to evaluate on (its ``timestep_map`` gives the model's timesteps).
        x0: ``[N, ...]`` data (in [-1, 1] on 256 levels for the discretized decoder).
        cond: conditioning for the batch, passed through unchanged.
        variance_type: as the model was trained.
        decoder: ``discretized`` or ``continuous``.
        clip_x0: clamp predicted x0 to [-1, 1] (pixel data; as improved-diffusion's NLL script).
        generator: for the noise draws (on ``x0``'s device).
        progress: called as ``progress(steps_done, T)`` after each timestep.

    Returns:
        ``VLBResult`` with per-example totals, prior and per-t terms.
    """
    T = process.num_timesteps
    n = x0.shape[0]
    terms = torch.zeros(n, T, dtype=x0.dtype, device=x0.device)
    mse = torch.zeros(n, T, dtype=x0.dtype, device=x0.device)
    for done, step in enumerate(range(T - 1, -1, -1), start=1):
        t = torch.full((n,), step, dtype=torch.int64, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        x_t = process.q_sample(x0, t, noise)
        prediction = denoiser(x_t, process.model_timesteps(t), cond)
        terms[:, step] = vlb_term_bpd(process, prediction, x0, x_t, t, variance_type, decoder=decoder,
                                      clip_x0=clip_x0)
        mse[:, step] = mean_flat((prediction.x0 - x0) ** 2)
        if progress is not None:
            progress(done, T)
    prior = prior_bpd(process, x0)
    return VLBResult(total_bpd=terms.sum(dim=1) + prior, prior_bpd=prior, terms_bpd=terms, x0_mse=mse)


@dataclass
class DatasetNLL:
    """Summary of ``dataset_bits_per_dim``: means over examples (``bpd_stderr`` = standard error of ``bpd``)."""

    bpd: float
    bpd_stderr: float
    prior_bpd: float
    terms_bpd: torch.Tensor
    num_examples: int


def dataset_bits_per_dim(
    denoiser: Callable[[torch.Tensor, torch.Tensor, Cond | None], Prediction],
    process: GaussianProcess,
    batches: Iterable[torch.Tensor | tuple[torch.Tensor, Cond | None]],
    *,
    variance_type: VarianceType,
    decoder: DecoderType = "discretized",
    clip_x0: bool = False,
    generator: torch.Generator | None = None,
    max_examples: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> DatasetNLL:
    """Bits/dim of a dataset under a model via the full T-step bound (improved-diffusion's NLL evaluation).

    Args:
        denoiser, process, variance_type, decoder, clip_x0, generator: as ``vlb_bits_per_dim``.
        batches: an iterable of ``x0`` tensors ``[B, ...]`` or ``(x0, cond)`` pairs.
        max_examples: stop after this many examples (the last batch is truncated).
        progress: called as ``progress(examples_done, running_mean_bpd)`` after each batch.
    """
    totals, priors, term_sums, count = [], [], None, 0
    for item in batches:
        x0, cond = item if isinstance(item, (tuple, list)) else (item, None)
        if max_examples is not None:
            if count >= max_examples:
                break
            keep = min(x0.shape[0], max_examples - count)
            x0, cond = x0[:keep], (cond.index(slice(0, keep)) if cond is not None else None)
        result = vlb_bits_per_dim(denoiser, process, x0, cond, variance_type=variance_type, decoder=decoder,
                                  clip_x0=clip_x0, generator=generator)
        totals.append(result.total_bpd.double().cpu())
        priors.append(result.prior_bpd.double().cpu())
        batch_terms = result.terms_bpd.double().sum(dim=0).cpu()
        term_sums = batch_terms if term_sums is None else term_sums + batch_terms
        count += x0.shape[0]
        if progress is not None:
            progress(count, float(torch.cat(totals).mean()))
    if count == 0:
        raise ValueError("dataset_bits_per_dim: the dataset yielded no examples")
    total = torch.cat(totals)
    stderr = float(total.std(unbiased=True) / math.sqrt(count)) if count > 1 else float("nan")
    return DatasetNLL(bpd=float(total.mean()), bpd_stderr=stderr, prior_bpd=float(torch.cat(priors).mean()),
                      terms_bpd=term_sums / count, num_examples=count)
