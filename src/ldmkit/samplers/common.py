"""Helpers shared by the samplers: grid checks, per-step bookkeeping and x0 post-processing."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from ldmkit.diffusion.parameterization import eps_from_x0
from ldmkit.types import Cond, Prediction

# callback({"x": x, "i": i, "t": t, "prediction": pred}), once per step: i = 0..K-1, t = the process
# timestep the step started from, x = the state after the step, prediction = the denoiser output the step
# used. One dict, so that fields can be added without breaking callers.
Callback = Callable[[dict[str, Any]], None]


def check_grid(timesteps, num_timesteps: int, sampler: str) -> torch.Tensor:
    """Validate a timestep grid: 1-D, integer, strictly decreasing, within ``[0, num_timesteps - 1]``."""
    ts = torch.as_tensor(timesteps)
    if ts.dim() != 1 or ts.numel() == 0 or ts.dtype.is_floating_point or ts.dtype == torch.bool:
        raise ValueError(f"{sampler}: timesteps must be a non-empty 1-D integer grid, got {ts.dtype} "
                         f"{tuple(ts.shape)}")
    ts = ts.to(device="cpu", dtype=torch.int64)
    if ts.numel() > 1 and not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError(f"{sampler}: timesteps must be strictly decreasing (sampling order), got "
                         f"{ts.tolist()[:8]}...")
    if int(ts.min()) < 0 or int(ts.max()) >= num_timesteps:
        raise ValueError(f"{sampler}: timesteps must lie in [0, {num_timesteps - 1}], got "
                         f"[{int(ts.min())}, {int(ts.max())}]")
    return ts


def grid_steps(grid: torch.Tensor, alphas_cumprod: torch.Tensor) -> Iterator[tuple[int, int, float, float]]:
    """``(i, t, abar_t, abar_next)`` for each step of a (checked) grid, in sampling order.

    ``abar_next`` is the alpha-bar of the next grid entry, and 1 (the clean state) after the last one:
    the grid's alpha-bars with a 1 appended (k-diffusion's ``append_zero`` for sigmas), so no sampler
    re-derives the step after the last. Values are Python floats from the float64 table.
    """
    abar = torch.as_tensor(alphas_cumprod).detach().to(device="cpu", dtype=torch.float64)
    ts = [int(t) for t in grid]
    abars = abar[ts].tolist() + [1.0]
    for i, t in enumerate(ts):
        yield i, t, abars[i], abars[i + 1]


def check_x(x_T: torch.Tensor, sampler: str) -> None:
    if not x_T.dtype.is_floating_point:
        raise ValueError(f"{sampler}: x_T must be a floating-point tensor, got {x_T.dtype}")
    if x_T.dim() < 2:
        raise ValueError(f"{sampler}: x_T must be [N, ...], got shape {tuple(x_T.shape)}")


def base_timesteps(process, t: int, n: int, device: torch.device) -> torch.Tensor:
    """``[n]`` int64 base-model timesteps for process timestep ``t`` (through ``process.timestep_map``)."""
    return torch.full((n,), int(process.timestep_map[t]), dtype=torch.int64, device=device)


def dynamic_threshold(x0: torch.Tensor, percentile: float) -> torch.Tensor:
    """Dynamic thresholding (Saharia et al. 2022, Imagen, Sec. 2.3).

    ``s`` = the ``percentile`` quantile of ``|x0|`` per example, at least 1; ``x0 -> clamp(x0, -s, s) / s``.
    """
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"dynamic_threshold: percentile={percentile} must be in (0, 1]")
    flat = x0.reshape(x0.shape[0], -1).abs()
    s = torch.quantile(flat.float() if flat.dtype in (torch.float16, torch.bfloat16) else flat, percentile, dim=1)
    s = s.clamp_min(1.0).to(x0.dtype).view(-1, *([1] * (x0.dim() - 1)))
    return torch.maximum(torch.minimum(x0, s), -s) / s


def postprocess_x0(pred: Prediction, x_t: torch.Tensor, alpha_bar: float, *, clip_denoised: bool,
                   dynamic_threshold_percentile: float | None) -> Prediction:
    """Optionally clip ``x0`` to [-1, 1] or dynamically threshold it; ``eps`` is recomputed to match.

    ``alpha_bar`` is the alpha-bar of ``x_t``'s timestep (a Python float, float64 precision).
    """
    if not clip_denoised and dynamic_threshold_percentile is None:
        return pred
    if clip_denoised and dynamic_threshold_percentile is not None:
        raise ValueError("samplers: use clip_denoised or dynamic_threshold, not both")
    x0 = pred.x0.clamp(-1.0, 1.0) if clip_denoised else dynamic_threshold(pred.x0, dynamic_threshold_percentile)
    if alpha_bar >= 1.0:
        return Prediction(x0=x0, eps=pred.eps, var_output=pred.var_output)
    eps = eps_from_x0(x_t, x0, torch.tensor(alpha_bar, dtype=torch.float64))
    return Prediction(x0=x0, eps=eps, var_output=pred.var_output)


def call_denoiser(denoiser, x: torch.Tensor, process, t: int, cond: Cond | None) -> Prediction:
    """Evaluate the denoiser at process timestep ``t`` and check its output."""
    pred = denoiser(x, base_timesteps(process, t, x.shape[0], x.device), cond)
    if pred.x0.shape != x.shape or pred.eps.shape != x.shape:
        raise ValueError(f"denoiser returned x0 {tuple(pred.x0.shape)} / eps {tuple(pred.eps.shape)} for "
                         f"x {tuple(x.shape)}")
    return pred
