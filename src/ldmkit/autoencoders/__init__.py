"""First-stage autoencoders for latent diffusion: KL- and VQ-regularised, with perceptual + PatchGAN losses."""

from __future__ import annotations

from torch import nn

from ldmkit.autoencoders.config import AutoencoderRunConfig, ModelConfig, load_config
from ldmkit.autoencoders.distributions import DiagonalGaussian
from ldmkit.autoencoders.kl import AutoencoderKL
from ldmkit.autoencoders.vq import VectorQuantizer, VQAutoencoder, VQOutput

AUTOENCODERS = {"kl": AutoencoderKL, "vq": VQAutoencoder}


def build_autoencoder(cfg: ModelConfig) -> nn.Module:
    """Instantiate the autoencoder named by ``cfg.type`` (one of :data:`AUTOENCODERS`)."""
    if cfg.type not in AUTOENCODERS:
        raise ValueError(f"model.type {cfg.type!r} is unknown; valid: {sorted(AUTOENCODERS)}")
    return AUTOENCODERS[cfg.type](cfg)


__all__ = ["AUTOENCODERS", "AutoencoderKL", "AutoencoderRunConfig", "DiagonalGaussian", "ModelConfig",
           "VQAutoencoder", "VQOutput", "VectorQuantizer", "build_autoencoder", "load_config"]
