"""KL-regularised autoencoder (Rombach et al. 2022, Sec. 3.1 "KL-reg", App. G)."""

from __future__ import annotations

import torch
from torch import nn

from ldmkit.autoencoders.blocks import AutoencoderBase, Decoder, Encoder
from ldmkit.autoencoders.config import ModelConfig
from ldmkit.autoencoders.distributions import DiagonalGaussian


class AutoencoderKL(AutoencoderBase):
    """Encoder -> diagonal Gaussian posterior q(z|x) -> decoder.

    The encoder emits ``2 * z_channels`` channels (mean and log-variance), a 1x1 convolution maps them
    (as in Rombach et al.), and the decoder maps ``z`` ``[N, z_channels, H/f, W/f]`` back to an image.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        mult = tuple(cfg.channel_mult)
        self.encoder = Encoder(cfg.in_channels, cfg.channels, mult, cfg.num_res_blocks, 2 * cfg.z_channels,
                               cfg.mid_attention, cfg.dropout)
        self.decoder = Decoder(cfg.z_channels, cfg.channels, mult, cfg.num_res_blocks, cfg.in_channels,
                               cfg.mid_attention, cfg.dropout)
        self.quant_conv = nn.Conv2d(2 * cfg.z_channels, 2 * cfg.z_channels, 1)
        self.post_quant_conv = nn.Conv2d(cfg.z_channels, cfg.z_channels, 1)

    def encode(self, x: torch.Tensor) -> DiagonalGaussian:
        """Image ``[N, C, H, W]`` -> posterior over ``[N, z_channels, H/f, W/f]``."""
        return DiagonalGaussian(self.quant_conv(self.encoder(x)))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latent ``[N, z_channels, h, w]`` -> image ``[N, C, h*f, w*f]``."""
        return self.decode_latent(z)
