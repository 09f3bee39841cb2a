"""A small transformer encoder over token ids: the trainable ``tau_theta`` of Rombach et al. 2022 (Sec. 3.3).

Used for text trained from scratch (over the same WordPiece vocabulary as MiniLM, as the paper did for
LAION) and for layout tokens. Pre-LayerNorm blocks (self-attention + GELU MLP), learned positions, a final
LayerNorm. Padding tokens are keys no query attends to; the output keeps the input mask, so cross-attention
ignores them too.

Code name -> symbol: ``tokens`` y (token ids), ``context`` tau_theta(y) ``[N, L, width]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TokenTransformerBlock(nn.Module):
    """``x + SelfAttn(LN(x))`` then ``x + MLP(LN(x))`` with a key-padding mask."""

    def __init__(self, width: int, heads: int, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__()
        if width % heads:
            raise ValueError(f"TokenTransformer: width={width} is not divisible by heads={heads}")
        self.heads, self.dropout = heads, dropout
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.fc1, self.fc2 = nn.Linear(width, mlp_ratio * width), nn.Linear(mlp_ratio * width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, length, width = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(n, length, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        # a row without any real token would softmax over nothing (NaN): let it see all; its output is masked
        keys = (mask | ~mask.any(dim=1, keepdim=True))[:, None, None, :]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=keys, dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(a.transpose(1, 2).reshape(n, length, width))
        h = self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return x + F.dropout(h, self.dropout, self.training)


class TokenTransformer(nn.Module):
    """Token ids ``[N, L]`` (+ mask) -> context ``[N, L, width]`` (+ the same mask).

    Args:
        vocab_size: number of token ids (id 0 is padding).
        width: token width (= the U-Net's ``context_dim``).
        depth: number of blocks.
        heads: attention heads per block.
        max_len: longest token sequence (learned positions).
        dropout: attention / MLP dropout while training.
    """

    def __init__(self, vocab_size: int, width: int, depth: int, heads: int, max_len: int, dropout: float = 0.0):
        super().__init__()
        self.vocab_size, self.width, self.max_len = vocab_size, width, max_len
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.position_embedding = nn.Parameter(torch.zeros(max_len, width))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.position_embedding, std=0.01)
        self.blocks = nn.ModuleList(TokenTransformerBlock(width, heads, dropout=dropout) for _ in range(depth))
        self.norm = nn.LayerNorm(width)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(context [N, L, width], mask [N, L] bool)``; ``mask`` True for real tokens (default: all)."""
        if tokens.dim() != 2 or tokens.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"TokenTransformer: tokens must be [N, L] integers, got {tuple(tokens.shape)} {tokens.dtype}")
        if tokens.shape[1] > self.max_len:
            raise ValueError(f"TokenTransformer: {tokens.shape[1]} tokens but max_len={self.max_len}")
        if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"TokenTransformer: token ids must lie in [0, {self.vocab_size - 1}]")
        mask = torch.ones_like(tokens, dtype=torch.bool) if mask is None else mask.to(torch.bool)
        x = self.token_embedding(tokens) + self.position_embedding[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x), mask
