"""Attention blocks against a direct softmax implementation; timestep embedding against its formula."""

from __future__ import annotations

import math

import torch

from ldmkit.networks.attention import CrossAttention, SelfAttention2d
from ldmkit.networks.embeddings import timestep_embedding


def naive_attention(q, k, v, heads, mask=None):
    n, lq, d = q.shape
    def split(a):
        return a.view(n, a.shape[1], heads, d // heads).transpose(1, 2)
    q, k, v = split(q), split(k), split(v)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // heads)
    if mask is not None:
        scores = scores.masked_fill(~mask[:, None, None, :], float("-inf"))
    out = torch.softmax(scores, dim=-1) @ v
    return out.transpose(1, 2).reshape(n, lq, d)


def test_cross_attention_matches_naive_with_mask():
    torch.manual_seed(0)
    attn = CrossAttention(8, 5, num_heads=2).double()
    x, ctx = torch.randn(2, 4, 8, dtype=torch.float64), torch.randn(2, 3, 5, dtype=torch.float64)
    mask = torch.tensor([[True, False, True], [True, True, True]])
    expected = attn.to_out(naive_attention(attn.to_q(x), attn.to_k(ctx), attn.to_v(ctx), 2, mask))
    torch.testing.assert_close(attn(x, ctx, mask), expected)


def test_self_attention_2d_matches_naive():
    torch.manual_seed(0)
    attn = SelfAttention2d(8, head_dim=4, norm_groups=4).double()
    torch.nn.init.normal_(attn.proj.weight)
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    tokens = attn.norm(x).flatten(2).transpose(1, 2)
    q, k, v = attn.qkv(tokens).chunk(3, dim=-1)
    out = attn.proj(naive_attention(q, k, v, 2)).transpose(1, 2).reshape(2, 8, 3, 5)
    torch.testing.assert_close(attn(x), x + out)


def test_timestep_embedding_formula():
    t = torch.tensor([0, 7, 999])
    emb = timestep_embedding(t, 6, max_period=10000.0)
    freqs = torch.tensor([10000.0 ** (-k / 3) for k in range(3)])
    expected = torch.cat([torch.cos(t[:, None] * freqs), torch.sin(t[:, None] * freqs)], dim=1)
    torch.testing.assert_close(emb, expected)
    assert timestep_embedding(t, 7).shape == (3, 7)
