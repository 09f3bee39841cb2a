"""The U-Net's input channels must match the space diffusion runs in; a mismatch is a clear error."""

import dataclasses
from pathlib import Path

import pytest

from ldmkit import pipelines
from ldmkit.config import load_config


def test_in_channels_mismatch_names_key_and_fix(tmp_path):
    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "ddpm_fmnist.yaml", [])
    assert pipelines.build_space(cfg).describe() == {"type": "pixel"}
    bad = dataclasses.replace(cfg, unet=dataclasses.replace(cfg.unet, in_channels=3))
    with pytest.raises(ValueError, match=r"unet.in_channels=3 .* 1 channels; set --unet.in_channels=1"):
        pipelines.build_space(bad)
