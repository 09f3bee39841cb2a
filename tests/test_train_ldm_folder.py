"""``ldmkit train-ldm`` on an image folder: shapes written out as PNG files (``ldmkit data export``) train with
the shipped recipe unchanged but for data overrides (and the tiny sizes of tests/test_train_ldm.py); each
missing data override is refused up front (exit 2, naming the key to set)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from ldmkit.cli import main

RECIPE = str(Path(__file__).resolve().parents[1] / "configs" / "ldm_fast_fmnist.yaml")
# what a folder of RGB images needs in a Fashion-MNIST recipe (besides data.root)
FOLDER = ["--data.name=folder", "--data.pad_to=null", "--data.image_size=32", "--autoencoder.model.in_channels=3",
          "--autoencoder.loss.perceptual=none", "--evaluation.reference=data:train"]
TINY = [  # the sizes of tests/test_train_ldm.py
    "--autoencoder.model.channels=8", "--autoencoder.model.channel_mult=[1, 2]", "--autoencoder.model.num_res_blocks=1",
    "--autoencoder.model.z_channels=2", "--autoencoder.model.mid_attention=false",
    "--autoencoder.loss.disc_channels=8", "--autoencoder.loss.disc_start=1000",
    "--autoencoder.train.max_steps=4", "--autoencoder.train.batch_size=8", "--autoencoder.train.log_every=2",
    "--autoencoder.train.checkpoint_every=2",
    "--ldm.unet.model_channels=8", "--ldm.unet.channel_mult=[1, 2]", "--ldm.unet.num_res_blocks=1",
    "--ldm.unet.attention_levels=[]", "--ldm.unet.num_heads=2", "--ldm.unet.norm_groups=4",
    "--ldm.diffusion.num_timesteps=40", "--ldm.train.warmup_steps=1", "--ldm.train.batch_size=8",
    "--ldm.train.max_steps=4", "--ldm.train.log_every=1", "--ldm.train.checkpoint_every=2",
    "--ldm.sample.steps=2", "--ldm.sample.num_images=4",
    "--scale.num_images=32", "--scale.batch_size=16",
    "--evaluation.num_samples=16", "--evaluation.steps=2", "--evaluation.batch_size=8",
    "--evaluation.metrics=[fid, pr]", "--evaluation.n_reference=64",
]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("shapes_png")
    assert main(["data", "export", "shapes", "--out", str(root / "shapes"), "-n", "64"]) == 0
    return root / "shapes"


@pytest.mark.filterwarnings("ignore::ldmkit.metrics.protocol.SmallSampleWarning")  # 16 samples: a plumbing test
def test_train_ldm_on_an_image_folder(folder, tmp_path):
    out = tmp_path / "run"
    cmd = ["train-ldm", RECIPE, "--minutes", "5", "--out", str(out), "--no-progress", f"--data.root={folder}",
           *FOLDER, *TINY]
    assert main(cmd) == 0
    assert sorted(p.name for p in (out / "autoencoder" / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    assert sorted(p.name for p in (out / "diffusion" / "checkpoints").iterdir()) == ["step_0000002", "step_0000004"]
    ldm = json.loads((out / "diffusion" / "checkpoints" / "step_0000004" / "config.json").read_text())["config"]
    assert ldm["data"]["name"] == "folder" and ldm["data"]["root"] == str(folder) and ldm["unet"]["in_channels"] == 2
    with Image.open(out / "samples.png") as im:
        assert im.mode == "RGB" and im.size == (2 * 34 + 2, 2 * 34 + 2)  # 2x2 grid of 32x32 RGB, 2-pixel padding
    ev = json.loads((out / "eval.json").read_text())
    assert ev["fid"] > 0 and 0 <= ev["precision"] <= 1
    p = ev["protocol"]
    assert p["extractor"] == "fmnist-eval-v2" and p["n_generated"] == 16 and p["n_reference"] == 64
    assert (out / "reference_train_fmnist-eval-v2.npz").is_file()  # statistics of the folder itself
    assert json.loads((out / "train_ldm.json").read_text())["done"] == \
        ["autoencoder", "scale", "diffusion", "grid", "evaluation"]


@pytest.mark.parametrize("left_out,needle", [
    ("--data.pad_to=null", "data.pad_to=32 is for Fashion-MNIST only"),
    ("--data.image_size=32", "data.image_size must be set for data.name='folder'"),
    ("--autoencoder.model.in_channels=3", "model.in_channels=1 but the images of data.name='folder' have 3 channels"),
    ("--autoencoder.loss.perceptual=none", "loss.perceptual='fmnist' (a Fashion-MNIST classifier) needs 1-channel"),
])
def test_a_missing_folder_override_exits_2_before_training(folder, tmp_path, capsys, left_out, needle):
    out = tmp_path / "run"
    rc = main(["train-ldm", RECIPE, "--minutes", "5", "--out", str(out), f"--data.root={folder}",
               *[o for o in FOLDER if o != left_out], *TINY])
    err = capsys.readouterr().err
    assert rc == 2 and needle in err, err
    assert not (out / "autoencoder").exists()


def test_a_fashion_mnist_reference_for_other_data_is_warned_about(folder, caplog):
    """Guards the warning in ldmkit.commands.train_ldm.load_recipe (scoring shapes against Fashion-MNIST)."""
    from ldmkit.commands.train_ldm import load_recipe

    base = [f"--data.root={folder}", *FOLDER[:-1]]  # the recipe's own reference: fashion-mnist:test
    with caplog.at_level("WARNING", logger="ldmkit.commands.train_ldm"):
        load_recipe(RECIPE, base)
    assert "evaluation.reference=fashion-mnist:test" in caplog.text and "data:train" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="ldmkit.commands.train_ldm"):
        load_recipe(RECIPE, [*base, "--evaluation.reference=data:train"])
    assert "evaluation.reference" not in caplog.text
