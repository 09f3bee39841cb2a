"""Attention blocks for the U-Net: 2-D self-attention and the spatial transformer with cross-attention.

Everything goes through ``torch.nn.functional.scaled_dot_product_attention`` so the fused kernels
(flash / memory-efficient / CPU flash) are used where available. Heads are configured either as
``num_heads`` (the head width follows from the channel count) or as ``head_dim`` (the head count follows),
never both.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def resolve_heads(channels: int, num_heads: int | None, head_dim: int | None, where: str = "") -> int:
    """Number of heads for ``channels`` given exactly one of ``num_heads`` / ``head_dim``."""
    at = f" ({where})" if where else ""
    if (num_heads is None) == (head_dim is None):
        raise ValueError(
            f"attention{at}: set exactly one of num_heads / head_dim, got num_heads={num_heads}, "
            f"head_dim={head_dim}"
        )
    if num_heads is not None:
        if num_heads <= 0 or channels % num_heads:
            raise ValueError(f"attention{at}: channels={channels} not divisible by num_heads={num_heads}")
        return num_heads
    if head_dim <= 0 or channels % head_dim:
        raise ValueError(f"attention{at}: channels={channels} not divisible by head_dim={head_dim}")
    return channels // head_dim


def _split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[N, L, heads * d] -> [N, heads, L, d]``."""
    n, length, width = x.shape
    return x.view(n, length, heads, width // heads).transpose(1, 2)


def _merge_heads(x: torch.Tensor) -> torch.Tensor:
    """``[N, heads, L, d] -> [N, L, heads * d]``."""
    n, heads, length, d = x.shape
    return x.transpose(1, 2).reshape(n, length, heads * d)


class SelfAttention2d(nn.Module):
    """Residual multi-head self-attention over the pixels of a feature map (DDPM's attention block).

    ``x + proj(attention(GroupNorm(x)))`` with the output projection zero-initialised, so the block
    starts as the identity.
    """

    def __init__(self, channels: int, *, num_heads: int | None = None, head_dim: int | None = None,
                 norm_groups: int = 32):
        super().__init__()
        self.heads = resolve_heads(channels, num_heads, head_dim, "SelfAttention2d")
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, emb=None, context=None, context_mask=None) -> torch.Tensor:
        """``[N, C, H, W] -> [N, C, H, W]``; the extra arguments are accepted and ignored."""
        n, c, h, w = x.shape
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # [N, HW, C]
        q, k, v = self.qkv(tokens).chunk(3, dim=-1)
        out = F.scaled_dot_product_attention(
            _split_heads(q, self.heads), _split_heads(k, self.heads), _split_heads(v, self.heads)
        )
        out = self.proj(_merge_heads(out))
        return x + out.transpose(1, 2).reshape(n, c, h, w)


class CrossAttention(nn.Module):
    """Multi-head attention of query tokens onto context tokens (self-attention when no context).

    Keys and values carry no bias, so an all-zero context and a fully masked context both reduce the
    block to its output bias: the two "null" contexts agree.
    """

    def __init__(self, query_dim: int, context_dim: int | None = None, *, num_heads: int | None = None,
                 head_dim: int | None = None):
        super().__init__()
        self.heads = resolve_heads(query_dim, num_heads, head_dim, "CrossAttention")
        context_dim = query_dim if context_dim is None else context_dim
        self.to_q = nn.Linear(query_dim, query_dim, bias=False)
        self.to_k = nn.Linear(context_dim, query_dim, bias=False)
        self.to_v = nn.Linear(context_dim, query_dim, bias=False)
        self.to_out = nn.Linear(query_dim, query_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Attend ``x [N, L, D]`` to ``context [N, S, Dc]`` (or to itself).

        Args:
            context_mask: ``[N, S]`` bool, True where a context token is real. A row with no real token
                attends to nothing and yields zeros before the output projection.
        """
        source = x if context is None else context
        q = _split_heads(self.to_q(x), self.heads)
        k = _split_heads(self.to_k(source), self.heads)
        v = _split_heads(self.to_v(source), self.heads)
        if context_mask is None:
            out = F.scaled_dot_product_attention(q, k, v)
        else:
            mask = context_mask.to(torch.bool)
            has_any = mask.any(dim=-1)  # [N]
            # A fully masked row would give NaN (softmax over nothing): let it see everything, then zero it.
            safe = mask | ~has_any[:, None]
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=safe[:, None, None, :])
            out = out * has_any[:, None, None, None].to(out.dtype)
        return self.to_out(_merge_heads(out))


class FeedForward(nn.Module):
    """GEGLU feed-forward (Shazeer 2020), ``dim -> mult*dim -> dim``."""

    def __init__(self, dim: int, mult: int = 4, dropout: float = 0.0):
        super().__init__()
        inner = dim * mult
        self.proj_in = nn.Linear(dim, 2 * inner)
        self.dropout = nn.Dropout(dropout)
        self.proj_out = nn.Linear(inner, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, gate = self.proj_in(x).chunk(2, dim=-1)
        return self.proj_out(self.dropout(a * F.gelu(gate)))


class TransformerBlock(nn.Module):
    """Pre-norm block: self-attention, cross-attention to the context, feed-forward (Rombach et al. 2022)."""

    def __init__(self, dim: int, context_dim: int, *, num_heads: int | None, head_dim: int | None,
                 dropout: float = 0.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn1 = CrossAttention(dim, None, num_heads=num_heads, head_dim=head_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn2 = CrossAttention(dim, context_dim, num_heads=num_heads, head_dim=head_dim)
        self.norm3 = nn.LayerNorm(dim)
        self.ff = FeedForward(dim, dropout=dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context, context_mask)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """Residual transformer over the pixels of a feature map with cross-attention to context tokens.

    ``x + proj_out(blocks(proj_in(GroupNorm(x))))``; ``proj_out`` is zero-initialised.
    """

    def __init__(self, channels: int, context_dim: int, *, num_heads: int | None = None,
                 head_dim: int | None = None, depth: int = 1, dropout: float = 0.0, norm_groups: int = 32):
        super().__init__()
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.blocks = nn.ModuleList(
            TransformerBlock(channels, context_dim, num_heads=num_heads, head_dim=head_dim, dropout=dropout)
            for _ in range(depth)
        )
        self.proj_out = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x: torch.Tensor, emb=None, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        """``[N, C, H, W]`` attending to ``context [N, S, Dc]`` -> ``[N, C, H, W]``."""
        if context is None:
            raise ValueError("SpatialTransformer: this block cross-attends and needs context [N, S, context_dim]")
        n, c, h, w = x.shape
        tokens = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        for block in self.blocks:
            tokens = block(tokens, context, context_mask)
        out = self.proj_out(tokens)
        return x + out.transpose(1, 2).reshape(n, c, h, w)
