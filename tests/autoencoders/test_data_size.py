"""Latent and pixel models sample at the data's own size: what data.pad_to added is cropped on decode."""

from pathlib import Path

import pytest
import torch

from ldmkit import pipelines
from ldmkit.autoencoders import build_autoencoder
from ldmkit.autoencoders.checkpoint import checkpoint_meta, write_scale_factor
from ldmkit.autoencoders.config import load_config as load_ae_config
from ldmkit.config import load_config
from ldmkit.data import Padding
from ldmkit.latent import LatentSpace, PixelSpace
from ldmkit.training.checkpoint import save_checkpoint

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
TINY_UNET = ["--unet.model_channels=8", "--unet.channel_mult=[1,2]", "--unet.num_res_blocks=1",
             "--unet.attention_levels=[]", "--unet.num_heads=1", "--unet.norm_groups=4", "--diffusion.num_timesteps=50"]
AE = {"model": {"type": "kl", "channels": 8, "channel_mult": [1, 2], "z_channels": 3, "mid_attention": False},
      "loss": {"perceptual": "none"}, "data": {"pad_to": 32}}


def _generate(cfg):
    torch.manual_seed(0)
    space = pipelines.build_space(cfg)
    process = pipelines.build_process(cfg)
    model = pipelines.build_denoiser(cfg, process).eval()
    shape = pipelines.sample_shape(cfg, space)
    return space, shape, pipelines.generate(model, process, space, shape, n=2, sampler="ddim", steps=3)


def _first_stage(tmp_path, kind):
    torch.manual_seed(0)
    cfg = load_ae_config(None, data={**AE, "model": {**AE["model"], "type": kind}})
    ae = build_autoencoder(cfg.model)
    ckpt = save_checkpoint(tmp_path / kind, 1, config=cfg.to_dict(), tensors={"model": ae.state_dict()},
                           meta=checkpoint_meta())
    write_scale_factor(ckpt, 0.8, {"posterior": "mode"})
    return ckpt


def test_pixel_model_with_pad_to_samples_28x28():
    cfg = load_config(CONFIGS / "ddpm_fmnist.yaml", ["--data.pad_to=32", *TINY_UNET])
    _, shape, images = _generate(cfg)
    assert shape == (1, 32, 32)  # the model works at the padded size ...
    assert images.shape == (2, 1, 28, 28)  # ... and returns the data's own size
    _, shape, images = _generate(load_config(CONFIGS / "ddpm_fmnist.yaml", TINY_UNET))
    assert shape == (1, 28, 28) and images.shape == (2, 1, 28, 28)


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_latent_model_with_pad_to_samples_28x28(tmp_path, kind):
    ckpt = _first_stage(tmp_path, kind)
    cfg = load_config(CONFIGS / "ldm_kl_f4_fmnist.yaml",
                      [f"--first_stage={ckpt}", "--unet.in_channels=3", *TINY_UNET])
    space, shape, images = _generate(cfg)
    assert isinstance(space, LatentSpace) and space.padding == Padding(2, 2, 2, 2)
    assert shape == (3, 16, 16) and images.shape == (2, 1, 28, 28)
    assert space.describe()["padding"] == [2, 2, 2, 2]


def test_decode_crops_the_centre_that_the_dataset_padded():
    torch.manual_seed(0)
    ae = build_autoencoder(load_ae_config(None, data=AE).model).eval()
    pad = Padding(2, 2, 2, 2)
    space = LatentSpace(ae, 0.5, "mode", padding=pad)
    z = torch.randn(2, 3, 16, 16)
    full = ae.decode(z / 0.5)
    torch.testing.assert_close(space.decode(z), full[..., 2:30, 2:30])
    torch.testing.assert_close(LatentSpace(ae, 0.5, "mode").decode(z), full)  # no padding: nothing cropped
    x = torch.rand(2, 1, 32, 32)
    assert torch.equal(PixelSpace(pad).decode(x), x[..., 2:30, 2:30]) and PixelSpace(Padding()).decode(x) is x


def test_pad_then_decode_of_encode_keeps_the_data_size():
    torch.manual_seed(0)
    ae = build_autoencoder(load_ae_config(None, data=AE).model).eval()
    pad = Padding(2, 2, 2, 2)
    x = torch.rand(2, 1, 28, 28) * 2 - 1
    for space in (LatentSpace(ae, 0.5, "mode", padding=pad), PixelSpace(pad)):
        canvas = space.pad(x)
        assert canvas.shape == (2, 1, 32, 32) and (canvas[..., :2, :] == -1).all()
        assert space.decode(space.encode(canvas)).shape == x.shape
    assert torch.equal(PixelSpace(pad).decode(PixelSpace(pad).encode(PixelSpace(pad).pad(x))), x)
    assert PixelSpace().pad(x) is x
