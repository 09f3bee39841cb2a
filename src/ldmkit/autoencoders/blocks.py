"""Convolutional encoder and decoder of the first-stage autoencoders (Esser et al. 2021; Rombach et al. 2022).

Layout: ``len(channel_mult)`` resolution levels, each with ``num_res_blocks`` ResNet blocks; the encoder
halves the resolution between levels, so the downsampling factor is ``f = 2 ** (len(channel_mult) - 1)``
(``channel_mult=(1,)`` gives f = 1). An optional self-attention block sits in the middle.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F


def group_norm(channels: int, max_groups: int = 32) -> nn.GroupNorm:
    """GroupNorm with the largest group count <= ``max_groups`` that divides ``channels``."""
    groups = math.gcd(channels, max_groups)
    return nn.GroupNorm(groups, channels, eps=1e-6, affine=True)


class ResnetBlock(nn.Module):
    """norm -> SiLU -> conv -> norm -> SiLU -> dropout -> conv, plus a (1x1-projected) skip connection."""

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = group_norm(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with a residual connection."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return x + self.proj(out.transpose(1, 2).reshape(n, c, h, w))


class Downsample(nn.Module):
    """Stride-2 3x3 convolution with padding 1 (halves an even size)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """ResNet block, optional attention, ResNet block at the lowest resolution."""

    def __init__(self, channels: int, dropout: float, attention: bool):
        super().__init__()
        self.block1 = ResnetBlock(channels, channels, dropout)
        self.attn = AttnBlock(channels) if attention else nn.Identity()
        self.block2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.attn(self.block1(x)))


class Encoder(nn.Module):
    """Image ``[N, in_channels, H, W]`` -> ``[N, out_channels, H/f, W/f]``.

    Args:
        in_channels: image channels.
        channels: base width; level ``i`` has ``channels * channel_mult[i]`` channels.
        channel_mult: one multiplier per level; ``f = 2 ** (len(channel_mult) - 1)``.
        num_res_blocks: ResNet blocks per level.
        out_channels: output channels (2 * z_channels for a Gaussian posterior).
        mid_attention: put a self-attention block at the lowest resolution.
        dropout: dropout rate inside ResNet blocks.
    """

    def __init__(self, in_channels: int, channels: int, channel_mult: tuple[int, ...], num_res_blocks: int,
                 out_channels: int, mid_attention: bool = True, dropout: float = 0.0):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, channels, 3, padding=1)
        levels = []
        ch = channels
        for i, mult in enumerate(channel_mult):
            blocks = []
            for _ in range(num_res_blocks):
                blocks.append(ResnetBlock(ch, channels * mult, dropout))
                ch = channels * mult
            if i < len(channel_mult) - 1:
                blocks.append(Downsample(ch))
            levels.append(nn.Sequential(*blocks))
        self.levels = nn.Sequential(*levels)
        self.mid = MidBlock(ch, dropout, mid_attention)
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.levels(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    """Latent ``[N, in_channels, h, w]`` -> image ``[N, out_channels, h*f, w*f]`` (mirror of :class:`Encoder`).

    ``conv_out.weight`` is the "last layer" at which the adaptive adversarial weight is computed.
    """

    def __init__(self, in_channels: int, channels: int, channel_mult: tuple[int, ...], num_res_blocks: int,
                 out_channels: int, mid_attention: bool = True, dropout: float = 0.0):
        super().__init__()
        ch = channels * channel_mult[-1]
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        self.mid = MidBlock(ch, dropout, mid_attention)
        levels = []
        for i in reversed(range(len(channel_mult))):
            blocks = []
            for _ in range(num_res_blocks + 1):
                blocks.append(ResnetBlock(ch, channels * channel_mult[i], dropout))
                ch = channels * channel_mult[i]
            if i > 0:
                blocks.append(Upsample(ch))
            levels.append(nn.Sequential(*blocks))
        self.levels = nn.Sequential(*levels)
        self.norm_out = group_norm(ch)
        self.conv_out = nn.Conv2d(ch, out_channels, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.levels(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


class AutoencoderBase(nn.Module):
    """The first-stage contract (KL and VQ): ``encode(x) -> posterior``, ``decode(z)``, ``forward``,
    ``factor``, ``latent_channels``, ``last_layer``.

    A posterior has ``sample(generator=None)``, ``mode()``, ``deterministic`` and ``regularization(num_pixels)``
    (the KL's :class:`~ldmkit.autoencoders.distributions.DiagonalGaussian`, the VQ's degenerate
    :class:`~ldmkit.autoencoders.vq.QuantizedPosterior`). Subclasses set ``config``, ``encoder``, ``decoder``
    and ``post_quant_conv`` and define ``encode`` and ``decode``.
    """

    @property
    def factor(self) -> int:
        """Spatial downsampling factor f."""
        return self.config.factor

    @property
    def latent_channels(self) -> int:
        return self.config.z_channels

    @property
    def last_layer(self) -> torch.Tensor:
        """The decoder's output convolution weight (where the adaptive GAN weight is measured)."""
        return self.decoder.conv_out.weight

    def decode_latent(self, z: torch.Tensor) -> torch.Tensor:
        """A latent as the posterior gives it (KL: any z; VQ: already quantised) -> image ``[N, C, h*f, w*f]``."""
        return self.decoder(self.post_quant_conv(z))

    def forward(self, x: torch.Tensor, sample_posterior: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, Any]:
        """Reconstruct ``x`` from a posterior sample (or its mode); returns ``(reconstruction, posterior)``."""
        posterior = self.encode(x)
        z = posterior.sample(generator) if sample_posterior else posterior.mode()
        return self.decode_latent(z), posterior
