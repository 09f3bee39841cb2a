"""Gaussian diffusion math (DDPM, Improved DDPM): schedules, the process, parameterizations, losses, likelihood.

Imports only torch and numpy (and ``ldmkit.types`` / ``ldmkit.registry``); never a network. See ``process.py``
for the timestep index convention and for how respaced processes map their steps to the base model's timesteps.
"""

from ldmkit.diffusion.likelihood import (
    DatasetNLL,
    VLBResult,
    dataset_bits_per_dim,
    discretized_gaussian_log_likelihood,
    normal_kl,
    prior_bpd,
    vlb_bits_per_dim,
    vlb_term_bpd,
)
from ldmkit.diffusion.objectives import LOSS_TYPES, LossType, training_losses
from ldmkit.diffusion.parameterization import PREDICTION_TYPES, PredictionType, prediction_from_output
from ldmkit.diffusion.process import VARIANCE_TYPES, GaussianProcess, VarianceType
from ldmkit.diffusion.schedules import SCHEDULES, get_betas
from ldmkit.diffusion.timesteps import (
    TIMESTEP_SAMPLERS,
    LossSecondMomentSampler,
    TimestepSampler,
    UniformSampler,
    create_timestep_sampler,
)

__all__ = [
    "LOSS_TYPES",
    "PREDICTION_TYPES",
    "SCHEDULES",
    "TIMESTEP_SAMPLERS",
    "VARIANCE_TYPES",
    "DatasetNLL",
    "GaussianProcess",
    "LossSecondMomentSampler",
    "LossType",
    "PredictionType",
    "TimestepSampler",
    "UniformSampler",
    "VLBResult",
    "VarianceType",
    "create_timestep_sampler",
    "dataset_bits_per_dim",
    "discretized_gaussian_log_likelihood",
    "get_betas",
    "normal_kl",
    "prediction_from_output",
    "prior_bpd",
    "training_losses",
    "vlb_bits_per_dim",
    "vlb_term_bpd",
]
