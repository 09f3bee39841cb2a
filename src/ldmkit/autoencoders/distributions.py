"""Diagonal Gaussian posterior of the KL autoencoder (Kingma & Welling 2014; Rombach et al. 2022, Sec. 3.1)."""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

LOGVAR_MIN, LOGVAR_MAX = -30.0, 20.0


class Regularization(NamedTuple):
    """A first stage's regulariser as its posterior reports it (``posterior.regularization(num_pixels)``).

    Attributes:
        name: which weight of the loss config scales it: ``"kl"`` (``kl_weight``) or ``"codebook"``
            (``codebook_weight``); see ``ldmkit.autoencoders.losses.REGULARIZER_WEIGHTS``.
        loss: the unweighted scalar term.
        logs: detached values to log.
    """

    name: str
    loss: torch.Tensor
    logs: dict[str, torch.Tensor]


class DiagonalGaussian:
    """A Gaussian with diagonal covariance over ``[N, C, H, W]`` latents.

    Built from the encoder output, whose channels are the mean followed by the log-variance
    (``[N, 2C, H, W]``), or from ``mean`` and ``logvar`` directly. The log-variance is clamped to
    [-30, 20] so that ``exp`` stays finite in float32.

    Args:
        parameters: ``[N, 2C, H, W]`` mean and log-variance concatenated on dim 1, or None.
        mean, logvar: ``[N, C, H, W]`` each, when ``parameters`` is None.
        deterministic: if True, the variance is zero: ``sample`` returns the mean and ``kl`` is not defined.
    """

    def __init__(
        self,
        parameters: torch.Tensor | None = None,
        *,
        mean: torch.Tensor | None = None,
        logvar: torch.Tensor | None = None,
        deterministic: bool = False,
    ):
        if parameters is not None:
            if parameters.shape[1] % 2:
                raise ValueError(f"DiagonalGaussian: parameters need an even channel count (mean, logvar), "
                                 f"got shape {tuple(parameters.shape)}")
            mean, logvar = torch.chunk(parameters, 2, dim=1)
        if mean is None or logvar is None:
            raise ValueError("DiagonalGaussian needs either parameters or both mean and logvar")
        if mean.shape != logvar.shape:
            raise ValueError(f"DiagonalGaussian: mean {tuple(mean.shape)} and logvar {tuple(logvar.shape)} differ")
        self.mean = mean
        self.logvar = logvar.clamp(LOGVAR_MIN, LOGVAR_MAX)
        self.deterministic = deterministic
        if deterministic:
            self.logvar = torch.full_like(self.mean, LOGVAR_MIN)
        self.std = torch.exp(0.5 * self.logvar)
        self.var = torch.exp(self.logvar)

    @property
    def shape(self) -> torch.Size:
        return self.mean.shape

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """Reparameterised sample ``mean + std * eps``, eps ~ N(0, I) (gradients reach mean and logvar)."""
        if self.deterministic:
            return self.mean
        eps = torch.randn(self.mean.shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + self.std * eps

    def mode(self) -> torch.Tensor:
        """The most likely latent, i.e. the mean."""
        return self.mean

    def kl(self, other: DiagonalGaussian | None = None) -> torch.Tensor:
        """KL(self || other) summed over all non-batch dims, shape ``[N]``; ``other=None`` means N(0, I).

        Closed form: KL = 1/2 sum( var/var_o + (mu - mu_o)^2 / var_o - 1 - logvar + logvar_o ).
        """
        dims = tuple(range(1, self.mean.dim()))
        if self.deterministic:
            return torch.zeros(self.mean.shape[0], device=self.mean.device, dtype=self.mean.dtype)
        if other is None:
            return 0.5 * (self.mean.pow(2) + self.var - 1.0 - self.logvar).sum(dim=dims)
        return 0.5 * (
            self.var / other.var + (self.mean - other.mean).pow(2) / other.var - 1.0 - self.logvar + other.logvar
        ).sum(dim=dims)

    def regularization(self, num_pixels: int) -> Regularization:
        """KL to N(0, I) per image (batch mean) divided by the image's ``num_pixels`` = C*H*W, so that it is
        normalised like the per-pixel L1 (Rombach et al. sum both; the ratio of the two is the same)."""
        kl = self.kl().mean()
        return Regularization("kl", kl / num_pixels, {"kl": kl.detach()})

    def nll(self, x: torch.Tensor) -> torch.Tensor:
        """Negative log-density of ``x`` in nats, summed over all non-batch dims, shape ``[N]``."""
        dims = tuple(range(1, self.mean.dim()))
        if self.deterministic:
            return torch.zeros(x.shape[0], device=x.device, dtype=x.dtype)
        return 0.5 * (math.log(2.0 * math.pi) + self.logvar + (x - self.mean).pow(2) / self.var).sum(dim=dims)
