"""Latent caching (``data.cache_latents``, :class:`ldmkit.latent.CachedLatents`): each item encoded once, in
fixed chunks, with the same training loss and random stream as encoding every step."""

import pytest
import torch

from ldmkit.autoencoders import build_autoencoder
from ldmkit.autoencoders.config import load_config as load_ae_config
from ldmkit.config import config_from_data
from ldmkit.data import DataConfig
from ldmkit.latent import CachedLatents, LatentSpace, PixelSpace
from ldmkit.registry import ConfigError
from ldmkit.training.data_order import TensorData

AE = {"model": {"type": "kl", "channels": 8, "channel_mult": [1, 2], "z_channels": 3, "mid_attention": False},
      "loss": {"perceptual": "none"}, "data": {"pad_to": 32}}


def _space(posterior="sample"):
    torch.manual_seed(0)
    return LatentSpace(build_autoencoder(load_ae_config(None, data=AE).model), 0.7, posterior)


def _data(n=10):
    g = torch.Generator().manual_seed(1)
    return TensorData(torch.rand(n, 1, 32, 32, generator=g) * 2 - 1, torch.arange(n))


def test_cached_values_are_each_chunks_encoding_whatever_the_access_order():
    space, data = _space(), _data()
    a, b = CachedLatents(data, space, chunk=4), CachedLatents(data, space, chunk=4)
    a.batch(torch.tensor([9]))
    assert a.encoded.tolist() == [False, False, True]  # only index 9's chunk [8, 10) was encoded
    a.batch(torch.tensor([5, 1]))
    b.batch(torch.arange(10).flip(0))
    assert a.encoded.all() and b.encoded.all()
    assert torch.equal(a.mean, b.mean) and torch.equal(a.std, b.std)  # bit-identical: a resume recomputes exactly
    mean, std = space.encode_params(data.images[4:8])  # chunk 1 is encoded as one batch of 4
    assert torch.equal(a.mean[4:8], mean) and torch.equal(a.std[4:8], std)
    batch = a.batch(torch.tensor([7, 2]))
    m, s = batch.extra["latent_params"]
    assert torch.equal(m, a.mean[[7, 2]]) and torch.equal(s, a.std[[7, 2]])
    assert torch.equal(batch.labels, torch.tensor([7, 2]))  # the wrapped source's batch is kept


def test_mode_posterior_caches_no_std_and_pixel_space_is_refused():
    cached = CachedLatents(_data(), _space("mode"), chunk=4)
    m, s = cached.batch(torch.tensor([0, 3])).extra["latent_params"]
    assert s is None and cached.std is None and m.shape == (2, 3, 16, 16)
    with pytest.raises(TypeError, match="needs a first stage"):
        CachedLatents(_data(), PixelSpace())


def test_cached_loss_equals_the_per_step_encoding_and_draws_the_same_random_numbers():
    from ldmkit import pipelines

    cfg = config_from_data({"unet": {"in_channels": 3, "model_channels": 8, "channel_mult": [1, 2],
                                     "num_res_blocks": 1, "attention_levels": [], "num_heads": 2, "norm_groups": 4},
                            "diffusion": {"schedule": "linear", "num_timesteps": 50}})
    space, data = _space(), _data()
    process = pipelines.build_process(cfg)
    model = pipelines.build_denoiser(cfg, process)
    loss_fn = pipelines.make_loss_fn(cfg, process, space)
    idx = torch.tensor([3, 0, 8, 5])
    torch.manual_seed(5)
    plain, _ = loss_fn(model, data.batch(idx))
    after_plain = torch.randn(3)
    cached_data = CachedLatents(data, space, chunk=16)  # one chunk: the same batch composition as below
    cached_data.batch(torch.arange(10))
    torch.manual_seed(5)
    cached, _ = loss_fn(model, cached_data.batch(idx))
    torch.testing.assert_close(cached, plain)
    assert torch.equal(torch.randn(3), after_plain)


def test_config_refuses_flips_and_pixel_space(tmp_path):
    with pytest.raises(ConfigError, match="cache_latents=true with data.hflip=true"):
        DataConfig(name="shapes", hflip=True, cache_latents=True)
    from ldmkit import pipelines

    cfg = config_from_data({"data": {"name": "shapes", "length": 8, "image_size": 16, "cache_latents": True},
                            "unet": {"in_channels": 3, "model_channels": 8, "channel_mult": [1, 2],
                                     "num_res_blocks": 1, "attention_levels": [], "num_heads": 2, "norm_groups": 4},
                            "diffusion": {"schedule": "linear", "num_timesteps": 50},
                            "train": {"max_steps": 1, "batch_size": 4, "sample_every": 0, "device": "cpu"}})
    with pytest.raises(ConfigError, match="needs a first stage"):
        pipelines.train(cfg, tmp_path / "run", progress=False)
