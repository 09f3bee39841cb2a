"""DDIM sampling and deterministic inversion (Song et al. 2021, "Denoising Diffusion Implicit Models")."""

from __future__ import annotations

import math

import torch

from ldmkit.samplers.common import Callback, call_denoiser, check_grid, check_x, grid_steps, postprocess_x0
from ldmkit.samplers.noise import Generators, randn_like
from ldmkit.types import Cond


def sample_ddim(denoiser, x_T: torch.Tensor, timesteps, process, *, cond: Cond | None = None,
                generator: Generators = None, callback: Callback | None = None, eta: float = 0.0,
                clip_denoised: bool = False, dynamic_threshold: float | None = None) -> torch.Tensor:
    """DDIM update, Song et al. 2021, Eq. 12 (with sigma from Eq. 16).

    For each grid step ``t -> s`` (``s`` = next grid entry, or the clean state after the last)::

        sigma = eta * sqrt((1 - abar_s) / (1 - abar_t)) * sqrt(1 - abar_t / abar_s)
        x_s   = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z

    ``eta = 0`` is the deterministic DDIM ODE sampler, ``eta = 1`` matches DDPM's posterior variance on
    the grid. Coefficients come from the process's float64 alpha-bar table.

    Args:
        denoiser: ``denoiser(x_t, t_base, cond) -> Prediction``.
        x_T: ``[N, ...]`` starting noise; the result has its shape, dtype and device.
        timesteps: strictly decreasing process timesteps (see :mod:`ldmkit.samplers.grids`).
        process: a ``GaussianProcess`` (its ``alphas_cumprod`` and ``timestep_map``).
        eta: stochasticity in [0, 1].
        clip_denoised: clip the predicted x0 to [-1, 1] (pixel space).
        dynamic_threshold: Imagen's dynamic-thresholding percentile (e.g. 0.995), or None.
    """
    check_x(x_T, "ddim")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"ddim: eta={eta} must be in [0, 1]")
    grid = check_grid(timesteps, process.num_timesteps, "ddim")
    x = x_T
    for i, t, abar_t, abar_s in grid_steps(grid, process.alphas_cumprod):
        pred = call_denoiser(denoiser, x, process, t, cond)
        pred = postprocess_x0(pred, x, abar_t, clip_denoised=clip_denoised,
                              dynamic_threshold_percentile=dynamic_threshold)
        sigma = 0.0
        if eta > 0.0 and abar_t < 1.0:
            sigma = eta * math.sqrt((1.0 - abar_s) / (1.0 - abar_t) * (1.0 - abar_t / abar_s))
        dir_coef = math.sqrt(max(1.0 - abar_s - sigma**2, 0.0))
        x = math.sqrt(abar_s) * pred.x0 + dir_coef * pred.eps
        if sigma > 0.0:
            x = x + sigma * randn_like(x, generator)
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "prediction": pred})
    return x


def ddim_invert(denoiser, x0: torch.Tensor, timesteps, process, *, cond: Cond | None = None,
                callback: Callback | None = None, fixed_point_iters: int = 0) -> torch.Tensor:
    """Deterministic DDIM inversion: clean image -> noise at ``timesteps[0]`` (Song et al. 2021, Sec. 4.3).

    Runs the eta = 0 update of :func:`sample_ddim` backwards over the same grid (``timesteps`` in sampling
    order): each step ``s -> t`` (``s`` = the clean state first) is
    ``x_t = sqrt(abar_t) x0_hat + sqrt(1 - abar_t) eps_hat``. The prediction should be taken at
    ``(x_t, t)`` to invert the sampler exactly; the usual approximation takes it at the known ``(x_s, s)``
    (at the first step, at ``(x0, t_0)``). ``fixed_point_iters > 0`` refines it by re-evaluating at the
    current estimate of ``x_t``, which makes the round trip exact in the limit.
    """
    check_x(x0, "ddim_invert")
    if fixed_point_iters < 0:
        raise ValueError(f"ddim_invert: fixed_point_iters={fixed_point_iters} must be >= 0")
    grid = check_grid(timesteps, process.num_timesteps, "ddim_invert")
    x = x0
    s = None  # the timestep of x: the clean state first, then the previous grid entry
    # The sampler's steps t -> s in reverse order, each run as s -> t.
    for i, (_, t, abar_t, abar_s) in enumerate(reversed(list(grid_steps(grid, process.alphas_cumprod)))):
        pred = call_denoiser(denoiser, x, process, s if s is not None else t, cond)
        eps = pred.eps
        x_next = x
        for it in range(fixed_point_iters + 1):
            # x0_hat from the current eps at x_s (the sampler's x0 for this eps), then move to t.
            x0_hat = (x - math.sqrt(1.0 - abar_s) * eps) / math.sqrt(abar_s)
            x_next = math.sqrt(abar_t) * x0_hat + math.sqrt(1.0 - abar_t) * eps
            if it < fixed_point_iters:
                eps = call_denoiser(denoiser, x_next, process, t, cond).eps
        x = x_next
        s = t
        if callback is not None:
            callback({"x": x, "i": i, "t": t, "prediction": pred})
    return x
