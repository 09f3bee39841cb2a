import json

import pytest
import torch

from ldmkit.autoencoders import build_autoencoder
from ldmkit.autoencoders.checkpoint import checkpoint_meta, write_scale_factor
from ldmkit.autoencoders.config import load_config
from ldmkit.latent import LatentSpace, PixelSpace, cache_latents, latent_space_for, measure_scale_factor
from ldmkit.training.checkpoint import save_checkpoint

TINY = {"model": {"type": "kl", "channels": 8, "channel_mult": [1, 2], "z_channels": 3, "mid_attention": False},
        "loss": {"perceptual": "none"}, "data": {"pad_to": 32}}


def _kl_ae():
    torch.manual_seed(0)
    return build_autoencoder(load_config(None, data=TINY).model)


def test_pixel_space_is_the_identity():
    space = PixelSpace()
    x = torch.randn(2, 1, 32, 32)
    assert space.encode(x) is x and space.decode(x) is x
    assert space.latent_shape((1, 32, 32)) == (1, 32, 32) and space.factor == 1
    m, s = cache_latents(space, x)
    assert torch.equal(m, x) and s is None


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_latent_space_scales_encode_and_unscales_decode(kind):
    torch.manual_seed(0)
    ae = build_autoencoder(load_config(None, data={**TINY, "model": {**TINY["model"], "type": kind}}).model)
    space = LatentSpace(ae, 0.5, posterior="mode")
    x = torch.randn(2, 1, 32, 32)
    z = space.encode(x)
    assert z.shape == (2, 3, 16, 16) == (2, *space.latent_shape((1, 32, 32)))
    raw = ae.encode(x).mode()  # one contract: KL mean, VQ quantised latent
    torch.testing.assert_close(z, 0.5 * raw)
    torch.testing.assert_close(space.decode(z), ae.decode(raw))
    with pytest.raises(ValueError, match="divisible"):
        space.latent_shape((1, 31, 31))


def test_posterior_sample_vs_mode_and_cached_latents():
    ae = _kl_ae()
    x = torch.randn(4, 1, 32, 32)
    sample_space, mode_space = LatentSpace(ae, 2.0, "sample"), LatentSpace(ae, 2.0, "mode")
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    z_s = sample_space.encode(x, generator=g1)
    assert not torch.allclose(z_s, mode_space.encode(x))
    mean, std = cache_latents(sample_space, x, batch_size=3)
    torch.testing.assert_close(sample_space.sample_from_params(mean, std, generator=g2), z_s)
    torch.testing.assert_close(mean, mode_space.encode(x))


def test_scale_factor_gives_unit_variance_latents():
    ae = _kl_ae()
    x = torch.rand(64, 1, 32, 32) * 2 - 1
    scale, stats = measure_scale_factor(ae, x, "mode", batch_size=20)
    z = LatentSpace(ae, scale, "mode").encode(x)
    assert z.std(unbiased=False).item() == pytest.approx(1.0, rel=1e-4)
    assert stats["num_images"] == 64 and len(stats["channel_std"]) == 3


def test_checkpoint_without_scale_factor_is_refused(tmp_path):
    ae = _kl_ae()
    cfg = load_config(None, data=TINY)
    ckpt = save_checkpoint(tmp_path, 5, config=cfg.to_dict(), tensors={"model": ae.state_dict()},
                           meta=checkpoint_meta())
    with pytest.raises(ValueError, match="ae-stats"):
        latent_space_for(str(tmp_path))
    write_scale_factor(ckpt, 0.7, {"posterior": "mode"})
    space = latent_space_for(str(tmp_path))
    assert isinstance(space, LatentSpace) and space.scale_factor == 0.7 and space.posterior == "mode"
    assert json.loads((ckpt / "config.json").read_text())["scale_factor"] == 0.7
    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(space.decode(space.encode(x)), ae.eval().decode(ae.encode(x).mode()))
    assert isinstance(latent_space_for(None), PixelSpace)
    with pytest.raises(ValueError, match="positive"):
        LatentSpace(ae, 0.0)
