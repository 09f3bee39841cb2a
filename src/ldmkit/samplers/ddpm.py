"""DDPM ancestral sampling (Ho et al. 2020, Alg. 2), with Improved DDPM's learned variances and respacing
(Nichol & Dhariwal 2021, Sec. 3.1 and 4)."""

from __future__ import annotations

import torch

from ldmkit.diffusion.process import is_learned_variance
from ldmkit.samplers.common import Callback, call_denoiser, check_grid, check_x, grid_steps, postprocess_x0
from ldmkit.samplers.noise import Generators, randn_like
from ldmkit.types import Cond


def sample_ddpm(denoiser, x_T: torch.Tensor, timesteps, process, *, cond: Cond | None = None,
                generator: Generators = None, callback: Callback | None = None,
                variance_type: str = "fixed_large", clip_denoised: bool = False,
                dynamic_threshold: float | None = None) -> torch.Tensor:
    """Ancestral sampling ``x_{t-1} ~ p(x_{t-1} | x_t)``, Ho et al. 2020, Alg. 2.

    When ``timesteps`` is not every timestep of ``process``, the process is respaced to them
    (``process.respace``: the betas are recomputed so alpha-bar agrees on the kept steps, Nichol & Dhariwal
    2021, Sec. 4) and the chain runs on the respaced process. Mean and variance come from
    ``process.p_mean_variance``; no noise is added on the last step.

    Args:
        variance_type: ``fixed_large`` (beta, the default of ``DiffusionConfig``), ``fixed_small`` (posterior beta-tilde), ``learned``
            (log-variance output) or ``learned_range`` (interpolation output); the learned kinds need a
            denoiser whose Prediction carries ``var_output``.
        clip_denoised / dynamic_threshold: x0 post-processing, see :func:`ldmkit.samplers.sample_ddim`.
    """
    check_x(x_T, "ddpm")
    learned = is_learned_variance(variance_type)  # also validates the name
    grid = check_grid(timesteps, process.num_timesteps, "ddpm")
    if grid.numel() != process.num_timesteps:  # strictly decreasing within [0, T-1], so full <=> every step
        process = process.respace(grid.flip(0).tolist())
    x = x_T
    # Every timestep of the (respaced) process, T'-1 down to 0; the posterior needs no next alpha-bar.
    chain = torch.arange(process.num_timesteps - 1, -1, -1)
    for step, i, abar_i, _ in grid_steps(chain, process.alphas_cumprod):
        pred = call_denoiser(denoiser, x, process, i, cond)
        if learned and pred.var_output is None:
            raise ValueError(f"ddpm: variance_type={variance_type!r} needs a denoiser with learn_variance=True")
        pred = postprocess_x0(pred, x, abar_i, clip_denoised=clip_denoised,
                              dynamic_threshold_percentile=dynamic_threshold)
        t = torch.full((x.shape[0],), i, dtype=torch.int64, device=x.device)
        mean, variance, _ = process.p_mean_variance(pred, x, t, variance_type)
        x = mean.to(x_T.dtype)
        if i > 0:
            x = x + variance.sqrt().to(x_T.dtype) * randn_like(x, generator)
        if callback is not None:
            callback({"x": x, "i": step, "t": int(grid[step]), "prediction": pred})
    return x
