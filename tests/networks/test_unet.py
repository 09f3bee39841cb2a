"""U-Net: shapes for every conditioning type, gradients to every parameter, sizes, errors, presets."""

from __future__ import annotations

import pytest
import torch

from ldmkit.networks import UNET_PRESETS, UNet, UNetConfig, unet_config
from ldmkit.registry import ConfigError

N, H, W = 2, 8, 8


def perturb_zero_init(net):
    """Zero-initialised output layers block gradients to everything before them at init."""
    with torch.no_grad():
        for p in net.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.05)
    return net


CONDITIONING = {
    "none": ({}, {}),
    "class": ({"num_classes": 5}, {"class_labels": torch.tensor([1, 5])}),
    "context": ({"context_dim": 6}, {"context": torch.randn(N, 3, 6)}),
    "context_mask": ({"context_dim": 6}, {"context": torch.randn(N, 3, 6),
                                          "context_mask": torch.tensor([[True, True, False], [False] * 3])}),
    "concat": ({"concat_channels": 2}, {"concat": torch.randn(N, 2, H, W)}),
    "all": ({"num_classes": 5, "context_dim": 6, "concat_channels": 2},
            {"class_labels": torch.tensor([0, 3]), "context": torch.randn(N, 4, 6),
             "context_mask": torch.ones(N, 4, dtype=torch.bool), "concat": torch.randn(N, 2, H, W)}),
}


@pytest.mark.parametrize("kind", sorted(CONDITIONING))
@pytest.mark.parametrize("learn_variance", [False, True])
def test_output_shape_every_conditioning(kind, learn_variance):
    cfg_kw, inputs = CONDITIONING[kind]
    net = UNet(unet_config("tiny", in_channels=3, learn_variance=learn_variance, **cfg_kw))
    out = net(torch.randn(N, 3, H, W), torch.tensor([0, 999]), **inputs)
    assert out.shape == (N, 6 if learn_variance else 3, H, W)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("kind", ["none", "all"])
def test_gradients_reach_every_parameter(kind):
    cfg_kw, inputs = CONDITIONING[kind]
    torch.manual_seed(0)
    net = perturb_zero_init(UNet(unet_config("tiny", in_channels=1, dropout=0.1, **cfg_kw)))
    out = net(torch.randn(N, 1, H, W), torch.tensor([3, 500]), **inputs)
    out.square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert not missing, f"no gradient for {missing}"


def test_any_size_divisible_by_2_pow_levels_minus_1():
    net = UNet(unet_config("tiny", in_channels=1, channel_mult=(1, 2, 2), attention_levels=(2,)))
    assert net.size_multiple == 4
    for h, w in [(8, 8), (12, 20), (32, 64)]:
        assert net(torch.randn(1, 1, h, w), torch.tensor([1])).shape == (1, 1, h, w)
    with pytest.raises(ValueError, match="input size 10x8 must be divisible by 4.*pad to 12x8"):
        net(torch.randn(1, 1, 10, 8), torch.tensor([1]))


def test_conditioning_errors_are_clear():
    net = UNet(unet_config("tiny", num_classes=4, context_dim=6, concat_channels=1))
    x, t = torch.randn(N, 1, H, W), torch.tensor([1, 2])
    ctx = torch.randn(N, 2, 6)
    ok = {"class_labels": torch.tensor([0, 4]), "context": ctx, "concat": torch.randn(N, 1, H, W)}
    net(x, t, **ok)
    with pytest.raises(ValueError, match="num_classes=4 but class_labels is None"):
        net(x, t, **{**ok, "class_labels": None})
    with pytest.raises(ValueError, match="class_labels must lie in \\[0, 4\\] \\(4 = null class\\), got 0..5"):
        net(x, t, **{**ok, "class_labels": torch.tensor([0, 5])})
    with pytest.raises(ValueError, match="context_dim=6 but context is None"):
        net(x, t, **{**ok, "context": None})
    with pytest.raises(ValueError, match="context must be \\[N=2, S, 6\\]"):
        net(x, t, **{**ok, "context": torch.randn(N, 2, 5)})
    with pytest.raises(ValueError, match="concat must be"):
        net(x, t, **{**ok, "concat": None})
    with pytest.raises(ValueError, match="x has 3 channels"):
        net(torch.randn(N, 3, H, W), t, **ok)
    plain = UNet(unet_config("tiny"))
    with pytest.raises(ValueError, match="class_labels given but the config has num_classes=None"):
        plain(x, t, class_labels=torch.tensor([0, 1]))


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="exactly one of num_heads / head_dim"):
        UNetConfig(num_heads=4, head_dim=16)
    with pytest.raises(ValueError, match="not divisible by norm_groups=32"):
        UNetConfig(model_channels=48)
    with pytest.raises(ValueError, match="attention_levels has 3"):
        UNetConfig(channel_mult=(1, 2), attention_levels=(3,))
    with pytest.raises(ConfigError, match="unknown U-Net preset 'huge'; valid: .*tiny"):
        unet_config("huge")
    with pytest.raises(TypeError, match="unknown UNetConfig field"):
        unet_config("tiny", channels=3)
    with pytest.raises(ValueError, match="down level 1\\): channels=32 not divisible by head_dim=12"):
        UNet(unet_config("tiny", head_dim=12))


def test_heads_as_num_heads_or_head_dim_are_equivalent():
    a = UNet(unet_config("tiny", num_heads=2))  # 32 channels at level 1 -> head width 16
    b = UNet(unet_config("tiny", head_dim=16))
    assert [m.heads for m in a.modules() if hasattr(m, "heads")] == [m.heads for m in b.modules() if hasattr(m, "heads")]


def test_presets_build_and_cpu_preset_size():
    for name in UNET_PRESETS:
        cfg = unet_config(name, context_dim=16 if name.startswith("ldm") else None)
        assert isinstance(cfg, UNetConfig)
    n = sum(p.numel() for p in UNet(unet_config("fmnist_small")).parameters())
    assert 1e6 <= n <= 4e6, n
    net = UNet(unet_config("fmnist_small"))
    assert net(torch.randn(1, 1, 28, 28), torch.tensor([5])).shape == (1, 1, 28, 28)  # 28 = 4 * 7


def test_zero_init_output_and_null_class():
    net = UNet(unet_config("tiny", num_classes=10))
    assert net.null_class == 10
    out = net(torch.randn(N, 1, H, W), torch.tensor([0, 1]), class_labels=torch.tensor([10, 2]))
    assert out.abs().max() == 0  # zero-initialised conv_out


def test_context_mask_ignores_masked_tokens_and_all_masked_equals_zero_context():
    torch.manual_seed(0)
    net = perturb_zero_init(UNet(unet_config("tiny", context_dim=6))).eval()
    x, t = torch.randn(1, 1, H, W), torch.tensor([10])
    ctx = torch.randn(1, 3, 6)
    mask = torch.tensor([[True, True, False]])
    ctx2 = ctx.clone()
    ctx2[0, 2] = 100.0  # changes a masked token only
    torch.testing.assert_close(net(x, t, context=ctx, context_mask=mask), net(x, t, context=ctx2, context_mask=mask))
    empty = net(x, t, context=ctx, context_mask=torch.zeros(1, 3, dtype=torch.bool))
    zeros = net(x, t, context=torch.zeros(1, 3, 6))
    torch.testing.assert_close(empty, zeros)
    assert not torch.allclose(empty, net(x, t, context=ctx))


def test_coord_input_appends_x_and_y_channels():
    from ldmkit.networks.unet import coord_channels

    grid = coord_channels(torch.zeros(2, 3, 4, 6))
    assert grid.shape == (2, 2, 4, 6)
    torch.testing.assert_close(grid[1, 0, 2], torch.linspace(-1, 1, 6))  # x runs along the width
    torch.testing.assert_close(grid[0, 1, :, 5], torch.linspace(-1, 1, 4))  # y runs down the height
    cfg = {"in_channels": 2, "model_channels": 8, "channel_mult": (1, 2), "num_res_blocks": 1,
           "attention_levels": (1,), "num_heads": 2, "norm_groups": 4}
    torch.manual_seed(0)
    plain = UNet(UNetConfig(**cfg))
    coords = UNet(UNetConfig(**cfg, coord_input=True))
    assert coords.conv_in.in_channels == 4
    state = {k: v for k, v in plain.state_dict().items()}
    state["conv_in.weight"] = torch.cat([plain.conv_in.weight, torch.zeros(8, 2, 3, 3)], dim=1)
    coords.load_state_dict(state)
    for m in (plain, coords):  # a non-zero output layer, so the outputs say something
        torch.nn.init.normal_(m.conv_out.weight, std=0.1)
    coords.conv_out.weight.data.copy_(plain.conv_out.weight)
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([3, 7])
    torch.testing.assert_close(coords(x, t), plain(x, t))  # zero coordinate weights: the plain U-Net
    with torch.no_grad():
        coords.conv_in.weight[:, 2:] = 0.5
    assert not torch.allclose(coords(x, t), plain(x, t))  # the coordinates reach the network
    # any canvas size: the coordinates span it
    assert coords(torch.randn(1, 2, 16, 12), torch.tensor([1])).shape == (1, 2, 16, 12)
