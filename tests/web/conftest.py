"""Fixtures of the web tests: the shipped demo model, a tiny class-conditional checkpoint, a tiny layout model
(trained for 2 steps on ``shapes``, its output layers nudged off zero), a gated model whose denoiser blocks until released (to hold a job running),
and helpers to make clients and PNG uploads."""

from __future__ import annotations

import dataclasses
import sys
import threading
from pathlib import Path

import pytest
import torch

pytest.importorskip("fastapi", reason="the web tests need the web extra: pip install -e '.[dev]'")

from _web_helpers import LOCAL
from fastapi.testclient import TestClient

from ldmkit import pipelines
from ldmkit.commands.demo import DEMO_MODEL
from ldmkit.config import config_from_data
from ldmkit.training.checkpoint import save_checkpoint
from ldmkit.web.app import create_app


@pytest.fixture(scope="session")
def demo():
    return pipelines.load_model(DEMO_MODEL)


@pytest.fixture(scope="session")
def cond_ckpt(tmp_path_factory):
    """8x8 gray, 3 classes, 2-level U-Net (factor 2), T = 40; random weights nudged off their init."""
    root = tmp_path_factory.mktemp("web")
    cfg = config_from_data({
        "data": {"name": "folder", "image_size": 8, "channels": 1, "root": str(root)},
        "unet": {"in_channels": 1, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
                 "attention_levels": [], "num_heads": 2, "norm_groups": 4, "num_classes": 3},
        "diffusion": {"num_timesteps": 40}, "sample": {"sampler": "ddim", "steps": 4, "guidance_scale": 2.0}})
    torch.manual_seed(0)
    model = pipelines.build_denoiser(cfg, pipelines.build_process(cfg))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    return save_checkpoint(root / "cond", 0, config=pipelines.config_dict(cfg), tensors={"model": tensors})


@pytest.fixture(scope="session")
def cond(cond_ckpt):
    return pipelines.load_model(cond_ckpt)


@pytest.fixture(scope="session")
def layout_model(tmp_path_factory):
    """The tiny layout-to-image config of ``tests/conditioning`` (16x16 ``shapes`` in pixel space, 18 labels,
    ``max_boxes=3``, T = 40) trained for 2 steps (about a second), output layers nudged off their zero init."""
    import yaml

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from conditioning.test_layout_model import TINY_SHAPES

    data = yaml.safe_load(TINY_SHAPES)
    data["train"].update(max_steps=2, checkpoint_every=2)
    root = tmp_path_factory.mktemp("web-layout")
    pipelines.train(config_from_data(data), root / "run", progress=False)
    trained = pipelines.load_model(root / "run")
    # two steps leave the zero-initialised output layers near zero, which would hide the layout's effect
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for p in trained.denoiser.parameters():
            if p.dim() > 1 and float(p.abs().max()) < 1e-2:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    tensors = {k: v.contiguous() for k, v in trained.denoiser.state_dict().items()}
    ckpt = save_checkpoint(root / "layout", trained.step, config=pipelines.config_dict(trained.config),
                           tensors={"model": tensors})
    return pipelines.load_model(ckpt)


@pytest.fixture(scope="session")
def app(demo, cond):
    return create_app({"demo": demo, "cond": cond})


@pytest.fixture()
def client(app):
    return TestClient(app, base_url=LOCAL)


class Gate(torch.nn.Module):
    """A denoiser that blocks on its first evaluation until ``release`` is set (then behaves as ``inner``)."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner
        self.entered, self.release = threading.Event(), threading.Event()

    def forward(self, x_t, t, cond=None):
        self.entered.set()
        assert self.release.wait(20), "Gate: never released"
        return self.inner(x_t, t, cond)


@pytest.fixture()
def gated(demo):
    gate = Gate(demo.denoiser)
    return dataclasses.replace(demo, denoiser=gate), gate
