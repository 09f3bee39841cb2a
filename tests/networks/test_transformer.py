"""TokenTransformer equals torch's own pre-LN encoder layers with the same weights; padding is ignored."""

from __future__ import annotations

import torch
from torch import nn

from ldmkit.networks.transformer import TokenTransformer


def reference(model: TokenTransformer) -> nn.ModuleList:
    """nn.TransformerEncoderLayer (norm_first, GELU) holding the model's weights: an independent forward."""
    layers = nn.ModuleList()
    for block in model.blocks:
        width = block.qkv.in_features
        ref = nn.TransformerEncoderLayer(width, block.heads, 4 * width, dropout=0.0, activation="gelu",
                                         batch_first=True, norm_first=True)
        ref.self_attn.in_proj_weight.data.copy_(block.qkv.weight)
        ref.self_attn.in_proj_bias.data.copy_(block.qkv.bias)
        ref.self_attn.out_proj.load_state_dict(block.proj.state_dict())
        ref.linear1.load_state_dict(block.fc1.state_dict())
        ref.linear2.load_state_dict(block.fc2.state_dict())
        ref.norm1.load_state_dict(block.norm1.state_dict())
        ref.norm2.load_state_dict(block.norm2.state_dict())
        layers.append(ref.eval())
    return layers


def test_matches_torch_encoder_layers_with_padding():
    torch.manual_seed(0)
    model = TokenTransformer(40, 16, 2, 4, 10).eval()
    tokens = torch.tensor([[3, 7, 9, 2, 0, 0], [5, 1, 4, 4, 8, 6]])
    mask = tokens > 0
    with torch.no_grad():
        out, out_mask = model(tokens, mask)
        x = model.token_embedding(tokens) + model.position_embedding[:6]
        for layer in reference(model):
            x = layer(x, src_key_padding_mask=~mask)
        x = model.norm(x)
    assert torch.equal(out_mask, mask)
    assert torch.allclose(out[mask], x[mask], atol=1e-5)


def test_padding_tokens_do_not_change_real_tokens_and_all_padding_is_finite():
    torch.manual_seed(1)
    model = TokenTransformer(40, 16, 2, 4, 12).eval()
    short = torch.tensor([[3, 7, 9]])
    padded = torch.tensor([[3, 7, 9, 11, 12, 13]])  # padding slots hold garbage ids: the mask must hide them
    with torch.no_grad():
        a, _ = model(short, torch.ones(1, 3, dtype=torch.bool))
        b, _ = model(padded, torch.tensor([[True, True, True, False, False, False]]))
        empty, m = model(torch.zeros(1, 4, dtype=torch.int64), torch.zeros(1, 4, dtype=torch.bool))
    assert torch.allclose(a, b[:, :3], atol=1e-6)
    assert torch.isfinite(empty).all() and not m.any()


def test_gradients_reach_embeddings():
    model = TokenTransformer(40, 16, 1, 2, 8)
    out, _ = model(torch.tensor([[1, 2, 3]]))
    out.square().mean().backward()
    assert model.token_embedding.weight.grad[[1, 2, 3]].abs().sum() > 0
    assert model.token_embedding.weight.grad[4:].abs().sum() == 0
