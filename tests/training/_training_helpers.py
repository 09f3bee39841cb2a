"""Small models, data and configs shared by the training tests (everything runs in well under a second)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ldmkit.config import TrainConfig, config_from_data, to_dict
from ldmkit.training.data_order import TensorData

TINY_UNET = {"in_channels": 1, "model_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1,
             "attention_levels": [1], "num_heads": 2, "norm_groups": 4}


def toy_data(n: int = 40, size: int = 8, seed: int = 0) -> TensorData:
    g = torch.Generator().manual_seed(seed)
    levels = torch.randint(0, 256, (n, 1, size, size), generator=g)  # 8-bit images, as real data
    return TensorData(levels.float() / 127.5 - 1, torch.randint(0, 3, (n,), generator=g))


def toy_model(seed: int = 0, size: int = 8) -> torch.nn.Module:
    torch.manual_seed(seed)
    d = size * size
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(d, 16), torch.nn.Tanh(), torch.nn.Linear(16, d))


def noisy_loss(model, batch):
    """A denoising regression that draws noise from the global RNG (like the diffusion loss does)."""
    noise = torch.randn_like(batch.images)
    out = model(batch.images + 0.5 * noise)
    loss = ((out - batch.images.flatten(1)) ** 2).mean()
    return loss, {"noise_mean": noise.mean()}


def train_cfg(**kw) -> TrainConfig:
    base = {"lr": 1e-2, "warmup_steps": 2, "batch_size": 8, "max_steps": 10, "log_every": 1,
            "checkpoint_every": 5, "sample_every": 0, "keep_last": 3, "ema_decay": 0.9, "seed": 3}
    base.update(kw)
    return TrainConfig(**base)


def tiny_config(**sections):
    """A full diffusion Config with a tiny U-Net, T = 40, on 8x8 images."""
    data = {"unet": dict(TINY_UNET), "diffusion": {"num_timesteps": 40},
            "train": {"lr": 1e-3, "warmup_steps": 2, "batch_size": 8, "max_steps": 12, "log_every": 1,
                      "checkpoint_every": 4, "sample_every": 0, "ema_decay": 0.9, "seed": 1},
            "sample": {"steps": 3, "num_images": 4}}
    for k, v in sections.items():
        data[k] = {**data.get(k, {}), **v}
    return config_from_data(data)


def config_json(cfg) -> dict:
    return json.loads(json.dumps(to_dict(cfg)))


def metric_losses(run_dir: Path) -> list[tuple[int, float]]:
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"]) for r in rows]


def state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def plain_loss(model, batch):
    """A deterministic regression loss (no random draws), for comparing processes exactly."""
    out = model(batch.images)
    return ((out - batch.images.flatten(1).flip(1)) ** 2).mean(), {}


def loss_trainer(model, loss_fn, data, cfg, out, **kw):
    """A Trainer running the one-model ``LossStep`` (AdamW + EMA) of ``loss_fn``."""
    from ldmkit.training import LossStep, Trainer

    return Trainer(LossStep(model, loss_fn, cfg), data, cfg, out, **kw)
