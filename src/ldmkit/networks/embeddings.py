"""Timestep embeddings: the Transformer sinusoidal code (Vaswani et al. 2017, Sec. 3.5) plus an MLP."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal timestep embedding, as used by DDPM (Ho et al. 2020, Appendix B).

    Args:
        t: ``[N]`` timesteps, integer or float (fractional timesteps are fine).
        dim: embedding width; odd widths get one zero column at the end.
        max_period: the longest wavelength.

    Returns:
        ``[N, dim]`` float32 tensor ``[cos(t * f_k), sin(t * f_k)]`` with ``f_k = max_period^(-k / half)``.
    """
    if t.dim() != 1:
        raise ValueError(f"timestep_embedding: t must be 1-D [N], got shape {tuple(t.shape)}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half
    )
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimestepEmbedding(nn.Module):
    """Sinusoidal code of width ``in_dim`` followed by Linear-SiLU-Linear to ``out_dim``."""

    def __init__(self, in_dim: int, out_dim: int, max_period: float = 10000.0):
        super().__init__()
        self.in_dim = in_dim
        self.max_period = max_period
        self.mlp = nn.Sequential(nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        """``[N]`` timesteps -> ``[N, out_dim]``."""
        emb = timestep_embedding(t, self.in_dim, self.max_period)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))
