"""Timestep grids for sampling: which timesteps of a ``T``-step process a sampler visits.

Every grid is a strictly decreasing int64 tensor of process timesteps in ``[0, T-1]`` (sampling order).
A sampler steps from each entry to the next, and from the last entry to the clean state, so the grid
always ends at x0 without listing it.

- ``uniform``: ``round(linspace(0, T-1, n))``: evenly spaced, first step at ``T-1``, last at 0.
- ``quadratic``: ``round(linspace(0, sqrt(T-1), n)^2)`` (Song et al. 2021, DDIM Sec. D.2 uses the
  square spacing): dense near the data, where small images change most.
- ``logsnr``: timesteps whose half log-SNR ``lambda = log(alpha / sigma)`` is evenly spaced between the
  ends of the schedule (the spacing DPM-Solver steps in, Lu et al. 2022, Sec. 3.3); needs the schedule's
  ``alphas_cumprod``.
- ``trailing``: ``round(T - k T / n) - 1`` for ``k = 0..n-1`` (Lin et al. 2024, Table 2): starts at ``T-1``
  and ends at ``T/n - 1``, so the first step sees the terminal noise level even for small ``n``.
"""

from __future__ import annotations

import numpy as np
import torch

from ldmkit.registry import lookup


def _check(num_timesteps: int, num_steps: int, name: str) -> None:
    if num_timesteps < 1:
        raise ValueError(f"{name} grid: num_timesteps={num_timesteps} must be >= 1")
    if not 1 <= num_steps <= num_timesteps:
        raise ValueError(f"{name} grid: num_steps={num_steps} must be in [1, num_timesteps={num_timesteps}]")


def _strictly_increasing(ts: np.ndarray, num_timesteps: int) -> np.ndarray:
    """Push rounding collisions apart: ``t_k >= t_{k-1} + 1`` upwards, then ``t_k <= t_{k+1} - 1`` down
    from ``T - 1``, so the result is strictly increasing within ``[0, T-1]`` (needs ``len(ts) <= T``)."""
    ts = np.clip(ts.astype(np.int64), 0, num_timesteps - 1)
    for k in range(1, len(ts)):
        ts[k] = max(ts[k], ts[k - 1] + 1)
    ts[-1] = min(ts[-1], num_timesteps - 1)
    for k in range(len(ts) - 2, -1, -1):
        ts[k] = min(ts[k], ts[k + 1] - 1)
    return ts


def uniform_grid(num_timesteps: int, num_steps: int) -> torch.Tensor:
    """Evenly spaced timesteps from ``T-1`` down to 0 (sampling order)."""
    _check(num_timesteps, num_steps, "uniform")
    ts = np.round(np.linspace(0, num_timesteps - 1, num_steps)) if num_steps > 1 else np.array([num_timesteps - 1])
    return torch.from_numpy(_strictly_increasing(ts, num_timesteps)[::-1].copy())


def quadratic_grid(num_timesteps: int, num_steps: int) -> torch.Tensor:
    """Quadratically spaced timesteps from ``T-1`` down to 0, denser near t = 0."""
    _check(num_timesteps, num_steps, "quadratic")
    if num_steps == 1:
        return torch.tensor([num_timesteps - 1], dtype=torch.int64)
    ts = np.round(np.linspace(0.0, np.sqrt(num_timesteps - 1), num_steps) ** 2)
    ts = _strictly_increasing(ts, num_timesteps)
    # Collisions at the low end were pushed up; the top must still be T - 1.
    return torch.from_numpy(ts[::-1].copy())


def trailing_grid(num_timesteps: int, num_steps: int) -> torch.Tensor:
    """Timesteps ``T-1, T-1-T/n, ...`` down to ``T/n - 1`` (Lin et al. 2024, "trailing")."""
    _check(num_timesteps, num_steps, "trailing")
    ts = np.round(np.arange(num_timesteps, 0, -num_timesteps / num_steps)).astype(np.int64) - 1
    return torch.from_numpy(ts[:num_steps].copy())


def logsnr_grid(num_timesteps: int, num_steps: int, alphas_cumprod=None) -> torch.Tensor:
    """Timesteps with evenly spaced half log-SNR ``lambda_t = 0.5 log(abar_t / (1 - abar_t))``.

    The targets ``linspace(lambda_{T-1}, lambda_0, n)`` are mapped to the nearest timestep (lambda is
    decreasing in t); collisions at the ends are pushed apart so the grid stays strictly decreasing.
    A zero-terminal-SNR schedule (abar_{T-1} = 0) keeps ``T-1`` as the first step and spaces the rest
    from ``T-2``.
    """
    _check(num_timesteps, num_steps, "logsnr")
    if alphas_cumprod is None:
        raise ValueError("logsnr grid: needs the schedule's alphas_cumprod (make_timestep_grid(..., alphas_cumprod=...))")
    abar = np.asarray(torch.as_tensor(alphas_cumprod, dtype=torch.float64).cpu(), dtype=np.float64)
    if abar.shape != (num_timesteps,):
        raise ValueError(f"logsnr grid: alphas_cumprod has shape {abar.shape}, expected ({num_timesteps},)")
    if num_steps == 1:
        return torch.tensor([num_timesteps - 1], dtype=torch.int64)
    top = num_timesteps - 1 if abar[-1] > 0 else num_timesteps - 2
    with np.errstate(divide="ignore"):
        lam = 0.5 * (np.log(abar[: top + 1]) - np.log1p(-abar[: top + 1]))
    targets = np.linspace(lam[top], lam[0], num_steps)
    ts = np.array([int(np.argmin(np.abs(lam - v))) for v in targets])[::-1]  # increasing t
    ts[-1] = num_timesteps - 1
    return torch.from_numpy(_strictly_increasing(np.sort(ts), num_timesteps)[::-1].copy())


GRIDS = {"uniform": uniform_grid, "quadratic": quadratic_grid, "trailing": trailing_grid, "logsnr": logsnr_grid}


def make_timestep_grid(name: str, num_timesteps: int, num_steps: int, *, alphas_cumprod=None) -> torch.Tensor:
    """The timestep grid ``name`` (one of :data:`GRIDS`) with ``num_steps`` steps over ``num_timesteps``.

    ``alphas_cumprod`` (``[T]``) is needed by the ``logsnr`` grid only.
    """
    grid_fn = lookup(GRIDS, name, "timestep grid")
    if grid_fn is logsnr_grid:
        return logsnr_grid(num_timesteps, num_steps, alphas_cumprod)
    return grid_fn(num_timesteps, num_steps)
