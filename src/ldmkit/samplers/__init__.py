"""Samplers: pure functions over an explicit timestep grid.

Every sampler has the signature::

    f(denoiser, x_T, timesteps, process, *, cond=None, generator=None, callback=None, **options) -> x0

- ``denoiser(x_t, t_base, cond) -> Prediction`` (see :mod:`ldmkit.denoiser`); samplers see nothing else
  of the model.
- ``timesteps``: strictly decreasing process timesteps (:mod:`ldmkit.samplers.grids`); the sampler steps
  through them and from the last one to the clean state.
- ``process``: a ``GaussianProcess``; coefficients come from its float64 ``alphas_cumprod``, base-model
  timesteps from its ``timestep_map``.
- ``generator``: a ``torch.Generator`` or one per sample (:mod:`ldmkit.samplers.noise`) for per-sample
  reproducibility.
- ``callback(step, t, x, prediction)`` is called once per step.
- The result has ``x_T``'s shape, dtype and device.
"""

from __future__ import annotations

from ldmkit.samplers.ddim import ddim_invert, sample_ddim
from ldmkit.samplers.ddpm import sample_ddpm
from ldmkit.samplers.dpm_solver import sample_dpmpp_2m
from ldmkit.samplers.grids import (
    DEFAULT_GRID,
    GRIDS,
    logsnr_grid,
    make_grid,
    quadratic_grid,
    trailing_grid,
    uniform_grid,
)
from ldmkit.samplers.noise import make_generators, randn, randn_like

SAMPLERS = {"ddpm": sample_ddpm, "ddim": sample_ddim, "dpmpp_2m": sample_dpmpp_2m}


def get_sampler(name: str):
    """The sampler registered as ``name`` in :data:`SAMPLERS`."""
    if name not in SAMPLERS:
        raise KeyError(f"unknown sampler {name!r}; valid samplers: {sorted(SAMPLERS)}")
    return SAMPLERS[name]


__all__ = [
    "DEFAULT_GRID",
    "GRIDS",
    "SAMPLERS",
    "ddim_invert",
    "get_sampler",
    "logsnr_grid",
    "make_generators",
    "make_grid",
    "quadratic_grid",
    "randn",
    "randn_like",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "trailing_grid",
    "uniform_grid",
]
