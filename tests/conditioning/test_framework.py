"""The conditioning framework: Cond tokens, the denoiser's context encoder, null condition, builder checks."""

from __future__ import annotations

import pytest
import torch

from ldmkit.conditioning import Conditioner, parse_classes
from ldmkit.conditioning.class_label import drop_condition, null_condition
from ldmkit.config import MODEL_SECTIONS, config_from_data
from ldmkit.denoiser import ClassifierFreeGuidance, Denoiser
from ldmkit.networks.transformer import TokenTransformer
from ldmkit.networks.unet import UNet, unet_config
from ldmkit.pipelines import build_conditioner
from ldmkit.registry import ConfigError
from ldmkit.types import Batch, Cond

ABAR = torch.linspace(0.99, 0.01, 10, dtype=torch.float64)


def token_denoiser(seed: int = 0) -> Denoiser:
    torch.manual_seed(seed)
    net = UNet(unet_config("tiny", context_dim=16))
    for p in net.parameters():  # zero-initialised output layers would hide the context's effect
        if p.dim() > 1 and float(p.detach().abs().max()) == 0.0:
            torch.nn.init.normal_(p, std=0.05)
    return Denoiser(net, ABAR, "eps", context_encoder=TokenTransformer(50, 16, 1, 2, 8)).eval()


def test_cond_tokens_index_repeat_cat():
    c = Cond(tokens=torch.arange(6).view(2, 3), token_mask=torch.ones(2, 3, dtype=torch.bool))
    assert torch.equal(c.index([1]).tokens, torch.tensor([[3, 4, 5]]))
    assert c.repeat(2).tokens.shape == (4, 3) and Cond.cat([c, c]).token_mask.shape == (4, 3)


def test_context_encoder_is_part_of_the_denoiser_and_encodes_tokens():
    den = token_denoiser()
    assert any(k.startswith("context_encoder.") for k in den.state_dict())
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 7])
    tokens = torch.tensor([[1, 5, 9, 0], [2, 3, 0, 0]])
    cond = Cond(tokens=tokens, token_mask=tokens > 0)
    enc = den.encode_context(cond)
    assert enc.tokens is None and enc.context.shape == (2, 4, 16) and torch.equal(enc.context_mask, tokens > 0)
    with torch.no_grad():
        a, b = den(x, t, cond), den(x, t, enc)
        other = den(x, t, Cond(tokens=tokens.flip(0), token_mask=(tokens > 0).flip(0)))
    assert torch.allclose(a.eps, b.eps, atol=1e-6)
    assert not torch.allclose(a.eps, other.eps, atol=1e-4)  # conditioning changes the output


def test_tokens_without_context_encoder_are_refused():
    den = Denoiser(UNet(unet_config("tiny", context_dim=16)), ABAR)
    with pytest.raises(ValueError, match="no context_encoder"):
        den(torch.randn(1, 1, 16, 16), torch.tensor([1]), Cond(tokens=torch.ones(1, 2, dtype=torch.int64)))


def test_null_condition_and_dropout_of_tokens_reach_the_empty_condition():
    den = token_denoiser()
    tokens = torch.tensor([[1, 5, 9], [2, 3, 4]])
    cond = Cond(tokens=tokens, token_mask=torch.ones_like(tokens, dtype=torch.bool))
    null = null_condition(cond)
    assert not null.token_mask.any() and not null.tokens.any()
    dropped = drop_condition(cond, 1.0)
    assert torch.equal(dropped.tokens, null.tokens) and torch.equal(dropped.token_mask, null.token_mask)
    kept = drop_condition(cond, 0.0)
    assert torch.equal(kept.tokens, tokens)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 7])
    with torch.no_grad():
        p_null, p_drop, p_cond = den(x, t, null), den(x, t, dropped), den(x, t, cond)
        # a fully masked context is "no context": a network without cross-attention input would give this
        p_zero = den(x, t, Cond(context=torch.randn(2, 5, 16), context_mask=torch.zeros(2, 5, dtype=torch.bool)))
    assert torch.equal(p_null.eps, p_drop.eps) and torch.allclose(p_null.eps, p_zero.eps, atol=1e-6)
    assert not torch.allclose(p_null.eps, p_cond.eps, atol=1e-4)


def test_guidance_with_tokens_mixes_conditional_and_null():
    den = token_denoiser()
    tokens = torch.tensor([[1, 5, 9], [2, 3, 4]])
    cond = Cond(tokens=tokens, token_mask=torch.ones_like(tokens, dtype=torch.bool))
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 7])
    with torch.no_grad():
        c, u = den(x, t, cond), den(x, t, null_condition(cond))
        g1 = ClassifierFreeGuidance(den, 1.0)(x, t, cond)
        g3 = ClassifierFreeGuidance(den, 3.0)(x, t, cond)
        g3_context = ClassifierFreeGuidance(den, 3.0)(x, t, den.encode_context(cond))
    assert torch.allclose(g1.eps, c.eps) and not torch.allclose(g1.eps, g3.eps, atol=1e-4)
    assert torch.allclose(g3.eps, u.eps + 3.0 * (c.eps - u.eps), atol=1e-5)
    assert torch.allclose(g3.eps, g3_context.eps, atol=1e-5)  # encoding once before sampling changes nothing


def cfg(**sections):
    data = {"data": {"name": "shapes", "length": 8}, "unet": {"preset": "tiny", "in_channels": 3}, **sections}
    return config_from_data(data)


def test_builder_checks_context_dim_and_lists_kinds():
    with pytest.raises(ConfigError, match="context_dim=16 but cond.context='none'"):
        build_conditioner(cfg(unet={"preset": "tiny", "in_channels": 3, "context_dim": 16}))
    with pytest.raises(ConfigError, match="cond.context"):
        cfg(cond={"context": "speech"})
    assert "cond" in MODEL_SECTIONS
    plain = build_conditioner(cfg())
    assert plain.from_batch(Batch(images=torch.zeros(2, 3, 32, 32))) is None
    with pytest.raises(ConfigError, match="does not take prompts"):
        plain.from_request(2, prompts=["a red circle"])
    with pytest.raises(ConfigError, match="does not take labels"):
        plain.from_request(2, labels="circle")


def test_class_kind_names_indices_and_errors():
    c = build_conditioner(cfg(unet={"preset": "tiny", "in_channels": 3, "num_classes": 3}))
    assert isinstance(c, Conditioner) and c.class_names == ("circle", "square", "triangle")
    assert c.from_request(4, labels="Square,0").class_labels.tolist() == [1, 0, 1, 0]
    assert c.from_request(4).class_labels.tolist() == [0, 1, 2, 0]
    with pytest.raises(ConfigError, match="unknown class 'hexagon'; valid: 'circle', 'square', 'triangle'"):
        c.from_request(1, labels="hexagon")
    with pytest.raises(ConfigError, match=r"outside \[0, 2\]"):
        parse_classes("5", 3)
