"""Tiny untrained checkpoints for the editing tests, written with the library's own APIs.

- ``pixel``: 8x8 gray images, a 2-level U-Net (factor 2), T = 40.
- ``cond``: the same, class-conditional (3 classes).
- ``latent``: a KL autoencoder with f = 2 (scale_factor 1) under a 2-level U-Net: factor 4.
- ``padded``: Fashion-MNIST padded to 32x32 (``data.pad_to``), a 3-level U-Net (factor 4): it works on
  32x32 canvases and decodes 28x28 images.

The weights are random (perturbed from their initialisation so that no output layer is all zeros).
"""

from __future__ import annotations

import pytest
import torch

from ldmkit import pipelines
from ldmkit.config import config_from_data
from ldmkit.training.checkpoint import save_checkpoint

UNET = {"in_channels": 1, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
        "attention_levels": [1], "num_heads": 2, "norm_groups": 4}
AE_MODEL = {"type": "kl", "in_channels": 1, "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
            "z_channels": 2, "mid_attention": False}


def _perturb(module: torch.nn.Module, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return {k: v.contiguous() for k, v in module.state_dict().items()}


def _diffusion_checkpoint(root, name: str, *, unet=None, first_stage=None, seed=0, data=None):
    data = {"data": data or {"name": "folder", "image_size": 8, "channels": 1, "root": str(root)},
            "unet": {**UNET, **(unet or {})}, "diffusion": {"num_timesteps": 40},
            "sample": {"sampler": "ddim", "steps": 4}}
    if first_stage is not None:
        data["first_stage"] = str(first_stage)
        data["unet"]["in_channels"] = AE_MODEL["z_channels"]
    cfg = config_from_data(data)
    space = pipelines.build_space(cfg)
    if first_stage is not None:
        import dataclasses

        cfg = dataclasses.replace(cfg, first_stage_scale_factor=space.scale_factor)
    torch.manual_seed(seed)
    model = pipelines.build_denoiser(cfg, pipelines.build_process(cfg))
    return save_checkpoint(root / name, 0, config=pipelines.config_dict(cfg), tensors={"model": _perturb(model, seed)})


def _autoencoder_checkpoint(root):
    from ldmkit.autoencoders import build_autoencoder, load_config
    from ldmkit.autoencoders.checkpoint import checkpoint_meta

    cfg = load_config(None, data={"model": AE_MODEL, "data": {"name": "fashion-mnist", "pad_to": 32},
                                  "loss": {"perceptual": "none"}})
    torch.manual_seed(0)
    ae = build_autoencoder(cfg.model)
    meta = {**checkpoint_meta(), "scale_factor": 1.0}
    return save_checkpoint(root / "ae", 0, config=cfg.to_dict(), tensors={"model": _perturb(ae, 5)}, meta=meta)


@pytest.fixture(scope="session")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("editing")
    ae = _autoencoder_checkpoint(root)
    return {"pixel": _diffusion_checkpoint(root, "pixel"),
            "cond": _diffusion_checkpoint(root, "cond", unet={"num_classes": 3}, seed=1),
            "latent": _diffusion_checkpoint(root, "latent", first_stage=ae, seed=2),
            "padded": _diffusion_checkpoint(root, "padded", unet={"channel_mult": [1, 2, 2], "attention_levels": []},
                                            data={"name": "fashion-mnist", "pad_to": 32}, seed=3)}


@pytest.fixture(scope="session")
def models(ckpts):
    return {k: pipelines.load_model(v) for k, v in ckpts.items()}

