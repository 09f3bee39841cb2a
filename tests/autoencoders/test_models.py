from pathlib import Path

import pytest
import torch

from ldmkit.autoencoders import AutoencoderKL, VQAutoencoder, build_autoencoder
from ldmkit.autoencoders.config import ConfigError, ModelConfig, load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MULTS = {1: [1], 2: [1, 2], 4: [1, 2, 2], 8: [1, 1, 2, 2]}


@pytest.mark.parametrize("kind", ["kl", "vq"])
@pytest.mark.parametrize("f", [1, 2, 4, 8])
def test_encode_decode_shapes_for_each_factor(kind, f):
    cfg = ModelConfig(type=kind, channels=8, channel_mult=MULTS[f], num_res_blocks=1, z_channels=3,
                      mid_attention=(f == 8))
    ae = build_autoencoder(cfg)
    assert ae.factor == f
    x = torch.randn(2, 1, 32, 32)
    post = ae.encode(x)  # one contract: a posterior with sample() / mode()
    z = post.sample()
    assert z.shape == post.mode().shape == (2, ae.latent_channels, 32 // f, 32 // f)
    assert ae.decode(z).shape == x.shape
    recon, _ = ae(x)
    assert recon.shape == x.shape
    assert ae.last_layer is ae.decoder.conv_out.weight


@pytest.mark.parametrize("kind", ["kl", "vq"])
def test_forward_decodes_the_posterior_sample_or_mode(kind):
    torch.manual_seed(0)
    ae = build_autoencoder(ModelConfig(type=kind, channels=8, channel_mult=[1, 2], z_channels=2,
                                       mid_attention=False)).eval()
    x = torch.randn(2, 1, 16, 16)
    recon, post = ae(x, sample_posterior=False)
    torch.testing.assert_close(recon, ae.decode(post.mode()))
    g = torch.Generator().manual_seed(3)
    recon_s, post_s = ae(x, sample_posterior=True, generator=g)
    torch.testing.assert_close(recon_s, ae.decode(post_s.sample(torch.Generator().manual_seed(3))))
    if kind == "vq":  # a point mass: sampling changes nothing; decode snaps to the codebook
        assert post.deterministic and torch.equal(post.sample(), post.mode())
        torch.testing.assert_close(recon_s, recon)
        torch.testing.assert_close(post.mode(), ae.quantizer.lookup(post.indices))
    else:
        assert not post.deterministic and not torch.allclose(recon_s, recon)


def test_types_and_factor_property():
    assert isinstance(build_autoencoder(ModelConfig(type="kl", channels=8)), AutoencoderKL)
    assert isinstance(build_autoencoder(ModelConfig(type="vq", channels=8)), VQAutoencoder)
    assert ModelConfig(channel_mult=[1, 2, 2, 4]).factor == 8


def test_config_errors_name_key_and_value(tmp_path):
    with pytest.raises(ConfigError, match="model.chanels"):
        load_config(None, data={"model": {"chanels": 8}})
    with pytest.raises(ConfigError, match="model.type"):
        load_config(None, data={"model": {"type": "vae"}})
    with pytest.raises(ConfigError, match="channel_mult"):
        load_config(None, data={"model": {"channel_mult": [1, 2, 2, 2, 2]}})
    with pytest.raises(ConfigError, match="not divisible"):
        load_config(None, data={"model": {"channel_mult": [1, 2, 2, 2]}, "data": {"pad_to": None}})
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  max_steps: many\n")
    with pytest.raises(ConfigError, match=r"bad.yaml.*train.max_steps"):
        load_config(bad)
    cfg = load_config(None, data={}, overrides=["--model.channel_mult=[1,2]", "--train.lr=1e-3"])
    assert cfg.model.factor == 2 and cfg.train.lr == 1e-3


@pytest.mark.parametrize("name", ["ae_kl_f4_fmnist", "ae_vq_f4_fmnist"])
def test_presets_load(name):
    cfg = load_config(CONFIGS / f"{name}.yaml")
    assert cfg.model.factor == 4 and cfg.data.pad_to == 32
