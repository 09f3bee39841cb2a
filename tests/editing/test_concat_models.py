"""Trained-for-the-task concat models through ``ldmkit.editing``: ``upscale`` and ``inpaint_concat`` (and
``ldmkit inpaint``'s concat path) on tiny untrained checkpoints: shapes at several sizes, seeds, the known
region kept bitwise, the condition reaching the model, and every bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit import editing, pipelines
from ldmkit.cli import main
from ldmkit.config import config_from_data
from ldmkit.images import read_png_metadata
from ldmkit.training.checkpoint import save_checkpoint

UNET = {"in_channels": 1, "model_channels": 8, "channel_mult": [1, 2, 2], "num_res_blocks": 1,
        "attention_levels": [], "num_heads": 2, "norm_groups": 4}
AE_MODEL = {"type": "kl", "in_channels": 1, "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
            "z_channels": 2, "mid_attention": False}
DATA = {"name": "fashion-mnist", "pad_to": 32}


def _perturb(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return {k: v.contiguous() for k, v in module.state_dict().items()}


def _checkpoint(root, name: str, *, concat: str, concat_channels: int, first_stage=None, seed=0, unet=None):
    data = {"data": DATA, "unet": {**UNET, "concat_channels": concat_channels, **(unet or {})},
            "cond": {"concat": concat},
            "diffusion": {"num_timesteps": 40}, "sample": {"sampler": "ddim", "steps": 4}}
    if first_stage is not None:
        data["first_stage"] = str(first_stage)
        data["unet"]["in_channels"] = AE_MODEL["z_channels"]
        data["unet"]["channel_mult"] = [1, 2]  # 16x16 latents of the 32x32 canvas; factor 2 x 2 = 4
    cfg = config_from_data(data)
    if first_stage is not None:
        cfg = dataclasses.replace(cfg, first_stage_scale_factor=pipelines.build_space(cfg).scale_factor)
    torch.manual_seed(seed)
    model = pipelines.build_denoiser(cfg, pipelines.build_process(cfg))
    return save_checkpoint(root / name, 0, config=pipelines.config_dict(cfg), tensors={"model": _perturb(model, seed)})


def _autoencoder(root):
    from ldmkit.autoencoders import build_autoencoder, load_config
    from ldmkit.autoencoders.checkpoint import checkpoint_meta

    cfg = load_config(None, data={"model": AE_MODEL, "data": DATA, "loss": {"perceptual": "none"}})
    torch.manual_seed(0)
    ae = build_autoencoder(cfg.model)
    meta = {**checkpoint_meta(), "scale_factor": 1.0}
    return save_checkpoint(root / "ae", 0, config=cfg.to_dict(), tensors={"model": _perturb(ae, 5)}, meta=meta)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("concat_models")
    ae = _autoencoder(root)
    # sr: a 4-level U-Net (factor 8): 28x28 and 60x28 outputs fit (32x32, 64x32 canvases), 32x32 does not
    return {"sr": _checkpoint(root, "sr", concat="super_resolution", concat_channels=1,
                              unet={"channel_mult": [1, 1, 2, 2]}),
            "sr_latent": _checkpoint(root, "sr_latent", concat="super_resolution", concat_channels=1,
                                     first_stage=ae, seed=1),
            "inpaint": _checkpoint(root, "inpaint", concat="inpainting", concat_channels=3, first_stage=ae, seed=2),
            "inpaint_pixel": _checkpoint(root, "inpaint_pixel", concat="inpainting", concat_channels=2, seed=3)}


@pytest.fixture(scope="module")
def models(ckpts):
    return {k: pipelines.load_model(v) for k, v in ckpts.items()}


def rand(n, h, w, seed=0):
    return torch.rand(n, 1, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ------------------------------------------------------------------------------------------- upscale
@pytest.mark.parametrize("name", ["sr", "sr_latent"])
@pytest.mark.parametrize(("low", "out"), [((7, 7), (28, 28)), ((15, 7), (60, 28))])
def test_upscale_shapes(models, name, low, out):
    got = editing.upscale(models[name], rand(2, *low), steps=2, seed=0)
    assert got.shape == (2, 1, *out) and bool(torch.isfinite(got).all()) and float(got.abs().max()) <= 1


def test_upscale_seeded_and_conditioned(models):
    model, low = models["sr"], rand(2, 7, 7)
    a = editing.upscale(model, low, steps=3, seed=4)
    assert torch.equal(a, editing.upscale(model, low, steps=3, seed=4))
    assert torch.allclose(a[1:], editing.upscale(model, low[1:], steps=3, seed=5), atol=1e-4)  # seed + i
    assert (a - editing.upscale(model, -low, steps=3, seed=4)).abs().max() > 1e-3  # the low-res image matters


def test_upscale_errors(models):
    with pytest.raises(editing.EditInputError, match=r"\[N, 1, h, w\].*got \(1, 3, 7, 7\)"):
        editing.upscale(models["sr"], torch.zeros(1, 3, 7, 7), steps=2)
    with pytest.raises(editing.EditInputError, match="low-res size 8x8 x4 = output size 32x32: with the data.s padding .* 36x36"):
        editing.upscale(models["sr"], torch.zeros(1, 1, 8, 8), steps=2)
    with pytest.raises(editing.EditInputError, match=r"finite and in \[-1, 1\]"):
        editing.upscale(models["sr"], torch.full((1, 1, 7, 7), 2.0), steps=2)
    with pytest.raises(editing.EditInputError, match="cond.concat='inpainting'.*upscale needs"):
        editing.upscale(models["inpaint"], torch.zeros(1, 1, 7, 7), steps=2)
    with pytest.raises(editing.EditInputError, match=r"steps=0: must be an integer in \[1, 40\]"):
        editing.upscale(models["sr"], torch.zeros(1, 1, 7, 7), steps=0)


# ------------------------------------------------------------------------------------------- inpaint_concat
def half_mask(n=2, h=28, w=28):
    m = torch.zeros(n, 1, h, w, dtype=torch.bool)
    m[..., :, : w // 2] = True
    return m


@pytest.mark.parametrize("name", ["inpaint", "inpaint_pixel"])
@pytest.mark.parametrize("size", [(28, 28), (60, 28)])
def test_inpaint_concat_keeps_the_known_region(models, name, size):
    image, mask = rand(2, *size), half_mask(2, *size)
    out = editing.inpaint_concat(models[name], image, mask, steps=3, seed=0)
    assert out.shape == image.shape
    assert torch.equal(out[~mask.expand_as(out)], image[~mask.expand_as(image)])
    assert (out[mask] - image[mask]).abs().mean() > 0.05


def test_inpaint_concat_condition_reaches_the_model(models):
    model, mask = models["inpaint"], half_mask()
    image = rand(2, 28, 28)
    a = editing.inpaint_concat(model, image, mask, steps=3, seed=1)
    assert torch.equal(a, editing.inpaint_concat(model, image, mask, steps=3, seed=1))
    b = editing.inpaint_concat(model, -image, mask, steps=3, seed=1)
    assert (a[mask] - b[mask]).abs().max() > 1e-3  # the known half changes the fill


def test_inpaint_concat_errors(models):
    model, image = models["inpaint"], rand(1, 28, 28)
    gray = torch.zeros(1, 1, 28, 28)
    gray[..., :4, :4] = 0.5
    with pytest.raises(editing.EditInputError, match=r"not binary: found values \[0.0, 0.5\]"):
        editing.inpaint_concat(model, image, gray, steps=2)
    with pytest.raises(editing.EditInputError, match="empty"):
        editing.inpaint_concat(model, image, torch.zeros(1, 1, 28, 28, dtype=torch.bool), steps=2)
    with pytest.raises(editing.EditInputError, match=r"expected \[1 or N, 1, 28, 28\].*got \(1, 1, 14, 28\)"):
        editing.inpaint_concat(model, image, half_mask(1, 14, 28), steps=2)
    with pytest.raises(editing.EditInputError, match=r"\[N, 1, H, W\].*got \(1, 3, 28, 28\)"):
        editing.inpaint_concat(model, torch.zeros(1, 3, 28, 28), half_mask(1), steps=2)
    with pytest.raises(editing.EditInputError, match="multiples of 4"):
        editing.inpaint_concat(model, rand(1, 30, 28), half_mask(1, 30, 28), steps=2)
    with pytest.raises(editing.EditInputError, match="trained inpainting model.*use inpaint_concat"):
        editing.inpaint(model, image, half_mask(1), steps=2)
    with pytest.raises(editing.EditInputError, match="cond.concat='super_resolution'.*inpaint_concat needs"):
        editing.inpaint_concat(models["sr"], image, half_mask(1), steps=2)


# ------------------------------------------------------------------------------------------- CLI
def _png(path, array) -> str:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


def test_inpaint_command_uses_the_trained_model(ckpts, tmp_path, capsys):
    src = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    image, out = _png(tmp_path / "img.png", src), tmp_path / "out.png"
    assert main(["inpaint", str(ckpts["inpaint"]), image, "--box", "0,0,14,28", "-o", str(out), "--steps", "3"]) == 0
    assert "trained inpainting model" in capsys.readouterr().out
    got = np.asarray(Image.open(out))
    assert (got[:, 14:] == src[:, 14:]).all() and (got[:, :14] != src[:, :14]).mean() > 0.5
    meta = read_png_metadata(out)
    assert meta["method"] == "concat"
    again = tmp_path / "again.png"
    assert main(meta["reproduce"].split()[1:] + ["-o", str(again)]) == 0
    assert (np.asarray(Image.open(again)) == got).all()
    bad = tmp_path / "bad.png"
    assert main(["inpaint", str(ckpts["inpaint"]), image, "--box", "0,0,14,28", "-o", str(bad), "--resample", "2"]) == 2
    assert "--resample: " in capsys.readouterr().err and not bad.exists()
    assert main(["inpaint", str(ckpts["sr"]), image, "--box", "0,0,14,28", "-o", str(bad)]) == 2
    assert "super_resolution" in capsys.readouterr().err and not bad.exists()
