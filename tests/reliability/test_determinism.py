"""Determinism (issue #16): the same seed gives the same bytes, batch size never changes a sample, a PNG's
metadata regenerates it (``ldmkit sample --from-png``), and previews or logging never change training.

The checkpoints are tiny (8x8 gray, T = 40) with random weights, perturbed from their initialisation so
that the output layer is not all zeros: labels, guidance and noise all change the pixels, so a setting lost
on the way would show.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit import pipelines
from ldmkit.cli import main
from ldmkit.config import config_from_data
from ldmkit.images import read_png_metadata
from ldmkit.training.checkpoint import save_checkpoint

UNET = {"in_channels": 1, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_levels": [1], "num_heads": 2, "norm_groups": 4}


def _checkpoint(root, name: str, seed: int, **unet):
    cfg = config_from_data({"data": {"name": "folder", "image_size": 8, "channels": 1, "root": str(root)},
                            "unet": {**UNET, **unet}, "diffusion": {"num_timesteps": 40},
                            "sample": {"sampler": "ddim", "steps": 4}})
    torch.manual_seed(seed)
    model = pipelines.build_denoiser(cfg, pipelines.build_process(cfg))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    return save_checkpoint(root / name, 0, config=pipelines.config_dict(cfg), tensors={"model": weights})


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("determinism")
    return {"uncond": str(_checkpoint(root, "uncond", 0)),
            "cond": str(_checkpoint(root, "cond", 1, num_classes=3))}


def _pixels(path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).copy()


def test_same_seed_gives_byte_identical_pngs(ckpts, tmp_path):
    """Guards ``pipelines.generate``'s per-image generators (``make_generators([seed + i ...])``): no draw
    from the global RNG or the clock, and ``save_png`` writes no time stamp."""
    runs = []
    for k in range(2):
        torch.manual_seed(100 + k)  # the global RNG differs between the runs: it must not matter
        out = tmp_path / f"run{k}"
        assert main(["sample", ckpts["cond"], "-n", "3", "--sampler", "ddpm", "--steps", "5", "--seed", "11",
                     "--guidance-scale", "2", "--out-dir", str(out / "pngs"), "--grid", str(out / "grid.png")]) == 0
        runs.append(out)
    names = sorted(p.name for p in (runs[0] / "pngs").iterdir())
    assert names == ["00000.png", "00001.png", "00002.png"]
    for name in [*(f"pngs/{n}" for n in names), "grid.png"]:
        assert (runs[0] / name).read_bytes() == (runs[1] / name).read_bytes(), name
    # and the images differ from each other (the check above is not vacuous)
    assert not np.array_equal(_pixels(runs[0] / "pngs/00000.png"), _pixels(runs[0] / "pngs/00001.png"))


@pytest.mark.parametrize("sampler", ["ddpm", "ddim", "dpmpp_2m"])
def test_batch_size_never_changes_a_sample(ckpts, tmp_path, sampler):
    """Guards ``pipelines.generate``: image ``i`` draws its x_T and every later noise from its own
    generator seeded ``seed + i`` (``gens = make_generators([seed + i for i in idx], device)``), whatever
    batch it falls in; and the U-Net has no batch-coupled layer (GroupNorm, not BatchNorm)."""
    out = {}
    for bs in (1, 4):
        npz = tmp_path / f"b{bs}.npz"
        assert main(["sample", ckpts["cond"], "-n", "5", "--sampler", sampler, "--steps", "5", "--eta", "0.5",
                     "--labels", "0,2,1", "--guidance-scale", "1.5", "--seed", "3", "--batch-size", str(bs),
                     "--npz", str(npz)]) == 0
        out[bs] = np.load(npz)["images"]
    assert out[1].shape == (5, 8, 8, 1)
    assert np.array_equal(out[1], out[4])
    # image 3 alone (-n 1 --seed 3+3) is image 3 of the batch
    one = tmp_path / "one.npz"
    assert main(["sample", ckpts["cond"], "-n", "1", "--sampler", sampler, "--steps", "5", "--eta", "0.5",
                 "--labels", "0", "--guidance-scale", "1.5", "--seed", "6", "--npz", str(one)]) == 0
    assert np.array_equal(np.load(one)["images"][0], out[1][3])


@pytest.mark.parametrize("model, extra", [
    ("cond", ["--sampler", "ddpm", "--steps", "6", "--labels", "2,0", "--guidance-scale", "2.5"]),
    ("cond", ["--sampler", "ddim", "--steps", "4", "--eta", "0.7", "--labels", "1", "--no-ema"]),
    ("uncond", ["--sampler", "dpmpp_2m", "--steps", "3", "--size", "12x8"]),
])
def test_from_png_regenerates_the_pixels_of_every_image(ckpts, tmp_path, model, extra, capsys):
    """Guards ``settings_from_png`` (ldmkit/commands/sample.py): every setting that changes the pixels
    (checkpoint, seed, sampler, steps, eta, label, guidance scale, weights, size) is read back from the
    metadata that ``sample --out-dir`` writes; dropping any one of them breaks one of these cases."""
    src = tmp_path / "src"
    assert main(["sample", ckpts[model], "-n", "3", "--seed", "20", "--batch-size", "2", "--out-dir", str(src),
                 *extra]) == 0
    originals = [_pixels(src / f"{i:05d}.png") for i in range(3)]
    assert not np.array_equal(originals[0], originals[2])
    for i in range(3):
        meta = read_png_metadata(src / f"{i:05d}.png")
        assert json.loads(meta["seed"]) == 20 + i
        again = tmp_path / f"again{i}"
        assert main(["sample", "--from-png", str(src / f"{i:05d}.png"), "--out-dir", str(again)]) == 0
        regenerated = _pixels(again / "00000.png")
        assert regenerated.shape == originals[i].shape
        assert regenerated.tobytes() == originals[i].tobytes(), i
        # the regenerated PNG carries the same settings, so it regenerates itself too
        meta2 = read_png_metadata(again / "00000.png")
        keys = ("checkpoint", "seed", "sampler", "steps", "eta", "guidance_scale", "label", "weights", "size")
        assert {k: meta2[k] for k in keys} == {k: meta[k] for k in keys}
    capsys.readouterr()


def test_from_png_with_a_moved_checkpoint_and_its_errors(ckpts, tmp_path, capsys):
    """The positional checkpoint replaces the stored path (a moved checkpoint); a grid PNG, a non-PNG and
    sampling arguments given with --from-png are usage errors (exit 2) naming what is wrong. Guards
    ``settings_from_png`` (ldmkit/commands/sample.py: the positional checkpoint overriding the stored path, and
    its ``UsageError`` branches) and the ``CKPT_DIR ... is required`` check in ``sample.run``."""
    src = tmp_path / "src"
    assert main(["sample", ckpts["cond"], "-n", "2", "--seed", "5", "--out-dir", str(src),
                 "--grid", str(tmp_path / "grid.png"), "--guidance-scale", "2"]) == 0
    moved = tmp_path / "moved"
    shutil.copytree(ckpts["cond"], moved)
    assert main(["sample", str(moved), "--from-png", str(src / "00001.png"), "--out-dir", str(tmp_path / "m")]) == 0
    assert _pixels(tmp_path / "m" / "00000.png").tobytes() == _pixels(src / "00001.png").tobytes()
    assert read_png_metadata(tmp_path / "m" / "00000.png")["checkpoint"] == str(moved)
    capsys.readouterr()
    (tmp_path / "fake.png").write_bytes(b"not a png")
    for argv, fragment in [
        (["--from-png", str(tmp_path / "grid.png")], "only the one-image PNGs of `ldmkit sample --out-dir`"),
        (["--from-png", str(tmp_path / "fake.png")], "cannot read it as a PNG"),
        (["--from-png", str(tmp_path / "missing.png")], "no such file"),
        (["--from-png", str(src / "00000.png"), "--seed", "3"], "--seed come from the PNG's metadata"),
        ([], "CKPT_DIR: a checkpoint folder is required (or --from-png FILE)"),
    ]:
        assert main(["sample", *argv]) == 2, argv
        err = capsys.readouterr().err
        assert fragment in err and "Traceback" not in err, err


# ------------------------------------------------------------------------------------------ training
def _trainer(out, *, sample_every: int, log_every: int):
    from ldmkit.config import to_dict
    from ldmkit.training import LossStep, Trainer
    from ldmkit.training.data_order import TensorData

    cfg = config_from_data({
        "unet": {**UNET, "dropout": 0.3, "num_classes": 3}, "diffusion": {"num_timesteps": 40, "cond_drop_prob": 0.2},
        "train": {"lr": 1e-3, "warmup_steps": 2, "batch_size": 8, "max_steps": 6, "log_every": log_every,
                  "checkpoint_every": 6, "sample_every": sample_every, "ema_decay": 0.9, "seed": 1},
        # the preview samples with ddpm: it draws noise at every step, from its own generators
        "sample": {"sampler": "ddpm", "steps": 3, "num_images": 2, "guidance_scale": 2.0}})
    g = torch.Generator().manual_seed(0)
    data = TensorData(torch.randint(0, 256, (24, 1, 8, 8), generator=g).float() / 127.5 - 1,
                      torch.randint(0, 3, (24,), generator=g))
    torch.manual_seed(cfg.train.seed)
    process = pipelines.build_process(cfg)
    model = pipelines.build_denoiser(cfg, process)
    space = pipelines.build_space(cfg)
    sample_fn = pipelines.make_grid_fn(cfg, process, space)
    return Trainer(LossStep(model, pipelines.make_loss_fn(cfg, process, space), cfg.train), data, cfg.train, out,
                   config=json.loads(json.dumps(to_dict(cfg))), sample_fn=sample_fn, progress=False)


def test_previews_and_logging_never_change_training(tmp_path):
    """Guards ``Trainer._sample``'s ``m.train()`` (ldmkit/training/loop.py: a preview switches the model to
    eval mode; training must resume with dropout on) and the two layers that keep a preview's noise out of
    the loss: the preview draws from its own per-image generators (``pipelines.generate``'s
    ``make_generators``), and the Trainer reseeds the global RNG before every micro-batch
    (loop.py ``torch.manual_seed(mix_seed(self.cfg.seed, self.step, m, self.dist.rank))``). Removing the
    ``train()`` call fails this test; removing either RNG layer alone does not (the other still holds),
    removing both does (checked by hand). The model has dropout 0.3 and label dropping, so a lost train
    mode or a consumed global draw changes the weights. ``log_every`` only changes what is written."""
    runs = {}
    for name, sample_every, log_every in (("plain", 0, 1), ("previews", 2, 1), ("sparse_log", 2, 3)):
        trainer = _trainer(tmp_path / name, sample_every=sample_every, log_every=log_every)
        trainer.run()
        runs[name] = trainer
    assert sorted(p.name for p in (tmp_path / "previews" / "samples").iterdir()) == [
        "step_0000002.png", "step_0000004.png", "step_0000006.png"]
    assert not (tmp_path / "plain" / "samples").exists()
    base = runs["plain"]
    for name in ("previews", "sparse_log"):
        for a, b in ((base.model, runs[name].model), (base.ema.module, runs[name].ema.module)):
            sa, sb = a.state_dict(), b.state_dict()
            assert sa.keys() == sb.keys()
            assert all(torch.equal(sa[k], sb[k]) for k in sa), name
    rows = {n: [json.loads(x) for x in (tmp_path / n / "metrics.jsonl").read_text().splitlines()] for n in runs}
    assert [(r["step"], r["loss"]) for r in rows["plain"]] == [(r["step"], r["loss"]) for r in rows["previews"]]
    assert [r["step"] for r in rows["sparse_log"]] == [3, 6]


# ------------------------------------------------------------------------------------------ visualize
@pytest.mark.parametrize("what, extra", [
    ("noising", ["--num", "2", "--t", "0,500,999", "--seed", "3"]),
    ("trajectory", ["-n", "1", "--sampler", "ddpm", "--steps", "3", "--seed", "4"]),
])
def test_visualize_png_metadata_redraws_it_byte_for_byte(tmp_path, monkeypatch, what, extra):
    """``ldmkit visualize`` on the shipped demo model (a registry name): the same seed draws the same PNG
    bytes whatever the global RNG, and the ``reproduce`` command stored in the PNG, run elsewhere, redraws it
    byte for byte. Guards ``visualize.forward_noising`` / ``reverse_trajectory`` drawing from per-row
    generators (``make_generators([seed + i ...])``) and ``commands/visualize.py`` ``run`` writing every
    setting that changes the pixels (timesteps, images, seed; sampler, steps, eta, every) into ``reproduce``."""
    import shlex

    pngs = []
    for k in range(3):  # two runs as typed, then the stored command; each in its own folder, same -o
        (tmp_path / str(k)).mkdir()
        monkeypatch.chdir(tmp_path / str(k))
        torch.manual_seed(k)  # the global RNG differs between the runs: it must not matter
        if k < 2:
            argv = ["visualize", "demo-ddpm-fmnist", "--what", what, *extra, "--device", "cpu", "-o", "v.png"]
        else:
            argv = shlex.split(read_png_metadata(tmp_path / "0" / "v.png")["reproduce"])
            assert argv[:3] == ["ldmkit", "visualize", "demo-ddpm-fmnist"] and argv[-2:] == ["-o", "v.png"]
            argv = argv[1:]
        assert main(argv) == 0
        pngs.append((tmp_path / str(k) / "v.png").read_bytes())
    assert pngs[0] == pngs[1] == pngs[2]
