"""``ldmkit eval-images`` on an .npz and on a folder of PNGs."""

import json

import numpy as np
import pytest
from PIL import Image

from ldmkit.cli import main
from ldmkit.data import load_fashion_mnist_arrays


@pytest.fixture(scope="module")
def test_images():
    return load_fashion_mnist_arrays("test")[0]


def test_eval_images_npz_json(tmp_path, capsys, test_images):
    path = tmp_path / "samples.npz"
    np.savez(path, images=test_images[:600], seeds=np.arange(600))
    code = main(["eval-images", str(path), "--metrics", "fid,kid,is,pr", "--json", "--n-reference", "1000",
                 "--kid-subsets", "5", "--kid-subset-size", "200", "--is-splits", "3", "--cache-dir", str(tmp_path)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"fid", "kid", "kid_std", "is", "is_std", "precision", "recall", "protocol"}
    p = out["protocol"]
    assert (p["n_generated"], p["n_reference"], p["reference_seed"]) == (600, 1000, 0)
    assert p["extractor"] == "fmnist-eval-v2" and len(p["extractor_sha256"]) == 64  # the default
    assert p["generation"]["seeds"] == "0..599" and p["kid_subset_size"] == 200 and p["warnings"]
    # Test images against (a subset of) the test split: close to real data.
    assert out["precision"] > 0.6 and out["recall"] > 0.6 and out["fid"] < 5
    # Statistics of any image set can serve as a reference; scoring a set against itself gives FID ~ 0.
    ref = tmp_path / "ref.npz"
    assert main(["eval-images", str(path), "--save-reference", str(ref), "--json"]) == 0
    capsys.readouterr()
    assert main(["eval-images", str(path), "--reference", str(ref), "--metrics", "fid", "--json"]) == 0
    self_score = json.loads(capsys.readouterr().out)
    assert self_score["fid"] == pytest.approx(0.0, abs=1e-6)
    assert self_score["protocol"]["reference"] == str(path) and self_score["protocol"]["n_reference"] == 600


def test_eval_images_png_folder_and_errors(tmp_path, capsys, test_images):
    for i in range(30):
        Image.fromarray(test_images[i]).save(tmp_path / f"{i:03d}.png")
    assert main(["eval-images", str(tmp_path), "--metrics", "is", "--is-splits", "3", "--json",
                 "--n-reference", "500", "--cache-dir", str(tmp_path / "cache")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["protocol"]["n_generated"] == 30 and 1.0 < out["is"] <= 10.0
    assert main(["eval-images", str(tmp_path / "nope.npz")]) == 2
    assert "nope.npz" in capsys.readouterr().err
    assert main(["eval-images", str(tmp_path), "--metrics", "fid,bogus"]) == 2
    assert "bogus" in capsys.readouterr().err


def test_eval_and_bench_a_checkpoint(tmp_path, capsys):
    # A 2-step, 45k-parameter DDPM on Fashion-MNIST: enough to exercise sampling -> scoring and the bench.
    run = tmp_path / "run"
    assert main(["train", "configs/ddpm_fmnist.yaml", "--out", str(run), "--train.max_steps=2",
                 "--train.checkpoint_every=2", "--train.sample_every=0", "--train.batch_size=4",
                 "--train.warmup_steps=1", "--unet.model_channels=8", "--unet.norm_groups=4",
                 "--unet.channel_mult=[1,2]", "--unet.attention_levels=[]", "--diffusion.num_timesteps=50"]) == 0
    capsys.readouterr()
    assert main(["eval", str(run), "--metrics", "fid,is", "-n", "24", "--steps", "3", "--is-splits", "2",
                 "--n-reference", "300", "--cache-dir", str(tmp_path / "cache"), "--json",
                 "--save-samples", str(tmp_path / "s.npz")]) == 0
    out = json.loads(capsys.readouterr().out)
    gen = out["protocol"]["generation"]
    assert (gen["sampler"], gen["steps"], gen["seeds"], gen["step"]) == ("ddim", 3, "0..23 (image i: seed + i)", 2)
    assert out["fid"] > 0 and out["protocol"]["n_generated"] == 24
    with np.load(tmp_path / "s.npz") as z:  # the one samples layout of every command (as `ldmkit sample --npz`)
        assert z["images"].shape == (24, 28, 28, 1) and z["images"].dtype == np.uint8
        assert z["seeds"].tolist() == list(range(24)) and "labels" not in z.files
    # Scoring the saved samples with eval-images gives the same FID (same images, same protocol).
    assert main(["eval-images", str(tmp_path / "s.npz"), "--metrics", "fid", "--n-reference", "300",
                 "--cache-dir", str(tmp_path / "cache"), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["fid"] == pytest.approx(out["fid"], rel=1e-3)
    assert main(["bench", str(run), "--train-steps", "1", "--sample-n", "4", "--steps", "2", "--json"]) == 0
    bench = json.loads(capsys.readouterr().out)
    assert bench["train_img_per_s"] > 0 and bench["sample_img_per_s"] > 0
    assert main(["eval", str(tmp_path / "missing")]) == 2
    assert "missing: no such file or directory" in capsys.readouterr().err
    # --steps means the same as in `sample`: the grid length, default the checkpoint's sample.steps
    assert main(["eval", str(run), "--metrics", "is", "-n", "4", "--is-splits", "2", "--json"]) == 0
    gen = json.loads(capsys.readouterr().out)["protocol"]["generation"]
    assert (gen["sampler"], gen["steps"]) == ("ddim", 25)  # configs/ddpm_fmnist.yaml's sample section
