"""Shared by the reliability tests: the training tests' toy models, tiny checkpoints, and a planted pickle."""

from __future__ import annotations

import json
import os
import pickle
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "training"))

from _training_helpers import (
    TINY_UNET,
    loss_trainer,
    noisy_loss,
    state_equal,
    tiny_config,
    toy_data,
    toy_model,
    train_cfg,
)

from ldmkit.training import checkpoint as ck

__all__ = ["TINY_UNET", "Planted", "ae_checkpoint", "diffusion_checkpoint", "loss_trainer", "noisy_loss",
           "plant_pickle", "rewrite_tensors", "sr_checkpoint", "state_equal", "tiny_config", "toy_data", "toy_model",
           "train_cfg"]

AE_MODEL = {"type": "kl", "in_channels": 1, "channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
            "z_channels": 2, "mid_attention": False}


class Planted:
    """Unpickling this creates ``marker`` (``__reduce__`` -> ``open(marker, "w")``): proof that code ran."""

    def __init__(self, marker: str | os.PathLike):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def plant_pickle(path: Path, marker: Path, *, torch_format: bool = False) -> Path:
    """Write a malicious pickle to ``path``: plain pickle protocol 2, or ``torch.save``'s zip format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if torch_format:
        torch.save({"state_dict": Planted(marker)}, path)
    else:
        path.write_bytes(pickle.dumps({"state_dict": Planted(marker)}, protocol=2))
    return path


def diffusion_checkpoint(root: Path, name: str = "diff", **sections) -> Path:
    """A tiny untrained diffusion checkpoint (8x8 gray, T = 40), written by the library's save path."""
    from ldmkit import pipelines

    cfg = tiny_config(**sections)
    torch.manual_seed(0)
    model = pipelines.build_denoiser(cfg, pipelines.build_process(cfg))
    return ck.save_checkpoint(root / name, 0, config=pipelines.config_dict(cfg), tensors={"model": model.state_dict()})


def sr_checkpoint(root: Path, name: str = "sr") -> Path:
    """An untrained x4 super-resolution checkpoint (pixel space, 28x28 padded to 32), saved by the library."""
    from ldmkit import pipelines
    from ldmkit.config import config_from_data

    cfg = config_from_data({
        "data": {"name": "fashion-mnist", "pad_to": 32}, "cond": {"concat": "super_resolution"},
        "unet": {"in_channels": 1, "concat_channels": 1, "model_channels": 8, "channel_mult": [1, 2, 2, 2],
                 "num_res_blocks": 1, "attention_levels": [], "num_heads": 2, "norm_groups": 4},
        "diffusion": {"num_timesteps": 40}, "sample": {"sampler": "ddim", "steps": 2}})
    torch.manual_seed(0)
    model = pipelines.build_denoiser(cfg, pipelines.build_process(cfg))
    return ck.save_checkpoint(root / name, 0, config=pipelines.config_dict(cfg), tensors={"model": model.state_dict()})


def ae_checkpoint(root: Path, name: str = "ae") -> Path:
    """A tiny untrained KL autoencoder checkpoint (scale factor set, so it can serve as a first stage)."""
    from ldmkit.autoencoders import build_autoencoder, load_config
    from ldmkit.autoencoders.checkpoint import checkpoint_meta

    cfg = load_config(None, data={"model": AE_MODEL, "data": {"name": "fashion-mnist", "pad_to": 32},
                                  "loss": {"perceptual": "none"}})
    torch.manual_seed(0)
    ae = build_autoencoder(cfg.model)
    return ck.save_checkpoint(root / name, 0, config=cfg.to_dict(), tensors={"model": ae.state_dict()},
                              meta={**checkpoint_meta(), "scale_factor": 1.0})


def rewrite_tensors(ckpt: Path, name: str, tensors: dict[str, torch.Tensor]) -> None:
    """Replace ``ckpt/name`` and update its size/sha256 record, as a consistent (but bad) checkpoint."""
    ck.write_tensors(ckpt / name, tensors)
    meta = json.loads((ckpt / "config.json").read_text())
    meta["files"][name] = ck._file_record(ckpt / name)
    (ckpt / "config.json").write_text(json.dumps(meta))
