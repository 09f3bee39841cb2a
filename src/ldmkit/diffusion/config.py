"""``DiffusionConfig``: the forward process and the training objective, beside the math it configures."""

from __future__ import annotations

from dataclasses import dataclass

from ldmkit.diffusion.objectives import LossType
from ldmkit.diffusion.parameterization import PredictionType
from ldmkit.diffusion.process import VarianceType
from ldmkit.diffusion.schedules import SCHEDULES
from ldmkit.diffusion.timesteps import TIMESTEP_SAMPLERS
from ldmkit.registry import lookup


@dataclass
class DiffusionConfig:
    """The forward process and the training objective (Ho et al. 2020; Nichol & Dhariwal 2021).

    Attributes:
        schedule: a name in ``ldmkit.diffusion.SCHEDULES`` (``linear``: Ho et al.; ``cosine``: Nichol &
            Dhariwal Eq. 17).
        num_timesteps: T.
        prediction_type: what the network outputs (``eps``, ``x0`` or ``v``).
        variance_type: ``fixed_small`` (beta-tilde), ``fixed_large`` (beta), ``learned`` (log-variance) or
            ``learned_range`` (interpolation v, Nichol & Dhariwal Eq. 15).
        loss_type: ``simple`` (L_simple), ``vlb`` (L_vlb) or ``hybrid`` (L_simple + lambda L_vlb).
        vlb_weight: lambda of L_hybrid (Nichol & Dhariwal use 0.001).
        min_snr_gamma: weight the MSE by min-SNR-gamma (Hang et al. 2023); ``None`` = off.
        timestep_sampler: ``uniform`` or ``loss_second_moment`` (importance sampling, N&D Eq. 18).
        cond_drop_prob: probability of replacing an example's condition by the null condition during
            training (classifier-free guidance, Ho & Salimans 2022); 0 for unconditional models.
    """

    schedule: str = "linear"
    num_timesteps: int = 1000
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
        if self.num_timesteps < 1:
            raise ValueError(f"num_timesteps={self.num_timesteps} must be >= 1")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob={self.cond_drop_prob} must be in [0, 1]")
        learned = self.learn_variance
        if (self.loss_type == "simple" and learned) or (self.loss_type == "hybrid" and not learned):
            raise ValueError(f"loss_type={self.loss_type!r} does not fit variance_type={self.variance_type!r}: "
                             "'simple' goes with fixed_small/fixed_large, 'hybrid' with learned/learned_range")

    @property
    def learn_variance(self) -> bool:
        return self.variance_type in ("learned", "learned_range")
