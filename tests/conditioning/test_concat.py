"""Concat conditioning (conditioning/concat.py): the degradation against PIL / block means, low-res and
masked-image concat channels (shapes, channel counts, geometry with padding), seeded training masks,
input errors, dropout keeping concat, and concat changing a tiny model's output."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit.conditioning.class_label import drop_condition, null_condition
from ldmkit.conditioning.concat import (
    ConcatInputError,
    InpaintConfig,
    Inpainting,
    SuperResConfig,
    SuperResolution,
    build_kind,
    check_mask,
    degrade,
    lowres_concat,
    masked_image_concat,
    random_masks,
    upsample,
)
from ldmkit.data.transforms import center_padding
from ldmkit.latent import LatentSpace, PixelSpace
from ldmkit.registry import ConfigError
from ldmkit.types import Batch, Cond


def rand_images(n=2, c=1, h=28, w=28, seed=0):
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


@pytest.fixture(scope="module")
def latent_space():
    """A random KL autoencoder with f = 2 and 2 latent channels, on 28x28 padded to 32x32."""
    from ldmkit.autoencoders import build_autoencoder
    from ldmkit.autoencoders.config import ModelConfig

    torch.manual_seed(0)
    ae = build_autoencoder(ModelConfig(type="kl", in_channels=1, channels=8, channel_mult=[1, 2], num_res_blocks=1,
                                       z_channels=2, mid_attention=False))
    return LatentSpace(ae, 0.7, "mode", padding=center_padding(28, 32))


# ------------------------------------------------------------------------------------------- degradation
def pil_resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL's float-image bicubic resize (antialiased, a = -0.5), one channel at a time."""
    out = [[np.asarray(Image.fromarray(ch.numpy().astype(np.float32), mode="F").resize(size[::-1], Image.BICUBIC))
            for ch in img] for img in images]
    return torch.tensor(np.array(out))


def test_area_degradation_is_block_mean():
    x = rand_images(3, 2, 28, 20)
    low = degrade(x, SuperResConfig(factor=4, downsample="area", quantize=False))
    expect = x.numpy().reshape(3, 2, 7, 4, 5, 4).mean(axis=(3, 5))
    assert low.shape == (3, 2, 7, 5)
    np.testing.assert_allclose(low.numpy(), expect, atol=1e-6)


def test_bicubic_degradation_and_upsampling_match_pil():
    x = rand_images(2, 1, 28, 28, seed=1) * 0.5  # no clamping involved
    low = degrade(x, SuperResConfig(factor=4, downsample="bicubic", quantize=False))
    np.testing.assert_allclose(low.numpy(), pil_resize(x, (7, 7)).numpy(), atol=2e-4)
    up = upsample(low, 4)
    np.testing.assert_allclose(up.numpy(), pil_resize(low, (28, 28)).clamp(-1, 1).numpy(), atol=2e-4)


def test_noise_and_quantisation():
    x = rand_images(2, 1, 28, 28, seed=2)
    cfg = SuperResConfig(noise_std=0.1)
    a = degrade(x, cfg, torch.Generator().manual_seed(5))
    b = degrade(x, cfg, torch.Generator().manual_seed(5))
    clean = degrade(x, SuperResConfig())
    assert torch.equal(a, b) and not torch.equal(a, clean)
    levels = (a + 1) * 127.5
    assert torch.allclose(levels, levels.round(), atol=1e-4) and float(a.abs().max()) <= 1.0
    with pytest.raises(ConcatInputError, match="30x28 is not divisible by cond.sr.factor=4"):
        degrade(rand_images(1, 1, 30, 28), cfg)


def test_config_errors_name_value_and_choices():
    with pytest.raises(ConfigError, match="cond.sr.factor=1"):
        SuperResConfig(factor=1)
    with pytest.raises(ConfigError, match="bicubic"):
        SuperResConfig(downsample="nearest")
    with pytest.raises(ConfigError, match="noise_std=-0.1"):
        SuperResConfig(noise_std=-0.1)
    with pytest.raises(ConfigError, match="min_area=0.6 must be <= max_area=0.5"):
        InpaintConfig(min_area=0.6)
    with pytest.raises(ConfigError, match="box_prob=1.5"):
        InpaintConfig(box_prob=1.5)


# ------------------------------------------------------------------------------------------- SR concat
def test_sr_concat_pixel_space_is_padded_upsample():
    space = PixelSpace(center_padding(28, 32))
    low = degrade(rand_images(2), SuperResConfig())
    got = lowres_concat(low, space, SuperResConfig())
    assert got.shape == (2, 1, 32, 32)
    assert torch.equal(got[..., 2:30, 2:30], upsample(low, 4)) and bool((got[..., :2, :] == -1).all())


class F4Space:
    """A duck-typed space with an f = 4 first stage on 28x28 padded to 32x32 (as ae_kl_f4_fmnist)."""

    factor, padding = 4, center_padding(28, 32)

    def pad(self, images):
        return self.padding.pad(images)


def test_sr_concat_latent_grid_geometry(latent_space):
    """A constant low-res image c: latent cells hold c; with f = 4 a border cell covers 2 pad pixels (-1) of 4."""
    low = torch.full((1, 1, 7, 7), 0.5)
    got = lowres_concat(low, F4Space(), SuperResConfig())  # 32x32 canvas -> 8x8
    assert got.shape == (1, 1, 8, 8)
    assert torch.allclose(got[..., 1:7, 1:7], torch.tensor(0.5), atol=1e-5)
    assert torch.allclose(got[..., 0, 1:7], torch.tensor((0.5 - 1) / 2), atol=1e-5)
    assert torch.allclose(got[..., 0, 0], torch.tensor((0.5 - 3) / 4), atol=1e-5)
    got2 = lowres_concat(low, latent_space, SuperResConfig())  # f = 2: the pad is exactly one latent cell
    assert got2.shape == (1, 1, 16, 16) and bool((got2[..., 0, :] == -1).all())
    assert torch.allclose(got2[..., 1:15, 1:15], torch.tensor(0.5), atol=1e-5)
    enc = lowres_concat(low, latent_space, SuperResConfig(embed="encode"))
    assert enc.shape == (1, 2, 16, 16)


def test_sr_kind_channels_batch_and_request(latent_space):
    kind = SuperResolution(SuperResConfig(), image_channels=1, latent_channels=2)
    assert kind.channels == 1 and kind.accepts == ("images",)
    assert SuperResolution(SuperResConfig(embed="encode"), 1, 2).channels == 2
    assert kind.output_size((7, 9)) == (28, 36)
    images = latent_space.pad(rand_images(3))
    cond = kind.from_batch(Batch(images=images), latent_space)
    assert cond.concat.shape == (3, 1, 16, 16)
    low = degrade(rand_images(3), SuperResConfig())
    assert torch.equal(kind.from_request(3, space=latent_space, images=low).concat, cond.concat)
    with pytest.raises(ConcatInputError, match=r"expected \[N, 1, H, W\].*got \(3, 3, 7, 7\)"):
        kind.from_request(3, space=latent_space, images=torch.zeros(3, 3, 7, 7))
    with pytest.raises(ConcatInputError, match="in \\[-1, 1\\]"):
        kind.from_request(1, space=latent_space, images=torch.full((1, 1, 7, 7), 3.0))
    with pytest.raises(ConcatInputError, match="needs the low-resolution"):
        kind.from_request(1, space=latent_space)


# ------------------------------------------------------------------------------------------- masks
def test_random_masks_deterministic_and_independent_of_batch_size():
    cfg = InpaintConfig()
    a, b = random_masks(6, (28, 28), cfg, seed=3), random_masks(6, (28, 28), cfg, seed=3)
    assert a.dtype == torch.bool and a.shape == (6, 1, 28, 28) and torch.equal(a, b)
    assert torch.equal(random_masks(2, (28, 28), cfg, seed=3), a[:2])
    assert not torch.equal(random_masks(6, (28, 28), cfg, seed=4), a)
    assert bool(a.flatten(1).any(1).all())


def test_box_masks_are_rectangles_of_the_stated_area():
    cfg = InpaintConfig(box_prob=1.0, min_area=0.2, max_area=0.3)
    masks = random_masks(20, (28, 28), cfg, seed=0)[:, 0]
    for m in masks:
        rows, cols = torch.where(m)
        box = torch.zeros_like(m)
        box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
        assert torch.equal(box, m)
        assert 0.15 <= float(m.float().mean()) <= 0.36  # area in [0.2, 0.3] up to rounding the sides


def test_brush_masks_are_strokes():
    masks = random_masks(20, (28, 28), InpaintConfig(box_prob=0.0), seed=0)[:, 0]
    rectangles = 0
    for m in masks:
        rows, cols = torch.where(m)
        rectangles += int(m[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all())
    assert rectangles <= 2 and 0.02 < float(masks.float().mean()) < 0.6


def test_check_mask_errors():
    with pytest.raises(ConcatInputError, match=r"not binary: found 3 values \(0, 0.5, 1\)"):
        check_mask(torch.tensor([[0.0, 0.5], [1.0, 1.0]]), 1, (2, 2))
    with pytest.raises(ConcatInputError, match=r"expected \[1 or 2, 1, 2, 2\].*got \(1, 1, 3, 2\)"):
        check_mask(torch.ones(3, 2), 2, (2, 2))
    with pytest.raises(ConcatInputError, match=r"got \(1, 2, 2, 2\)"):
        check_mask(torch.ones(1, 2, 2, 2), 1, (2, 2))
    with pytest.raises(ConcatInputError, match=r"empty .* image\(s\) \[1\]"):
        check_mask(torch.tensor([[[[1.0]]], [[[0.0]]]]), 2, (1, 1))
    assert check_mask(torch.ones(2, 2), 3, (2, 2)).shape == (3, 1, 2, 2)


# ------------------------------------------------------------------------------------------- inpainting concat
def test_inpaint_concat_shapes_and_no_leak_from_the_hole(latent_space):
    kind = Inpainting(InpaintConfig(), image_channels=1, latent_channels=2)
    assert kind.channels == 3 and kind.accepts == ("images", "masks")
    images = rand_images(2)
    mask = torch.zeros(2, 1, 28, 28, dtype=torch.bool)
    mask[..., 4:14, 6:20] = True
    cond = kind.from_request(2, space=latent_space, images=images, masks=mask)
    assert cond.concat.shape == (2, 3, 16, 16)
    # the mask channel: max-pooled on the padded canvas (offset 2), so hole rows 4..13 -> latent rows 3..7
    expect = torch.zeros(16, 16)
    expect[3:8, 4:11] = 1
    assert torch.equal(cond.concat[0, 2], expect)
    other = torch.where(mask, rand_images(2, seed=9), images)  # new content inside the hole only
    assert torch.equal(kind.from_request(2, space=latent_space, images=other, masks=mask).concat, cond.concat)
    outside = images.clone()
    outside[..., 20, 20] = -images[..., 20, 20]
    assert not torch.equal(kind.from_request(2, space=latent_space, images=outside, masks=mask).concat, cond.concat)
    with pytest.raises(ConcatInputError, match="needs both"):
        kind.from_request(2, space=latent_space, images=images)


def test_inpaint_from_batch_pixel_space_is_seeded():
    space = PixelSpace(center_padding(28, 32))
    kind = Inpainting(InpaintConfig(), 1, 1)
    batch = Batch(images=space.pad(rand_images(4)))
    a = kind.from_batch(batch, space, torch.Generator().manual_seed(1)).concat
    b = kind.from_batch(batch, space, torch.Generator().manual_seed(1)).concat
    assert a.shape == (4, 2, 32, 32) and torch.equal(a, b)
    hole = a[:, 1:] > 0.5
    assert not bool(hole[..., :2, :].any()) and not bool(hole[..., :, 30:].any())  # padding is never a hole
    assert torch.equal(a[:, :1], torch.where(hole, torch.zeros_like(batch.images), batch.images))
    direct = masked_image_concat(batch.images, hole, space)
    assert torch.equal(direct, a)


# ------------------------------------------------------------------------------------------- with a model
def test_dropout_and_null_condition_keep_concat():
    concat = torch.randn(4, 2, 8, 8)
    cond = Cond(class_labels=torch.tensor([0, 1, 2, 0]), concat=concat)
    dropped = drop_condition(cond, 1.0, null_class=3)
    assert torch.equal(dropped.class_labels, torch.full((4,), 3)) and torch.equal(dropped.concat, concat)
    assert torch.equal(null_condition(cond, 3).concat, concat)


def test_concat_changes_the_output_of_a_tiny_model():
    from ldmkit.denoiser import Denoiser
    from ldmkit.networks import UNet
    from ldmkit.networks.unet import UNetConfig

    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, model_channels=8, channel_mult=[1, 2], num_res_blocks=1,
                          attention_levels=[], num_heads=2, norm_groups=4, concat_channels=1))
    with torch.no_grad():  # the output layer starts at zero: perturb every weight
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    model = Denoiser(net, torch.linspace(0.99, 0.01, 10)).eval()
    space = PixelSpace()
    kind = SuperResolution(SuperResConfig(), 1, 1)
    x_t, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 3])
    low = degrade(rand_images(2, 1, 8, 8), SuperResConfig())
    a = model(x_t, t, kind.from_request(2, space=space, images=low)).eps
    b = model(x_t, t, kind.from_request(2, space=space, images=-low)).eps
    assert a.shape == (2, 1, 8, 8) and (a - b).abs().max() > 1e-4
    with pytest.raises(ValueError, match="concat"):
        model(x_t, t, None)


def test_build_kind_channels_from_config_and_hints():
    from types import SimpleNamespace as NS

    def cfg(first_stage, in_channels, concat_channels, **cond):
        return NS(first_stage=first_stage, unet=NS(in_channels=in_channels, concat_channels=concat_channels),
                  cond=NS(concat="x", **cond))

    assert build_kind(cfg(None, 3, 3), "super_resolution").channels == 3  # pixel space: image = x_t channels
    assert build_kind(cfg(None, 1, 2), "inpainting").channels == 2
    assert build_kind(cfg("ae", 4, 5), "inpainting").channels == 5  # latent channels + 1
    assert build_kind(cfg("ae", 4, 9), "super_resolution", {"image_channels": 1}).channels == 1
    encode = build_kind(cfg("ae", 4, 4, sr=SuperResConfig(embed="encode", factor=2)), "super_resolution")
    assert encode.channels == 4 and encode.cfg.factor == 2
    masks = build_kind(cfg("ae", 4, 5, inpaint=InpaintConfig(box_prob=1.0)), "inpainting")
    assert masks.cfg.box_prob == 1.0 and masks.image_channels is None
    with pytest.raises(ConfigError, match="valid: 'none', 'super_resolution', 'inpainting'"):
        build_kind(cfg(None, 1, 1), "colorize")


@pytest.mark.parametrize(("preset", "kind", "channels"), [("ldm_sr_fmnist", "super_resolution", 1),
                                                          ("ldm_inpaint_fmnist", "inpainting", 5)])
def test_presets_load_and_their_concat_channels_fit(preset, kind, channels):
    from pathlib import Path

    from ldmkit.config import load_config
    from ldmkit.pipelines import build_conditioner

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / f"{preset}.yaml")
    part = build_conditioner(cfg).parts["concat"]
    assert cfg.cond.concat == kind and part.channels == channels == cfg.unet.concat_channels
    assert cfg.unet.in_channels == 4 and cfg.data.pad_to == 32 and cfg.train.sample_every > 0
    if kind == "super_resolution":
        assert (cfg.cond.sr.factor, cfg.cond.sr.downsample) == (4, "bicubic")
        assert part.output_size((7, 7)) == (28, 28)
