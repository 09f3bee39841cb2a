"""Denoiser (network + parameterization -> Prediction) and classifier-free guidance."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ldmkit.conditioning.class_label import drop_condition, null_condition
from ldmkit.denoiser import ClassifierFreeGuidance, Denoiser
from ldmkit.networks import UNet, unet_config
from ldmkit.types import Cond

ABAR = torch.linspace(0.99, 0.01, 50, dtype=torch.float64)


class Fixed(nn.Module):
    """Returns a stored output; records calls."""

    def __init__(self, out, null_class=None):
        super().__init__()
        self.out, self.null_class, self.calls = out, null_class, []

    def forward(self, x, t, *, class_labels=None, context=None, context_mask=None, concat=None):
        self.calls.append({"n": x.shape[0], "class_labels": class_labels, "context": context})
        return self.out[: x.shape[0]]


@pytest.mark.parametrize("prediction_type", ["eps", "x0", "v"])
def test_prediction_types_are_consistent(prediction_type):
    torch.manual_seed(0)
    x0, eps = torch.randn(3, 2, 4, 4, dtype=torch.float64), torch.randn(3, 2, 4, 4, dtype=torch.float64)
    t = torch.tensor([0, 20, 49])
    a = ABAR[t].view(-1, 1, 1, 1)
    x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
    raw = {"eps": eps, "x0": x0, "v": a.sqrt() * eps - (1 - a).sqrt() * x0}[prediction_type]
    den = Denoiser(Fixed(raw), ABAR, prediction_type)
    pred = den(x_t, t)
    torch.testing.assert_close(pred.x0, x0)
    torch.testing.assert_close(pred.eps, eps)
    assert pred.var_output is None


def test_learn_variance_splits_channels_and_errors():
    out = torch.randn(2, 6, 4, 4)
    pred = Denoiser(Fixed(out), ABAR, "eps", learn_variance=True)(torch.randn(2, 3, 4, 4), torch.tensor([1, 2]))
    torch.testing.assert_close(pred.eps, out[:, :3])
    torch.testing.assert_close(pred.var_output, out[:, 3:])
    with pytest.raises(ValueError, match="network gives 6 channels for 3-channel x_t"):
        Denoiser(Fixed(out), ABAR, "eps")(torch.randn(2, 3, 4, 4), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="valid: \\['eps', 'v', 'x0'\\]"):
        Denoiser(Fixed(out), ABAR, "score")


def test_denoiser_keeps_float64_table_and_state_dict_is_the_network():
    den = Denoiser(UNet(unet_config("tiny")), ABAR, "eps").float()
    assert den.alphas_cumprod.dtype == torch.float64
    assert all(k.startswith("network.") for k in den.state_dict())


def _cfg_setup(scale, rescale=0.0):
    torch.manual_seed(0)
    n = 3
    cond_out, uncond_out = torch.randn(n, 1, 4, 4), torch.randn(n, 1, 4, 4)
    net = Fixed(torch.cat([cond_out, uncond_out]), null_class=7)
    den = Denoiser(net, ABAR, "x0")
    cfg = ClassifierFreeGuidance(den, guidance_scale=scale, guidance_rescale=rescale)
    x_t, t = torch.randn(n, 1, 4, 4), torch.tensor([3, 3, 40])
    cond = Cond(class_labels=torch.tensor([1, 2, 3]), context=torch.randn(n, 2, 5),
                context_mask=torch.ones(n, 2, dtype=torch.bool))
    return cfg, net, den, x_t, t, cond, cond_out, uncond_out


def test_cfg_batches_cond_and_uncond_in_one_forward():
    cfg, net, _, x_t, t, cond, cond_out, uncond_out = _cfg_setup(3.0)
    pred = cfg(x_t, t, cond)
    assert len(net.calls) == 1 and net.calls[0]["n"] == 6
    assert net.calls[0]["class_labels"].tolist() == [1, 2, 3, 7, 7, 7]
    assert net.calls[0]["context"][3:].abs().max() == 0
    torch.testing.assert_close(pred.x0, uncond_out + 3.0 * (cond_out - uncond_out))


def test_cfg_scale_one_and_zero():
    cfg, _, _, x_t, t, cond, cond_out, _ = _cfg_setup(1.0)
    torch.testing.assert_close(cfg(x_t, t, cond).x0, cond_out)
    cfg0, _, _, x_t, t, cond, _, uncond_out = _cfg_setup(0.0)
    torch.testing.assert_close(cfg0(x_t, t, cond).x0, uncond_out)


def test_cfg_rescale_matches_conditional_std():
    """guidance_rescale = 1: the guided x0 has exactly the per-example std of the conditional x0
    (Lin et al. 2023, Eq. 15); eps stays consistent with x0 at x_t."""
    cfg, _, _, x_t, t, cond, cond_out, _ = _cfg_setup(5.0, rescale=1.0)
    pred = cfg(x_t, t, cond)
    torch.testing.assert_close(pred.x0.std(dim=(1, 2, 3)), cond_out.std(dim=(1, 2, 3)))
    a = ABAR[t].view(-1, 1, 1, 1).float()
    torch.testing.assert_close(a.sqrt() * pred.x0 + (1 - a).sqrt() * pred.eps, x_t, atol=1e-5, rtol=1e-5)


def test_null_condition_and_dropout():
    cond = Cond(class_labels=torch.tensor([1, 2, 3, 4]), context=torch.randn(4, 2, 3),
                context_mask=torch.ones(4, 2, dtype=torch.bool), concat=torch.randn(4, 1, 2, 2))
    null = null_condition(cond, null_class=10)
    assert null.class_labels.tolist() == [10] * 4 and null.context.abs().max() == 0
    assert not null.context_mask.any() and torch.equal(null.concat, cond.concat)
    assert drop_condition(cond, 0.0, 10) is cond
    assert drop_condition(cond, 1.0, 10).class_labels.tolist() == [10] * 4
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(2500)
    many = drop_condition(Cond(class_labels=labels), 0.2, 10, generator=g).class_labels
    assert abs((many == 10).float().mean().item() - 0.2) < 0.03
    with pytest.raises(ValueError, match="null_class is None"):
        null_condition(cond)


def test_bfloat16_network_behind_float32_denoiser():
    net = UNet(unet_config("tiny", num_classes=3, context_dim=8)).to(torch.bfloat16)
    den = Denoiser(net, ABAR, "v")
    cond = Cond(class_labels=torch.tensor([0, 3]), context=torch.randn(2, 4, 8))
    pred = ClassifierFreeGuidance(den, 2.0)(torch.randn(2, 1, 8, 8), torch.tensor([1, 2]), cond)
    assert pred.x0.dtype == torch.float32 and den.alphas_cumprod.dtype == torch.float64
    assert torch.isfinite(pred.x0).all()
