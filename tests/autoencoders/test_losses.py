import pytest
import torch
from torch import nn

from ldmkit.autoencoders import build_autoencoder
from ldmkit.autoencoders.config import LossConfig, ModelConfig
from ldmkit.autoencoders.losses import (
    NLayerDiscriminator,
    adaptive_weight,
    discriminator_loss,
    generator_loss,
    hinge_d_loss,
)


def test_patchgan_output_shape_and_hinge_values():
    d = NLayerDiscriminator(1, 8, num_layers=2)
    assert d(torch.randn(3, 1, 32, 32)).shape == (3, 1, 6, 6)
    assert NLayerDiscriminator(1, 8, num_layers=3)(torch.randn(1, 1, 64, 64)).shape == (1, 1, 6, 6)
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-3.0, 0.0])
    # 1/2 (mean(relu(1 - [2, .5])) + mean(relu(1 + [-3, 0]))) = 1/2 (0.25 + 0.5)
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.375)


def test_adaptive_weight_is_finite_and_follows_the_gradient_ratio():
    last = nn.Parameter(torch.randn(4, 4))
    x = torch.randn(8, 4)
    out = x @ last
    rec = out.pow(2).mean()
    adv = -out.mean()
    w1 = adaptive_weight(rec, adv, last)
    w2 = adaptive_weight(rec, 10.0 * adv, last)
    w3 = adaptive_weight(3.0 * rec, adv, last)
    assert torch.isfinite(w1) and w1 > 0 and not w1.requires_grad
    g_rec = torch.autograd.grad(rec, last, retain_graph=True)[0].norm()
    g_adv = torch.autograd.grad(adv, last, retain_graph=True)[0].norm()
    assert w1.item() == pytest.approx((g_rec / (g_adv + 1e-4)).item(), rel=1e-5)
    assert w2.item() == pytest.approx(w1.item() / 10.0, rel=1e-3)  # adv gradient x10 -> weight / 10
    assert w3.item() == pytest.approx(3.0 * w1.item(), rel=1e-5)  # rec gradient x3 -> weight x3
    # a vanishing adversarial gradient gives a large but finite, clamped weight
    w_clamped = adaptive_weight(rec, 0.0 * adv, last, max_weight=1e4)
    assert torch.isfinite(w_clamped) and w_clamped.item() == pytest.approx(min(1e4, g_rec.item() / 1e-4), rel=1e-4)


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_discriminator_start_step_is_honoured(kind):
    torch.manual_seed(0)
    ae = build_autoencoder(ModelConfig(type=kind, channels=8, channel_mult=[1, 2], z_channels=2,
                                       mid_attention=False))
    disc = NLayerDiscriminator(1, 8, 2)
    cfg = LossConfig(perceptual="none", disc_start=100, disc_weight=0.5)
    x = torch.randn(4, 1, 16, 16)
    for step, active in ((0, False), (99, False), (100, True), (500, True)):
        recon, reg = ae(x)
        g, logs = generator_loss(x, recon, reg, last_layer=ae.last_layer, discriminator=disc, perceptual=None,
                                 step=step, cfg=cfg)
        d, _ = discriminator_loss(x, recon, discriminator=disc, step=step, cfg=cfg)
        if active:
            assert logs["adaptive_weight"] > 0 and logs["g_adv"] != 0
            assert d.requires_grad and d.item() > 0
        else:
            assert logs["adaptive_weight"] == 0 and logs["g_adv"] == 0
            assert not d.requires_grad and d.item() == 0
            # before the start the loss is exactly rec + reg: no discriminator gradient at all
            g.backward()
            assert all(p.grad is None for p in disc.parameters())
        assert torch.isfinite(g)


def test_generator_loss_terms_add_up_for_kl():
    torch.manual_seed(0)
    ae = build_autoencoder(ModelConfig(type="kl", channels=8, channel_mult=[1, 2], z_channels=2,
                                       mid_attention=False))
    x = torch.randn(2, 1, 16, 16)
    recon, post = ae(x)
    cfg = LossConfig(perceptual="none", kl_weight=0.5, disc_start=10)
    loss, logs = generator_loss(x, recon, post, last_layer=ae.last_layer, discriminator=None, perceptual=None,
                                step=0, cfg=cfg)
    expected = (x - recon).abs().mean() + 0.5 * post.kl().mean() / x[0].numel()
    torch.testing.assert_close(loss, expected)
    assert logs["kl"] >= 0


def test_generator_loss_takes_the_regulariser_from_the_posterior_vq():
    torch.manual_seed(0)
    ae = build_autoencoder(ModelConfig(type="vq", channels=8, channel_mult=[1, 2], z_channels=2,
                                       mid_attention=False))
    x = torch.randn(2, 1, 16, 16)
    recon, post = ae(x)
    cfg = LossConfig(perceptual="none", codebook_weight=0.3, kl_weight=123.0, disc_start=10)
    loss, logs = generator_loss(x, recon, post, last_layer=ae.last_layer, discriminator=None, perceptual=None,
                                step=0, cfg=cfg)
    torch.testing.assert_close(loss, (x - recon).abs().mean() + 0.3 * post.loss)  # kl_weight plays no part
    assert set(logs) >= {"vq_loss", "commitment", "perplexity", "codebook_usage", "codes_restarted"}


def test_generator_loss_accepts_any_posterior_with_a_regularization():
    from ldmkit.autoencoders.distributions import Regularization
    from ldmkit.registry import ConfigError

    class PointMass:
        def __init__(self, name):
            self.name = name

        def regularization(self, num_pixels):
            return Regularization(self.name, torch.tensor(float(num_pixels)), {"custom": torch.tensor(1.0)})

    x, recon = torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 4)
    cfg = LossConfig(perceptual="none", kl_weight=0.5, codebook_weight=2.0, disc_start=10)
    kw = {"last_layer": None, "discriminator": None, "perceptual": None, "step": 0, "cfg": cfg}
    loss, logs = generator_loss(x, recon, PointMass("kl"), **kw)
    assert loss.item() == 0.5 * 16 and logs["custom"] == 1.0
    assert generator_loss(x, recon, PointMass("codebook"), **kw)[0].item() == 2.0 * 16
    with pytest.raises(ConfigError, match="unknown first-stage regulariser 'entropy'"):
        generator_loss(x, recon, PointMass("entropy"), **kw)
