"""Samplers: pure functions over an explicit timestep grid, and their registry :data:`SAMPLERS`.

Every sampler has the signature::

    f(denoiser, x_T, timesteps, process, *, cond=None, generator=None, callback=None, **options) -> x0

- ``denoiser(x_t, t_base, cond) -> Prediction`` (see :mod:`ldmkit.denoiser`); samplers see nothing else
  of the model.
- ``timesteps``: strictly decreasing process timesteps (:mod:`ldmkit.samplers.grids`); the sampler steps
  through them and from the last one to the clean state (:func:`ldmkit.samplers.common.grid_steps`).
- ``process``: a ``GaussianProcess``; coefficients come from its float64 ``alphas_cumprod``, base-model
  timesteps from its ``timestep_map``.
- ``generator``: a ``torch.Generator`` or one per sample (:mod:`ldmkit.samplers.noise`) for per-sample
  reproducibility.
- ``callback(info)`` is called once per step with one dict,
  ``{"x": state after the step, "i": step index 0..K-1, "t": timestep the step started from,
  "prediction": the Prediction the step used}``; fields may be added later.
- The result has ``x_T``'s shape, dtype and device.

A sampler is known by name in exactly one place, :data:`SAMPLERS`: its function, the timestep grid it
uses when none is named, and which of the model-derived options (:data:`MODEL_OPTIONS`) it takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ldmkit.samplers.ddim import ddim_invert, sample_ddim
from ldmkit.samplers.ddpm import sample_ddpm
from ldmkit.samplers.dpm_solver import sample_dpmpp_2m
from ldmkit.samplers.grids import (
    GRIDS,
    logsnr_grid,
    make_timestep_grid,
    quadratic_grid,
    trailing_grid,
    uniform_grid,
)
from ldmkit.samplers.noise import make_generators, randn, randn_like
from ldmkit.samplers.repaint import repaint_schedule, sample_repaint  # needs known + mask: not in SAMPLERS

# Options a caller derives from the model and its run config; each sampler takes the subset it names.
MODEL_OPTIONS = ("variance_type", "clip_denoised", "eta", "dynamic_threshold")


@dataclass(frozen=True)
class SamplerSpec:
    """One registered sampler.

    Attributes:
        fn: the sampler function (signature in this module's docstring).
        grid: its default timestep grid, a name in :data:`GRIDS`.
        options: the names in :data:`MODEL_OPTIONS` it accepts as keyword arguments.
    """

    fn: Callable
    grid: str
    options: tuple[str, ...]

    def __post_init__(self):
        if self.grid not in GRIDS:
            raise ValueError(f"SamplerSpec: grid={self.grid!r}; valid: {', '.join(sorted(GRIDS))}")
        unknown = [o for o in self.options if o not in MODEL_OPTIONS]
        if unknown:
            raise ValueError(f"SamplerSpec: options {unknown} not in {MODEL_OPTIONS}")


# DPM-Solver++(2M) steps in log-SNR: on its ``logsnr`` grid it is 8-24x more accurate than DDIM at 10-50
# steps (benchmarks/sampler_accuracy.py, docs/benchmarks.md).
SAMPLERS = {
    "ddpm": SamplerSpec(sample_ddpm, "uniform", ("variance_type", "clip_denoised", "dynamic_threshold")),
    "ddim": SamplerSpec(sample_ddim, "uniform", ("eta", "clip_denoised", "dynamic_threshold")),
    "dpmpp_2m": SamplerSpec(sample_dpmpp_2m, "logsnr", ("clip_denoised", "dynamic_threshold")),
}


__all__ = [
    "GRIDS",
    "MODEL_OPTIONS",
    "SAMPLERS",
    "SamplerSpec",
    "ddim_invert",
    "logsnr_grid",
    "make_generators",
    "make_timestep_grid",
    "quadratic_grid",
    "randn",
    "randn_like",
    "repaint_schedule",
    "sample_ddim",
    "sample_ddpm",
    "sample_dpmpp_2m",
    "sample_repaint",
    "trailing_grid",
    "uniform_grid",
]
