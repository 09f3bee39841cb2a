"""Layout conditioning in a model: the layout changes a tiny denoiser's output, padding does not, the empty layout
is the null condition; builder checks; end to end: a tiny train on shapes and `ldmkit sample --layout`."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from PIL import Image

from ldmkit.cli import main
from ldmkit.conditioning.class_label import null_condition
from ldmkit.conditioning.layout import LayoutConfig, LayoutContext
from ldmkit.denoiser import Denoiser
from ldmkit.images import read_png_metadata
from ldmkit.networks.unet import UNet, unet_config
from ldmkit.registry import ConfigError

ABAR = torch.linspace(0.99, 0.01, 10, dtype=torch.float64)


def layout_denoiser(seed: int = 0) -> tuple[Denoiser, LayoutContext]:
    torch.manual_seed(seed)
    kind = LayoutContext(LayoutConfig(labels="shapes", max_boxes=3, coord_bins=8, width=16, depth=1, heads=2))
    net = UNet(unet_config("tiny", context_dim=16, in_channels=3))
    for p in net.parameters():  # zero-initialised output layers would hide the context's effect
        if p.dim() > 1 and float(p.detach().abs().max()) == 0.0:
            torch.nn.init.normal_(p, std=0.05)
    return Denoiser(net, ABAR, "eps", context_encoder=kind.context_encoder).eval(), kind


A = [{"label": "red circle", "box": [0.1, 0.1, 0.5, 0.5]}]
B = [{"label": "blue square", "box": [0.5, 0.4, 0.9, 0.9]}]


def test_layout_changes_the_output_and_padding_does_not():
    den, kind = layout_denoiser()
    x, t = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)), torch.tensor([3, 7])
    ca, cb = kind.from_request(2, layouts=A), kind.from_request(2, layouts=B)
    with torch.no_grad():
        ea, ea2, eb = den(x, t, ca).eps, den(x, t, kind.from_request(2, layouts=A)).eps, den(x, t, cb).eps
        padded = ca.map(lambda v: v.clone())
        padded.tokens[~padded.token_mask] = 5  # garbage behind the mask
        ep = den(x, t, padded).eps
        en = den(x, t, null_condition(ca)).eps
    assert torch.equal(ea, ea2)
    assert not torch.allclose(ea, eb, atol=1e-4)  # another layout, another prediction
    assert torch.allclose(ea, ep, atol=1e-5)  # padding tokens change nothing
    assert not torch.allclose(ea, en, atol=1e-4)  # the layout is not ignored


def test_null_layout_is_the_empty_layout():
    den, kind = layout_denoiser()
    x, t = torch.randn(1, 3, 16, 16), torch.tensor([5])
    empty = kind.from_request(1, layouts=[[]])
    assert not empty.token_mask.any()
    with torch.no_grad():
        e_empty = den(x, t, empty).eps
        e_null = den(x, t, null_condition(kind.from_request(1, layouts=A))).eps
    assert torch.allclose(e_empty, e_null, atol=1e-6)


TINY_SHAPES = """
data: {name: shapes, length: 64, image_size: 16}
cond:
  context: layout
  layout: {labels: shapes, max_boxes: 3, coord_bins: 8, width: 16, depth: 1, heads: 2}
unet: {in_channels: 3, model_channels: 8, channel_mult: [1, 2], num_res_blocks: 1, attention_levels: [1],
       num_heads: 2, norm_groups: 4, context_dim: 16}
diffusion: {schedule: linear, num_timesteps: 40, cond_drop_prob: 0.2}
train: {lr: 1.0e-3, warmup_steps: 1, batch_size: 8, max_steps: 3, log_every: 1, checkpoint_every: 3,
        sample_every: 0, keep_last: 1, ema_decay: 0.9}
sample: {sampler: ddim, steps: 3, num_images: 4}
"""


def test_builder_checks_the_dataset_and_width():
    import yaml

    from ldmkit.config import config_from_data
    from ldmkit.pipelines import build_conditioner

    data = yaml.safe_load(TINY_SHAPES)
    cond = build_conditioner(config_from_data(data))
    assert cond.accepts == ("layouts",) and cond.context_encoder is not None
    data["cond"]["layout"]["labels"] = "fashion-mnist"
    with pytest.raises(ConfigError, match="set cond.layout.labels='shapes'"):
        build_conditioner(config_from_data(data))
    data["cond"]["layout"]["labels"] = "shapes"
    data["unet"]["context_dim"] = 32
    with pytest.raises(ConfigError, match="context_dim"):
        build_conditioner(config_from_data(data))


def test_train_and_sample_with_a_layout_file(tmp_path, capsys):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY_SHAPES)
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--no-progress"]) == 0
    layout = tmp_path / "layout.json"
    layout.write_text(json.dumps([A, A + B]))
    npz = tmp_path / "s.npz"
    assert main(["sample", str(run), "--layout", str(layout), "-n", "3", "--steps", "2", "--npz", str(npz)]) == 0
    images = np.load(npz)["images"]
    assert images.shape == (3, 16, 16, 3)
    again = tmp_path / "again.npz"
    assert main(["sample", str(run), "--layout", str(layout), "-n", "3", "--steps", "2", "--npz", str(again)]) == 0
    assert np.array_equal(images, np.load(again)["images"])
    # --out-dir PNGs store each image's layout; --from-png regenerates image 1 (layout A + B) exactly
    out = tmp_path / "pngs"
    assert main(["sample", str(run), "--layout", str(layout), "-n", "2", "--steps", "2", "--out-dir", str(out)]) == 0
    meta = read_png_metadata(out / "00001.png")
    assert json.loads(meta["layout"]) == A + B and "--layout" in meta["reproduce"]
    regen = tmp_path / "regen.npz"
    assert main(["sample", "--from-png", str(out / "00001.png"), "--npz", str(regen)]) == 0
    assert np.array_equal(np.load(regen)["images"][0], np.asarray(Image.open(out / "00001.png")))
    inline = tmp_path / "inline.npz"  # inline JSON = the file's first layout
    assert main(["sample", str(run), "--layout", json.dumps(A), "-n", "1", "--steps", "2", "--npz", str(inline)]) == 0
    assert np.array_equal(np.load(inline)["images"][0], images[0])
    capsys.readouterr()
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"label": "pink circle", "box": [0.1, 0.1, 0.5, 0.5]}]))
    assert main(["sample", str(run), "--layout", str(bad), "-n", "1", "--steps", "2"]) == 2
    assert "unknown label" in capsys.readouterr().err
    outside = tmp_path / "outside.json"
    outside.write_text(json.dumps([{"label": "red circle", "box": [0.1, 0.1, 1.5, 0.5]}]))
    assert main(["sample", str(run), "--layout", str(outside), "-n", "1", "--steps", "2"]) == 2
    assert "must lie in [0, 1]" in capsys.readouterr().err
    many = json.dumps([{"label": 0, "box": [0.1, 0.1, 0.2, 0.2]}] * 4)
    assert main(["sample", str(run), "--layout", many, "-n", "1", "--steps", "2"]) == 2
    assert "more than this model's max_boxes=3" in capsys.readouterr().err


def test_layout_for_a_model_without_layouts_is_refused(tmp_path, capsys):
    import yaml

    data = yaml.safe_load(TINY_SHAPES)
    del data["cond"]
    data["unet"].pop("context_dim")
    data["diffusion"].pop("cond_drop_prob")
    cfg = tmp_path / "plain.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert main(["train", str(cfg), "--out", str(tmp_path / "run"), "--no-progress", "--train.max_steps=1",
                 "--train.checkpoint_every=1"]) == 0
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run"), "--layout", json.dumps(A), "-n", "1", "--steps", "2"]) == 2
    assert "--layout: layouts: this model does not take layouts" in capsys.readouterr().err


@pytest.mark.parametrize(("preset", "dataset", "labels", "in_channels"),
                         [("ldm_layout_shapes", "shapes", "shapes", 3),
                          ("ldm_layout_collage", "fashion-collage", "fashion-mnist", 4)])
def test_presets_load_and_fit(preset, dataset, labels, in_channels):
    from pathlib import Path

    from ldmkit.config import load_config
    from ldmkit.pipelines import build_conditioner

    root = Path(__file__).resolve().parents[2] / "configs"
    cfg = load_config(root / f"{preset}.yaml")
    part = build_conditioner(cfg).parts["context"]  # checks the dataset's vocabulary and unet.context_dim
    assert (cfg.data.name, cfg.cond.layout.labels, cfg.unet.in_channels) == (dataset, labels, in_channels)
    assert part.context_dim == cfg.unet.context_dim and cfg.diffusion.cond_drop_prob > 0
    if dataset == "fashion-collage":  # its own first stage: 1 channel, f = 4 on the 64x64 canvas
        import yaml

        ae = yaml.safe_load((root / "ae_kl_f4_collage.yaml").read_text())
        assert cfg.first_stage == "runs/ae_kl_f4_collage" and ae["data"]["name"] == "fashion-collage"
        assert ae["model"]["in_channels"] == 1 and 2 ** (len(ae["model"]["channel_mult"]) - 1) == 4
        assert cfg.cond.layout.max_boxes >= 4  # the dataset's most items per canvas


def test_box_map_is_the_exact_area_coverage():
    from ldmkit.conditioning.layout import box_map

    boxes = torch.tensor([[0.25, 0.25, 0.75, 0.75], [0.1, 0.0, 0.35, 1.0], [0.0, 0.0, 0.3, 0.5]])
    m = box_map([(boxes, torch.tensor([0, 1, 1]))], num_labels=3, height=4, width=4)[0]
    want0 = torch.zeros(4, 4)
    want0[1:3, 1:3] = 1.0
    torch.testing.assert_close(m[0], want0)
    # label 1: a column strip covering 60% of column 0 and 40% of column 1, merged (max) with a box covering
    # all of column 0 and 20% of column 1 over the top two rows
    want1 = torch.tensor([[1.0, 0.4, 0, 0]] * 2 + [[0.6, 0.4, 0, 0]] * 2)
    torch.testing.assert_close(m[1], want1)
    assert not m[2].any()
    # total coverage of a box equals its area in cells, at any resolution
    for h, w in [(7, 5), (16, 16)]:
        one = box_map([(boxes[:1], torch.tensor([0]))], 1, h, w)[0, 0]
        torch.testing.assert_close(one.sum(), torch.tensor(0.25 * h * w))


def test_spatial_layout_trains_samples_and_the_map_matters(tmp_path, capsys):
    import yaml

    from ldmkit.config import config_from_data
    from ldmkit.pipelines import build_conditioner, build_denoiser, build_process

    data = yaml.safe_load(TINY_SHAPES)
    data["cond"]["layout"]["spatial"] = True
    with pytest.raises(ConfigError, match="set --unet.concat_channels=18"):
        build_conditioner(config_from_data(data))
    data["unet"]["concat_channels"] = 18
    cfg = config_from_data(data)
    cond = build_conditioner(cfg)
    c = cond.from_request(2, layouts=[A, A + B])
    assert c.concat.shape == (2, 18, 16, 16) and c.tokens.shape[0] == 2  # pixel space: the map at 16x16
    torch.manual_seed(0)
    den = build_denoiser(cfg, build_process(cfg), cond).eval()
    torch.nn.init.normal_(den.network.conv_out.weight, std=0.1)
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([5, 9])
    moved = dataclasses.replace(c, concat=c.concat.roll(4, dims=-1))  # the same tokens, the map moved
    with torch.no_grad():
        assert not torch.allclose(den(x, t, c).eps, den(x, t, moved).eps, atol=1e-5)
    path = tmp_path / "spatial.yaml"
    path.write_text(yaml.safe_dump(data))
    run = tmp_path / "run"
    assert main(["train", str(path), "--out", str(run), "--no-progress"]) == 0
    npz = tmp_path / "s.npz"
    assert main(["sample", str(run), "--layout", json.dumps(A + B), "-n", "2", "--steps", "2", "--npz", str(npz),
                 "--guidance-scale", "2"]) == 0
    assert np.load(npz)["images"].shape == (2, 16, 16, 3)
    # a larger canvas: the box map is drawn at the requested size (the boxes are fractions of the canvas)
    assert main(["sample", str(run), "--layout", json.dumps(A + B), "-n", "1", "--steps", "2", "--npz", str(npz),
                 "--size", "32x24"]) == 0
    assert np.load(npz)["images"].shape == (1, 32, 24, 3)
