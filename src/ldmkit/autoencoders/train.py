"""Autoencoder training loop: two optimizers (autoencoder, discriminator), two plain loss functions.

The generic diffusion loop takes one model and one ``loss_fn``; a GAN needs two alternating updates, so
this small loop hosts them and reuses the engine's checkpoint primitives and deterministic data order.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import torch

from ldmkit.autoencoders import build_autoencoder
from ldmkit.autoencoders.checkpoint import load_ae_training_state, save_ae_checkpoint
from ldmkit.autoencoders.config import AutoencoderRunConfig
from ldmkit.autoencoders.losses import NLayerDiscriminator, discriminator_loss, generator_loss
from ldmkit.autoencoders.perceptual import build_perceptual
from ldmkit.autoencoders.vq import VQAutoencoder
from ldmkit.training import checkpoint as ck
from ldmkit.training.data_order import DataOrder
from ldmkit.training.distributed import pick_device

log = logging.getLogger(__name__)
MODEL_SECTIONS = ("model", "data.pad_to")


def load_images(cfg: AutoencoderRunConfig, split: str | None = None, limit: int | None = None) -> torch.Tensor:
    """Images ``[N, C, S, S]`` in [-1, 1] of the config's dataset (``split`` overrides ``data.split``;
    the first ``limit`` only, default ``train.limit``)."""
    import dataclasses

    from ldmkit.data import build_dataset

    data_cfg = dataclasses.replace(cfg.data, split=split) if split else cfg.data
    ds = build_dataset(data_cfg)
    limit = cfg.train.limit if limit is None else limit
    n = len(ds) if limit is None else min(limit, len(ds))
    base = getattr(ds, "dataset", ds)
    if hasattr(base, "images_uint8"):  # Fashion-MNIST: convert only the images used
        return base.images_uint8[:n, None].float().div(127.5).sub(1.0)
    if hasattr(base, "tensors"):
        return base.tensors()[0][:n]
    return torch.stack([ds[i]["image"] for i in range(n)])


def forward_ae(ae: torch.nn.Module, x: torch.Tensor, sample_posterior: bool):
    """``(reconstruction, regulariser)``: the KL posterior or the quantiser output."""
    if isinstance(ae, VQAutoencoder):
        return ae(x)
    return ae(x, sample_posterior=sample_posterior)


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop log rows written after the checkpoint a run resumes from (they will be written again)."""
    if path.is_file():
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        path.write_text("".join(line + "\n" for line in rows if json.loads(line).get("step", 0) <= step))


def train_autoencoder(cfg: AutoencoderRunConfig, out_dir: str | os.PathLike, *, resume: bool = False,
                      images: torch.Tensor | None = None, progress: bool = False) -> Path:
    """Train ``cfg`` into ``out_dir`` (``checkpoints/``, ``metrics.jsonl``); returns the final checkpoint.

    Args:
        images: training images (default: the config's dataset), ``[N, C, S, S]`` in [-1, 1].
        resume: continue from the latest checkpoint in ``out_dir`` (its model config must match).
        progress: show a tqdm bar.
    """
    out = Path(out_dir)
    tc, lc = cfg.train, cfg.loss
    device = pick_device(tc.device)
    torch.manual_seed(tc.seed)
    config_dict = cfg.to_dict()
    start = 0
    latest = ck.latest_checkpoint(out) if resume else None
    if not resume and ck.latest_checkpoint(out) is not None:
        raise ck.CheckpointError(f"{out}: already holds checkpoints; pass --resume or choose another --out")
    ae = build_autoencoder(cfg.model).to(device)
    disc = NLayerDiscriminator(cfg.model.in_channels, lc.disc_channels, lc.disc_layers).to(device)
    perceptual = build_perceptual(lc.perceptual, lc.lpips_path, lc.lpips_sha256)
    if perceptual is not None:
        perceptual = perceptual.to(device)
    opt_ae = torch.optim.Adam([p for p in ae.parameters() if p.requires_grad], lr=tc.lr, betas=tc.adam_betas)
    opt_d = torch.optim.Adam(disc.parameters(), lr=tc.disc_lr, betas=tc.adam_betas)
    elapsed = 0.0
    if latest is not None:
        old = ck.load_checkpoint_config(latest)["config"]
        diffs = ck.config_differences(old, config_dict, sections=("model",))
        if diffs:
            raise ck.CheckpointError(f"{latest}: cannot resume with a different model: {'; '.join(diffs)}")
        st = load_ae_training_state(latest)
        ae.load_state_dict(st["model"])
        disc.load_state_dict(st["discriminator"])
        opt_ae.load_state_dict(st["optimizers"]["optimizer"])
        opt_d.load_state_dict(st["optimizers"]["disc_optimizer"])
        ck.restore_rng(*st["rng"])
        start, elapsed = st["step"], float(st["train"].get("elapsed_s", 0.0))
        log.info("resumed from %s at step %d", latest, start)
        _truncate_metrics(out / "metrics.jsonl", start)
    if images is None:
        images = load_images(cfg)
    order = DataOrder(len(images), tc.batch_size, tc.seed)
    out.mkdir(parents=True, exist_ok=True)
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=tc.max_steps, initial=start, desc="train-ae", dynamic_ncols=True)
    t0 = time.perf_counter() - elapsed
    ckpt = latest
    try:
        for step in range(start, tc.max_steps):
            ae.train()
            disc.train()
            x = images[order.indices(step)].to(device)
            recon, reg = forward_ae(ae, x, tc.sample_posterior)
            g_loss, logs = generator_loss(x, recon, reg, last_layer=ae.last_layer, discriminator=disc,
                                          perceptual=perceptual, step=step, cfg=lc)
            if not math.isfinite(float(g_loss.detach())):
                raise FloatingPointError(f"train-ae: autoencoder loss is {float(g_loss.detach())} at step {step}")
            opt_ae.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_ae.step()
            d_loss, dlogs = discriminator_loss(x, recon.detach(), discriminator=disc, step=step, cfg=lc)
            opt_d.zero_grad(set_to_none=True)  # also drops the generator pass's gradients on disc
            if d_loss.requires_grad:
                d_loss.backward()
                opt_d.step()
            logs.update(dlogs)
            done = step + 1
            if done % tc.log_every == 0 or done == tc.max_steps:
                rec = {"step": done, "elapsed_s": round(time.perf_counter() - t0, 2),
                       **{k: round(float(v), 6) for k, v in logs.items()}}
                with open(out / "metrics.jsonl", "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                log.info("step %d %s", done, " ".join(f"{k}={v:.4g}" for k, v in rec.items() if k != "step"))
            if done % tc.checkpoint_every == 0 or done == tc.max_steps:
                ckpt = save_ae_checkpoint(out, done, config=config_dict, autoencoder=ae, discriminator=disc,
                                          optimizers={"optimizer": opt_ae, "disc_optimizer": opt_d},
                                          train_state={"elapsed_s": time.perf_counter() - t0},
                                          keep_last=tc.keep_last)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(l1=f"{float(logs['rec_l1']):.3f}")
    finally:
        if bar is not None:
            bar.close()
    if ckpt is None:
        raise ck.CheckpointError(f"{out}: nothing to train (max_steps={tc.max_steps}, resumed at {start})")
    return ckpt
