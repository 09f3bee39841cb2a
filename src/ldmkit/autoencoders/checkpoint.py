"""Reading autoencoder checkpoints (written by the training engine, ``ldmkit.pipelines.train_autoencoder``).

A folder ``RUN/checkpoints/step_XXXXXXX/`` holds ``config.json`` (``{"format_version", "ldmkit_version",
"kind": "autoencoder", "step", "config", "scale_factor", "latent_stats"}``), ``model.safetensors`` (the
autoencoder alone: it rebuilds with no other file), and for resuming ``discriminator.safetensors``,
``optimizer.safetensors`` / ``disc_optimizer.safetensors`` (+ their JSON halves in ``state.json``) and
``rng.safetensors``. ``scale_factor`` stays ``null`` until ``ldmkit ae-stats`` measures it.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from torch import nn

from ldmkit.training import checkpoint as ck

KIND = "autoencoder"


def checkpoint_meta() -> dict:
    """The ``config.json`` keys of a freshly trained autoencoder (``scale_factor`` is measured later)."""
    return {"kind": KIND, "scale_factor": None, "latent_stats": None}


def read_ae_meta(path: str | os.PathLike) -> tuple[Path, dict]:
    """Resolve a checkpoint or run folder and return ``(folder, config.json contents)``; checks the kind."""
    folder = ck.resolve_checkpoint(path)
    meta = ck.load_checkpoint_config(folder)
    if meta.get("kind") != KIND:
        raise ck.CheckpointError(f"{folder / 'config.json'}: not an autoencoder checkpoint (kind "
                                 f"{meta.get('kind')!r}); train one with 'ldmkit train-ae CONFIG'")
    return folder, meta


def load_autoencoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild an autoencoder (eval mode, frozen) from ``model.safetensors`` + ``config.json``."""
    from ldmkit.autoencoders import build_autoencoder
    from ldmkit.autoencoders.config import load_config

    folder, meta = read_ae_meta(path)
    cfg = load_config(None, data=meta["config"])
    ae = build_autoencoder(cfg.model)
    state = ck.read_checkpoint_tensors(folder, "model.safetensors", meta, finite=True)  # no NaN/Inf, not corrupt
    missing, unexpected = ae.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ck.CheckpointError(f"{folder / 'model.safetensors'}: does not fit the model in config.json "
                                 f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})")
    ae.to(device).eval().requires_grad_(False)
    meta["folder"] = str(folder)
    return ae, meta


def write_scale_factor(folder: Path, scale_factor: float, stats: dict) -> None:
    """Store ``scale_factor`` and the statistics it came from in ``config.json`` (atomic replace)."""
    meta = ck.read_json(folder / "config.json")
    meta["scale_factor"] = float(scale_factor)
    meta["latent_stats"] = stats
    tmp = folder / f".config.json.tmp-{os.getpid()}"
    ck.write_json(tmp, meta)
    os.replace(tmp, folder / "config.json")
