"""Super-resolution end to end: train a tiny x4 SR model on Fashion-MNIST for a few steps, ``ldmkit upscale``
its 7x7 inputs to 28x28 (PNG metadata reproduces the image), and every bad input exits 2 writing nothing."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from ldmkit.cli import main
from ldmkit.images import read_png_metadata

# pixel space, 28x28 padded to 32x32, a 4-level U-Net (factor 8): 7x7 -> 28x28 fits (32x32 canvas), 8x8 does not
TINY_SR = """
data: {name: fashion-mnist, pad_to: 32}
cond: {concat: super_resolution}
unet: {in_channels: 1, concat_channels: 1, model_channels: 8, channel_mult: [1, 2, 2, 2], num_res_blocks: 1,
       attention_levels: [], num_heads: 2, norm_groups: 4}
diffusion: {schedule: linear, num_timesteps: 40}
train: {lr: 1.0e-3, warmup_steps: 1, batch_size: 8, max_steps: 3, log_every: 1, checkpoint_every: 3,
        sample_every: 0, keep_last: 1, ema_decay: 0.9}
sample: {sampler: ddim, steps: 3, num_images: 4}
"""


def png(path, array) -> str:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sr")
    (root / "tiny_sr.yaml").write_text(TINY_SR)
    assert main(["train", str(root / "tiny_sr.yaml"), "--out", str(root / "run"), "--no-progress"]) == 0
    return root


def test_training_wrote_an_sr_checkpoint(run):
    rows = [json.loads(x) for x in (run / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and all(math.isfinite(r["loss"]) for r in rows)
    cfg = json.loads((run / "run" / "checkpoints" / "step_0000003" / "config.json").read_text())["config"]
    assert cfg["cond"]["concat"] == "super_resolution" and cfg["unet"]["concat_channels"] == 1


def test_upscale_command(run, capsys):
    rng = np.random.default_rng(0)
    low = [png(run / f"low{i}.png", rng.integers(0, 256, (7, 7))) for i in range(2)]
    out = run / "big.png"
    assert main(["upscale", str(run / "run"), low[0], "-o", str(out), "--steps", "3", "--seed", "2"]) == 0
    assert "7x7 -> 28x28" in capsys.readouterr().out
    got = np.asarray(Image.open(out))
    assert got.shape == (28, 28)
    meta = read_png_metadata(out)
    assert meta["method"] == "super_resolution" and json.loads(meta["steps"]) == 3
    again = run / "again.png"
    assert main(meta["reproduce"].split()[1:] + ["-o", str(again)]) == 0
    assert (np.asarray(Image.open(again)) == got).all()
    assert main(["upscale", str(run / "run"), *low, "-o", str(run / "many"), "--steps", "2"]) == 0
    assert sorted(p.name for p in (run / "many").iterdir()) == ["low0.png", "low1.png"]


def test_upscale_bad_input_exits_2_and_writes_nothing(run, capsys):
    good = png(run / "ok.png", np.zeros((7, 7)))
    wrong = png(run / "eight.png", np.zeros((8, 8)))
    out = run / "bad" / "x.png"
    cases = [
        ([str(run / "run"), wrong, "-o", str(out)], "low-res image " + wrong + ": low-res size 8x8 x4 = output size 32x32"),
        ([str(run / "run"), good, wrong, "-o", str(run / "bad")], "8x8"),
        ([str(run / "run"), str(run / "missing.png"), "-o", str(out)], "no such file"),
        ([str(run / "run"), good, good, "-o", str(out)], "a .png file takes one IMAGE"),
        ([str(run / "run"), good, "-o", str(out), "--steps", "41"], "--steps=41: must be in [1, 40]"),
        (["src/ldmkit/assets/demo_ddpm_fmnist", good, "-o", str(out)],
         "upscale needs a model trained with cond.concat='super_resolution'"),
    ]
    for argv, message in cases:
        assert main(["upscale", *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv
    assert not (run / "bad").exists()


def test_training_previews_of_an_sr_model(tmp_path):
    """Guards ``pipelines.make_grid_fn``: a concat model's previews take their condition from training images."""
    (tmp_path / "c.yaml").write_text(TINY_SR.replace("sample_every: 0", "sample_every: 2"))
    assert main(["train", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "run"), "--no-progress",
                 "--train.max_steps=2"]) == 0
    grid = Image.open(tmp_path / "run" / "samples" / "step_0000002.png")
    assert grid.size[0] >= 2 * 28  # num_images 4 -> a 2x2 grid of 28x28 upscaled images
