"""First-stage autoencoders for latent diffusion: KL- and VQ-regularised, with perceptual + PatchGAN losses."""

from __future__ import annotations

from torch import nn

from ldmkit.autoencoders.config import AutoencoderRunConfig, ModelConfig, load_config
from ldmkit.autoencoders.distributions import DiagonalGaussian, Regularization
from ldmkit.autoencoders.kl import AutoencoderKL
from ldmkit.autoencoders.vq import QuantizedPosterior, VectorQuantizer, VQAutoencoder, VQOutput
from ldmkit.registry import lookup

AUTOENCODERS = {"kl": AutoencoderKL, "vq": VQAutoencoder}


def build_autoencoder(cfg: ModelConfig) -> nn.Module:
    """Instantiate the autoencoder named by ``cfg.type`` (one of :data:`AUTOENCODERS`)."""
    return lookup(AUTOENCODERS, cfg.type, "model.type")(cfg)


__all__ = ["AUTOENCODERS", "AutoencoderKL", "AutoencoderRunConfig", "DiagonalGaussian", "ModelConfig",
           "QuantizedPosterior", "Regularization", "VQAutoencoder", "VQOutput", "VectorQuantizer",
           "build_autoencoder", "load_config"]
