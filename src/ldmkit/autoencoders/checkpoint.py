"""Autoencoder checkpoints: the training engine's folder layout and primitives, plus the discriminator.

A folder ``RUN/checkpoints/step_XXXXXXX/`` holds ``config.json`` (``{"format_version", "ldmkit_version",
"kind": "autoencoder", "step", "config", "scale_factor", "latent_stats"}``), ``model.safetensors`` (the
autoencoder alone: it rebuilds with no other file), and for resuming ``discriminator.safetensors``,
``optimizer.safetensors`` / ``disc_optimizer.safetensors`` (+ their JSON halves in ``state.json``) and
``rng.safetensors``. Written under a temporary name and renamed into place, like the engine's checkpoints.
``scale_factor`` stays ``null`` until ``ldmkit ae-stats`` measures it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ldmkit.training import checkpoint as ck

KIND = "autoencoder"


def save_ae_checkpoint(run_dir: str | os.PathLike, step: int, *, config: dict, autoencoder: nn.Module,
                       discriminator: nn.Module | None = None, optimizers: dict[str, torch.optim.Optimizer] | None = None,
                       train_state: dict | None = None, keep_last: int = 2) -> Path:
    """Write one checkpoint atomically and prune older ones beyond ``keep_last``."""
    from ldmkit import __version__

    root = Path(run_dir) / ck.CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    ck._remove_debris(root)
    final = root / ck.checkpoint_name(step)
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    tmp.mkdir()
    ck.write_tensors(tmp / "model.safetensors", autoencoder.state_dict())
    if discriminator is not None:
        ck.write_tensors(tmp / "discriminator.safetensors", discriminator.state_dict())
    state: dict[str, Any] = {"step": step, "format_version": ck.FORMAT_VERSION, "optimizers": {}}
    for name, opt in (optimizers or {}).items():
        tensors, meta = ck.optimizer_to_tensors(opt.state_dict())
        ck.write_tensors(tmp / f"{name}.safetensors", tensors)
        state["optimizers"][name] = meta
    rng_tensors, state["rng"] = ck.capture_rng()
    ck.write_tensors(tmp / "rng.safetensors", rng_tensors)
    state["train"] = train_state or {}
    ck.write_json(tmp / "state.json", state)
    ck.write_json(tmp / "config.json", {"format_version": ck.FORMAT_VERSION, "ldmkit_version": __version__,
                                        "kind": KIND, "step": step, "config": config,
                                        "scale_factor": None, "latent_stats": None})
    ck._fsync_dir(tmp)
    if final.exists():
        ck._discard(final)
    os.rename(tmp, final)
    ck._fsync_dir(root)
    for old in ck.list_checkpoints(run_dir)[:-keep_last]:
        ck._discard(old)
    return final


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
    state = ck.read_tensors(folder / "model.safetensors")
    missing, unexpected = ae.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ck.CheckpointError(f"{folder / 'model.safetensors'}: does not fit the model in config.json "
                                 f"(missing {list(missing)[:5]}, unexpected {list(unexpected)[:5]})")
    ae.to(device).eval().requires_grad_(False)
    meta["folder"] = str(folder)
    return ae, meta


def load_ae_training_state(folder: Path) -> dict:
    """Tensors and JSON needed to resume: model, discriminator, optimizers, RNG, loop state."""
    state = ck.read_json(folder / "state.json")
    if state.get("format_version") != ck.FORMAT_VERSION:
        raise ck.CheckpointError(f"{folder / 'state.json'}: unsupported format_version {state.get('format_version')!r}")
    out = {"step": int(state["step"]), "train": state.get("train", {}),
           "model": ck.read_tensors(folder / "model.safetensors"),
           "rng": (ck.read_tensors(folder / "rng.safetensors"), state["rng"]), "optimizers": {}}
    if (folder / "discriminator.safetensors").is_file():
        out["discriminator"] = ck.read_tensors(folder / "discriminator.safetensors")
    for name, meta in state.get("optimizers", {}).items():
        out["optimizers"][name] = ck.optimizer_from_tensors(ck.read_tensors(folder / f"{name}.safetensors"), meta)
    return out


def write_scale_factor(folder: Path, scale_factor: float, stats: dict) -> None:
    """Store ``scale_factor`` and the statistics it came from in ``config.json`` (atomic replace)."""
    meta = ck.read_json(folder / "config.json")
    meta["scale_factor"] = float(scale_factor)
    meta["latent_stats"] = stats
    tmp = folder / f".config.json.tmp-{os.getpid()}"
    ck.write_json(tmp, meta)
    os.replace(tmp, folder / "config.json")
