"""``ldmkit inpaint``, ``ldmkit img2img`` and ``ldmkit sample --size`` end to end on tiny checkpoints, and
every bad input: exit code 2, a message naming the file or value, nothing written."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from ldmkit.cli import main
from ldmkit.images import read_png_metadata


def write_png(path, array) -> str:
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)
    return str(path)


def random_uint8(h: int, w: int, seed: int = 0, channels: int = 1) -> np.ndarray:
    shape = (h, w) if channels == 1 else (h, w, channels)
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


@pytest.fixture()
def files(tmp_path):
    mask = np.zeros((16, 24), np.uint8)
    mask[4:12, 6:18] = 255
    gray_mask = mask.copy()
    gray_mask[0, 0] = 128
    return {
        "image": write_png(tmp_path / "img.png", random_uint8(16, 24, seed=1)),
        "rgb": write_png(tmp_path / "rgb.png", random_uint8(16, 24, seed=2, channels=3)),
        "mask": write_png(tmp_path / "mask.png", mask),
        "gray_mask": write_png(tmp_path / "gray.png", gray_mask),
        "empty_mask": write_png(tmp_path / "empty.png", np.zeros((16, 24), np.uint8)),
        "small_mask": write_png(tmp_path / "small.png", mask[:8]),
        "odd": write_png(tmp_path / "odd.png", random_uint8(15, 24)),
        "broken": str((tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage") and tmp_path / "broken.png"),
        "out": tmp_path / "out",
    }


def pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("L"))


@pytest.mark.parametrize("resample", ["1", "2"])
def test_inpaint_command(ckpts, files, capsys, resample):
    out = files["out"] / "filled.png"
    argv = ["inpaint", str(ckpts["pixel"]), files["image"], files["mask"], "-o", str(out), "--steps", "5",
            "--resample", resample, "--jump-length", "2", "--seed", "3"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"R={resample}" in printed and "96 of 384 pixels" in printed
    got, src, mask = pixels(out), pixels(files["image"]), pixels(files["mask"]) == 255
    assert got.shape == (16, 24) and (got[~mask] == src[~mask]).all() and (got[mask] != src[mask]).mean() > 0.5
    meta = read_png_metadata(out)
    assert meta["method"] == "repaint" and json.loads(meta["steps"]) == 5 and json.loads(meta["resample"]) == int(resample)
    # the stored command reproduces the image
    again = files["out"] / "again.png"
    cmd = meta["reproduce"].split()[1:] + ["-o", str(again)]
    assert main(cmd) == 0 and (pixels(again) == got).all()


def test_inpaint_box_threshold_rgb_and_latent(ckpts, files, capsys):
    out = files["out"] / "box.png"
    assert main(["inpaint", str(ckpts["pixel"]), files["rgb"], "--box", "6,4,18,12", "-o", str(out), "--steps", "3"]) == 0
    gray_in = np.asarray(Image.open(files["rgb"]).convert("L"))  # the loader's RGB -> gray conversion
    got = pixels(out)
    keep = np.ones((16, 24), bool)
    keep[4:12, 6:18] = False
    assert (got[keep] == gray_in[keep]).all()
    assert main(["inpaint", str(ckpts["pixel"]), files["image"], files["gray_mask"], "--threshold", "100", "-o",
                 str(out), "--steps", "3"]) == 0
    out_l = files["out"] / "latent.png"
    assert main(["inpaint", str(ckpts["latent"]), files["image"], files["mask"], "-o", str(out_l), "--steps", "3"]) == 0
    src, mask = pixels(files["image"]), pixels(files["mask"]) == 255
    assert (pixels(out_l)[~mask] == src[~mask]).all()


def test_img2img_command(ckpts, files, capsys):
    out = files["out"]
    second = write_png(out.parent / "second.png", random_uint8(16, 24, seed=9))
    assert main(["img2img", str(ckpts["pixel"]), files["image"], second, "--strength", "0.5", "--steps", "10",
                 "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "ran 5 of 10 ddim denoising steps" in printed
    assert sorted(p.name for p in out.iterdir()) == ["img.png", "second.png"]
    meta = read_png_metadata(out / "second.png")
    assert meta["method"] == "sdedit" and json.loads(meta["steps_run"]) == 5 and json.loads(meta["seed"]) == 1
    assert main(["img2img", str(ckpts["pixel"]), files["image"], "--strength", "0", "-o", str(out / "s0.png")]) == 0
    assert "ran 0 of" in capsys.readouterr().out and (pixels(out / "s0.png") == pixels(files["image"])).all()
    assert main(["img2img", str(ckpts["cond"]), files["image"], "--strength", "0.7", "--labels", "2", "-o",
                 str(out / "c.png"), "--steps", "4"]) == 0
    assert json.loads(read_png_metadata(out / "c.png")["label"]) == 2
    assert main(["img2img", str(ckpts["latent"]), files["image"], "--strength", "0.7", "-o", str(out / "l.png"),
                 "--steps", "4", "--sampler", "ddpm"]) == 0
    assert pixels(out / "l.png").shape == (16, 24)


def test_sample_size(ckpts, tmp_path):
    for kind, size, shape in (("pixel", "16x24", (2, 16, 24, 1)), ("latent", "8x12", (2, 8, 12, 1)),
                              ("padded", "28x28", (2, 28, 28, 1)), ("padded", "60x28", (2, 60, 28, 1))):
        npz = tmp_path / f"{kind}.npz"
        assert main(["sample", str(ckpts[kind]), "-n", "2", "--steps", "2", "--size", size, "--npz", str(npz)]) == 0
        assert np.load(npz)["images"].shape == shape
    out_dir = tmp_path / "pngs"
    assert main(["sample", str(ckpts["pixel"]), "-n", "1", "--steps", "2", "--size", "4x6", "--out-dir", str(out_dir)]) == 0
    assert "--size 4x6" in read_png_metadata(out_dir / "00000.png")["reproduce"]


BAD = [
    (["inpaint", "{pixel}", "{odd}", "{mask}"], "odd.png: size 15x24: height and width must be positive multiples of 2"),
    (["inpaint", "{latent}", "{image}", "--box", "0,0,4,4", "--size", "8x8"], "unrecognized arguments: --size"),
    (["inpaint", "{pixel}", "{image}", "{small_mask}"], "small.png: size 8x24 (HxW) differs from the image's 16x24"),
    (["inpaint", "{pixel}", "{image}", "{gray_mask}"], "gray.png: not binary: found 3 gray levels (0, 128, 255)"),
    (["inpaint", "{pixel}", "{image}", "{gray_mask}", "--threshold", "0"], "--threshold 0: must be in [1, 255]"),
    (["inpaint", "{pixel}", "{image}", "{empty_mask}"], "empty.png: empty: no pixel to fill"),
    (["inpaint", "{pixel}", "{image}", "--box", "0,0,25,4"], "--box 0,0,25,4: needs 0 <= x0 < x1 <= 24"),
    (["inpaint", "{pixel}", "{image}", "--box", "5,0,5,4"], "--box 5,0,5,4: needs 0 <= x0 < x1"),
    (["inpaint", "{pixel}", "{image}", "--box", "1,2,3"], "--box: expected four integers"),
    (["inpaint", "{pixel}", "{image}", "{mask}", "--box", "0,0,4,4"], "either a MASK image or --box"),
    (["inpaint", "{pixel}", "{image}"], "either a MASK image or --box"),
    (["inpaint", "{pixel}", "{image}", "{mask}", "--steps", "0"], "argument --steps: must be >= 1"),
    (["inpaint", "{pixel}", "{image}", "{mask}", "--steps", "41"], "--steps=41: must be in [1, 40]"),
    (["inpaint", "{pixel}", "{image}", "{mask}", "--steps", "3", "--resample", "2", "--jump-length", "3"],
     "--jump-length=3: must be below --steps=3"),
    (["inpaint", "{pixel}", "{image}", "{mask}", "--labels", "1"], "--labels: this model is not class-conditional"),
    (["inpaint", "{pixel}", "{broken}", "{mask}"], "broken.png"),
    (["inpaint", "{pixel}", "{tmp}/missing.png", "{mask}"], "missing.png: no such file"),
    (["img2img", "{pixel}", "{image}", "--strength", "1.5"], "--strength=1.5: must be in [0, 1]"),
    (["img2img", "{pixel}", "{image}", "--strength", "-0.1"], "--strength=-0.1: must be in [0, 1]"),
    (["img2img", "{pixel}", "{image}", "--strength", "nan"], "--strength=nan"),
    (["img2img", "{pixel}", "{image}", "--strength", "0.5", "--steps", "0"], "argument --steps: must be >= 1"),
    (["img2img", "{pixel}", "{image}", "{odd}", "--strength", "0.5"], "odd.png: size 15x24"),
    (["img2img", "{latent}", "{image}", "{odd}", "--strength", "0.5"], "multiples of 4 (this model's factor: 2 from the U-Net levels x 2"),
    (["img2img", "{pixel}", "{image}", "{odd}", "--strength", "0.5", "-o", "{out}/one.png"], "a .png file takes one IMAGE"),
    (["img2img", "{cond}", "{image}", "--strength", "0.5", "--labels", "7"], "--labels: classes must lie in [0, 2]"),
    (["sample", "{pixel}", "--size", "15x16"], "--size 15x16: height and width must be positive multiples of 2"),
    (["sample", "{latent}", "--size", "8x10"], "--size 8x10: height and width must be positive multiples of 4"),
    (["sample", "{pixel}", "--size", "16"], "--size: expected HxW"),
    (["sample", "{padded}", "--size", "30x28"], ("--size 30x28: with the data's padding (data.pad_to) the model "
                                                 "works on 34x32, whose sides must be multiples of 4")),
]


@pytest.mark.parametrize("argv, names", BAD, ids=[" ".join(a[:1] + a[2:]) for a, _ in BAD])
def test_bad_input_exits_2_names_it_and_writes_nothing(ckpts, files, tmp_path, capsys, argv, names):
    fill = {**{k: str(v) for k, v in ckpts.items()}, **{k: str(v) for k, v in files.items()}, "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in argv]
    out = files["out"] / "x.png"
    if argv[0] == "inpaint" and "-o" not in argv:
        argv += ["-o", str(out)]
    elif argv[0] == "img2img" and "-o" not in argv:
        argv += ["-o", str(files["out"])]
    elif argv[0] == "sample":
        argv += ["--grid", str(out)]
    before = sorted(p.name for p in tmp_path.rglob("*"))
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert names in err, err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.rglob("*")) == before  # nothing written
