"""``DiffusionConfig``: the forward process and the training objective, beside the math it configures."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ldmkit.diffusion.objectives import LossType, check_loss_and_variance
from ldmkit.diffusion.parameterization import PREDICTION_TYPES, PredictionType
from ldmkit.diffusion.process import GaussianProcess, VarianceType, is_learned_variance
from ldmkit.diffusion.schedules import SCHEDULES, get_betas
from ldmkit.diffusion.timesteps import TIMESTEP_SAMPLERS
from ldmkit.registry import ConfigError, lookup


@dataclass
class DiffusionConfig:
    """The forward process and the training objective (Ho et al. 2020; Nichol & Dhariwal 2021).

    Attributes:
        schedule: a name in ``ldmkit.diffusion.SCHEDULES`` (``linear``: Ho et al.; ``cosine``: Nichol &
            Dhariwal Eq. 17).
        num_timesteps: T.
        rescale_zero_terminal_snr: rescale the schedule to alpha-bar_T = 0 (Lin et al. 2024, Alg. 1); needs
            ``prediction_type`` ``v`` or ``x0`` (eps cannot give x0 at SNR 0).
        prediction_type: what the network outputs (``eps``, ``x0`` or ``v``).
        variance_type: ``fixed_small`` (beta-tilde), ``fixed_large`` (beta), ``learned`` (log-variance) or
            ``learned_range`` (interpolation v, Nichol & Dhariwal Eq. 15).
        loss_type: ``simple`` (L_simple), ``vlb`` (L_vlb) or ``hybrid`` (L_simple + lambda L_vlb); which
            variance types each fits is ``ldmkit.diffusion.objectives.LOSS_TYPES``.
        vlb_weight: lambda of L_hybrid (Nichol & Dhariwal use 0.001).
        min_snr_gamma: weight the MSE by min-SNR-gamma (Hang et al. 2023); ``None`` = off.
        timestep_sampler: ``uniform`` or ``loss_second_moment`` (importance sampling, N&D Eq. 18).
        cond_drop_prob: probability of replacing an example's condition by the null condition during
            training (classifier-free guidance, Ho & Salimans 2022); 0 for unconditional models.
    """

    schedule: str = "linear"
    num_timesteps: int = 1000
    rescale_zero_terminal_snr: bool = False
    prediction_type: PredictionType = "eps"
    variance_type: VarianceType = "fixed_large"
    loss_type: LossType = "simple"
    vlb_weight: float = 0.001
    min_snr_gamma: float | None = None
    timestep_sampler: str = "uniform"
    cond_drop_prob: float = 0.0

    def __post_init__(self):
        lookup(SCHEDULES, self.schedule, "diffusion.schedule")
        lookup(TIMESTEP_SAMPLERS, self.timestep_sampler, "diffusion.timestep_sampler")
        lookup(PREDICTION_TYPES, self.prediction_type, "diffusion.prediction_type")
        if self.num_timesteps < 1:
            raise ConfigError(f"num_timesteps={self.num_timesteps} must be >= 1")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise ConfigError(f"cond_drop_prob={self.cond_drop_prob} must be in [0, 1]")
        check_loss_and_variance(self.loss_type, self.variance_type)
        alpha_bar_T = float(np.prod(1.0 - self.betas()))
        if alpha_bar_T == 0.0 and self.prediction_type == "eps":
            cause = ("diffusion.rescale_zero_terminal_snr=True" if self.rescale_zero_terminal_snr
                     else f"diffusion.schedule={self.schedule!r}")
            raise ConfigError(f"{cause} gives alpha-bar_T = 0 (zero terminal SNR), where "
                              "diffusion.prediction_type='eps' cannot recover x0 (x0 = (x_t - sqrt(1 - alpha-bar) "
                              "eps) / sqrt(alpha-bar) divides by 0, so sampling gives NaN); use "
                              "diffusion.prediction_type 'v' or 'x0'")

    @property
    def learn_variance(self) -> bool:
        """Whether the network predicts the variance (``variance_type`` learned or learned_range)."""
        return is_learned_variance(self.variance_type)

    def betas(self) -> np.ndarray:
        """The ``[T]`` float64 betas of this schedule (``get_betas``)."""
        return get_betas(self.schedule, self.num_timesteps, rescale_zero_terminal_snr=self.rescale_zero_terminal_snr)

    def build_process(self) -> GaussianProcess:
        """The base ``GaussianProcess`` of this config (schedule, T, zero-terminal-SNR rescaling)."""
        return GaussianProcess(self.betas())
