"""The contract every registered sampler keeps (DESIGN.md principle 4)."""

from __future__ import annotations

import inspect

import pytest
import torch
from sampler_oracles import gaussian_oracle

from ldmkit.denoiser import ClassifierFreeGuidance, Denoiser
from ldmkit.networks import UNet, unet_config
from ldmkit.registry import ConfigError, lookup
from ldmkit.samplers import (
    GRIDS,
    MODEL_OPTIONS,
    SAMPLERS,
    SamplerSpec,
    make_generators,
    make_timestep_grid,
    randn,
)
from ldmkit.types import Cond

# Options that exercise each sampler's randomness / post-processing where it has any.
OPTIONS = {"ddpm": {}, "ddim": {"eta": 0.5}, "dpmpp_2m": {}}
SHAPE = (1, 4, 4)  # per-sample [C, H, W]


def test_registry_names_and_errors():
    assert set(SAMPLERS) == {"ddpm", "ddim", "dpmpp_2m"}
    assert all(isinstance(spec, SamplerSpec) for spec in SAMPLERS.values())
    assert {n: s.grid for n, s in SAMPLERS.items()} == {"ddpm": "uniform", "ddim": "uniform", "dpmpp_2m": "logsnr"}
    with pytest.raises(ConfigError, match="unknown sampler 'euler'; valid: ddim, ddpm, dpmpp_2m"):
        lookup(SAMPLERS, "euler", "sampler")
    with pytest.raises(ValueError, match="grid='cosine'"):
        SamplerSpec(SAMPLERS["ddim"].fn, "cosine", ())
    with pytest.raises(ValueError, match="'guidance'"):
        SamplerSpec(SAMPLERS["ddim"].fn, "uniform", ("guidance",))


def test_config_sampler_is_validated_by_the_registry():
    from ldmkit.config import SampleConfig, from_dict

    assert from_dict(SampleConfig, {"sampler": "dpmpp_2m"}).sampler == "dpmpp_2m"
    with pytest.raises(ConfigError, match="unknown sample.sampler 'dpm'; valid: ddim, ddpm, dpmpp_2m"):
        from_dict(SampleConfig, {"sampler": "dpm"})


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_registered_options_are_accepted_and_complete(name):
    """Each spec names exactly the model-derived options its function takes as keywords."""
    spec = SAMPLERS[name]
    params = inspect.signature(spec.fn).parameters
    assert set(spec.options) == {o for o in MODEL_OPTIONS if o in params}
    assert spec.grid in GRIDS


def oracle_4d(process):
    oracle = gaussian_oracle(process.alphas_cumprod, 16, seed=0, diagonal=True)

    def den(x_t, t, cond=None):  # [N, 1, 4, 4] <-> [N, 16]
        p = oracle(x_t.reshape(x_t.shape[0], -1), t)
        return type(p)(p.x0.reshape(x_t.shape), p.eps.reshape(x_t.shape))

    return den


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_dtype_device_and_callback(process, name, dtype):
    grid = make_timestep_grid("uniform", process.num_timesteps, 7)
    x_T = torch.randn(3, *SHAPE, dtype=dtype)
    calls = []
    out = SAMPLERS[name].fn(oracle_4d(process), x_T, grid, process, generator=torch.Generator().manual_seed(0),
                            callback=calls.append, **OPTIONS[name])
    assert out.shape == x_T.shape and out.dtype == dtype and out.device == x_T.device
    assert torch.isfinite(out).all()
    assert all(set(c) == {"x", "i", "t", "prediction"} for c in calls)
    assert [c["i"] for c in calls] == list(range(7))
    assert [c["t"] for c in calls] == grid.tolist()
    assert all(c["x"].shape == x_T.shape and c["x"].dtype == dtype for c in calls)
    assert all(c["prediction"].x0.shape == x_T.shape for c in calls)
    assert torch.equal(calls[-1]["x"], out)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_seed_same_sample_at_batch_1_and_8_oracle(process, name):
    """Per-sample generators: sample 5 of a batch of 8 equals the batch-1 sample with seed 5, bitwise."""
    grid = make_timestep_grid("uniform", process.num_timesteps, 10)
    seeds = list(range(100, 108))

    def draw(batch_seeds):
        gens = make_generators(batch_seeds)
        x_T = randn((len(batch_seeds), *SHAPE), gens, dtype=torch.float64)
        return SAMPLERS[name].fn(oracle_4d(process), x_T, grid, process, generator=gens, **OPTIONS[name])

    batch = draw(seeds)
    single = draw([seeds[5]])
    assert torch.equal(batch[5], single[0])
    assert not torch.equal(batch[4], batch[5])


def _tiny_denoiser(process, **overrides):
    torch.manual_seed(0)
    net = UNet(unet_config("tiny", in_channels=1, **overrides))
    with torch.no_grad():  # move zero-initialised layers off zero so the output depends on the input
        for p in net.parameters():
            if p.abs().max() == 0:
                p.normal_(0, 0.05)
    # v-prediction keeps x0 bounded (eps-prediction of an untrained net gives |x0| ~ 100 at t = T-1).
    return Denoiser(net, process.alphas_cumprod, "v").eval()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_same_seed_same_sample_at_batch_1_and_8_unet(process, name):
    """With a real U-Net the kernels may block differently by batch size: equal within 1e-4."""
    den = _tiny_denoiser(process, num_classes=3)
    grid = make_timestep_grid("uniform", process.num_timesteps, 4)
    seeds = list(range(8))
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])

    def draw(idx):
        gens = make_generators([seeds[i] for i in idx])
        x_T = randn((len(idx), 1, 8, 8), gens)
        with torch.no_grad():
            return SAMPLERS[name].fn(den, x_T, grid, process, cond=Cond(class_labels=labels[idx]), generator=gens,
                                     **OPTIONS[name])

    batch = draw(list(range(8)))
    single = draw([6])
    assert batch.dtype == torch.float32
    assert batch.abs().max() < 10
    torch.testing.assert_close(batch[6], single[0], rtol=0, atol=1e-4)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_guided_unet_sampling_per_sample_seeds(process, name):
    """Classifier-free guidance (2N batch inside) keeps the per-sample seed contract."""
    den = ClassifierFreeGuidance(_tiny_denoiser(process, num_classes=3), guidance_scale=3.0)
    grid = make_timestep_grid("uniform", process.num_timesteps, 3)
    labels = torch.tensor([0, 1, 2, 0])

    def draw(idx):
        gens = make_generators([10 + i for i in idx])
        with torch.no_grad():
            return SAMPLERS[name].fn(den, randn((len(idx), 1, 8, 8), gens), grid, process,
                                     cond=Cond(class_labels=labels[idx]), generator=gens, **OPTIONS[name])

    torch.testing.assert_close(draw([0, 1, 2, 3])[2], draw([2])[0], rtol=0, atol=1e-4)


def test_sampling_at_larger_size_than_trained(process):
    """A U-Net (built for 8x8 here) samples at 16x24: any size divisible by 2^(levels-1)."""
    den = _tiny_denoiser(process)
    x_T = torch.randn(2, 1, 16, 24)
    with torch.no_grad():
        out = SAMPLERS["ddim"].fn(den, x_T, make_timestep_grid("uniform", 1000, 3), process)
    assert out.shape == (2, 1, 16, 24) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_bad_grids_are_rejected(process, name):
    x_T = torch.randn(2, 3)
    den = lambda x, t, c=None: None
    with pytest.raises(ValueError, match="strictly decreasing"):
        SAMPLERS[name].fn(den, x_T, torch.tensor([0, 10, 20]), process)
    with pytest.raises(ValueError, match="must lie in \\[0, 999\\]"):
        SAMPLERS[name].fn(den, x_T, torch.tensor([1000, 10]), process)
    with pytest.raises(ValueError, match="integer grid"):
        SAMPLERS[name].fn(den, x_T, torch.tensor([10.0, 1.0]), process)


def test_ddim_eta_range(process):
    with pytest.raises(ValueError, match="eta=1.5 must be in \\[0, 1\\]"):
        SAMPLERS["ddim"].fn(None, torch.randn(2, 3), torch.tensor([5, 0]), process, eta=1.5)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
@pytest.mark.parametrize("option", [{"clip_denoised": True}, {"dynamic_threshold": 0.9}])
def test_x0_clipping_options_bound_the_output(process, name, option):
    """Data with std 3: unclipped samples leave [-1, 1]; with clipping / thresholding the last step
    returns the processed x0, so samples lie in [-1, 1]."""
    den = oracle_4d(process)

    def wide(x_t, t, cond=None):  # x0 predictions scaled up to exceed [-1, 1]
        p = den(x_t, t, cond)
        return type(p)(3 * p.x0, p.eps)

    grid = make_timestep_grid("uniform", 1000, 8)
    x_T = torch.randn(16, *SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    plain = SAMPLERS[name].fn(wide, x_T, grid, process, generator=torch.Generator().manual_seed(1))
    out = SAMPLERS[name].fn(wide, x_T, grid, process, generator=torch.Generator().manual_seed(1), **option)
    assert plain.abs().max() > 1.0
    assert out.abs().max() <= 1.0 + 1e-12
