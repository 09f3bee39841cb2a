"""The whole flow on one page: config -> data, space, process, denoiser -> training loss -> generation.

    space   = build_space(cfg)                 # PixelSpace, or an autoencoder's LatentSpace (first_stage)
    process = build_process(cfg)               # GaussianProcess(get_betas(schedule, T))
    model   = build_denoiser(cfg, process)     # Denoiser(UNet(cfg.unet), alphas_cumprod, prediction_type)
    loss_fn = make_loss_fn(cfg, process, space)   # x0 = encode(images); t, eps; training_losses(...)
    Trainer(model, loss_fn, build_data(cfg), cfg.train, out, config=config_dict(cfg)).run()
    images  = generate(model, process, cfg, n=64, sampler="ddim", steps=50)   # x_T -> sampler -> decode
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ldmkit.config import Config, config_from_data, lookup, to_dict
from ldmkit.data import DataConfig, build_dataset, collate
from ldmkit.denoiser import ClassifierFreeGuidance, Denoiser
from ldmkit.diffusion.process import GaussianProcess
from ldmkit.diffusion.schedules import get_betas
from ldmkit.latent import PixelSpace, latent_space_for
from ldmkit.networks import UNet
from ldmkit.samplers import DEFAULT_GRID, SAMPLERS, make_generators, randn
from ldmkit.samplers.grids import make_grid as make_timestep_grid
from ldmkit.training.data_order import DatasetData, TensorData
from ldmkit.types import Batch, Cond

# Image shape (channels, size) of each dataset before any first stage; "folder" needs data.image_size.
IMAGE_SHAPES: dict[str, Callable[[DataConfig], tuple[int, int]]] = {
    "fashion-mnist": lambda d: (1, d.pad_to or 28),
    "shapes": lambda d: (3, d.image_size or 32),
    "folder": lambda d: (d.channels or 3, d.image_size or 0),
}


def image_shape(cfg: Config) -> tuple[int, int, int]:
    """``[C, H, W]`` of the training images (pixel space)."""
    channels, size = lookup(IMAGE_SHAPES, cfg.data.name, "data.name")(cfg.data)
    if size <= 0:
        raise ValueError(f"data.image_size must be set for data.name={cfg.data.name!r}")
    return channels, size, size


def build_space(cfg: Config, device: torch.device | str = "cpu"):
    """Where diffusion runs: ``PixelSpace()`` or the first stage's latent space (``first_stage: DIR``).

    Raises:
        ValueError: when ``unet.in_channels`` differs from the channels of that space.
    """
    space = latent_space_for(cfg.first_stage, device)
    channels = space.latent_shape(image_shape(cfg))[0]
    if cfg.unet.in_channels != channels:
        where = f"the first stage {cfg.first_stage} has {channels} latent channels" if cfg.first_stage else \
            f"the images of data.name={cfg.data.name!r} have {channels} channels"
        raise ValueError(f"unet.in_channels={cfg.unet.in_channels} but {where}; set --unet.in_channels={channels}")
    trained_scale = cfg.first_stage_scale_factor
    if trained_scale is not None and trained_scale != space.scale_factor:
        raise ValueError(f"first stage {cfg.first_stage} now has scale_factor {space.scale_factor!r}, but this "
                         f"model was trained with {trained_scale!r} (was ae-stats run again?); restore that value "
                         "in the autoencoder's config.json or retrain the diffusion model")
    return space


def sample_shape(cfg: Config, space) -> tuple[int, int, int]:
    """Shape of one ``x_t`` (image, or latent with a first stage)."""
    return tuple(space.latent_shape(image_shape(cfg)))


def build_process(cfg: Config) -> GaussianProcess:
    """The forward process of ``cfg.diffusion`` (float64 tables, base timesteps)."""
    return GaussianProcess(get_betas(cfg.diffusion.schedule, cfg.diffusion.num_timesteps))


def build_denoiser(cfg: Config, process: GaussianProcess) -> Denoiser:
    """The U-Net (output channels doubled when the variance is learned) behind the parameterization."""
    unet_cfg = dataclasses.replace(cfg.unet, learn_variance=cfg.diffusion.learn_variance)
    return Denoiser(UNet(unet_cfg), process.alphas_cumprod, cfg.diffusion.prediction_type,
                    learn_variance=cfg.diffusion.learn_variance)


def build_data(cfg: Config):
    """The training data as a BatchSource; Fashion-MNIST takes the in-memory fast path."""
    dataset = build_dataset(cfg.data)
    if cfg.data.name == "fashion-mnist" and not cfg.data.hflip:
        return TensorData(*dataset.tensors())
    return DatasetData(dataset, collate=collate)


def make_cond(cfg: Config, batch: Batch) -> Cond | None:
    """The condition a batch gives the denoiser (class labels for a class-conditional U-Net)."""
    if cfg.unet.num_classes is None:
        return None
    if batch.labels is None:
        raise ValueError("unet.num_classes is set but the data has no labels")
    return Cond(class_labels=batch.labels)


class DiffusionLoss:
    """``loss_fn(model, batch) -> (loss, logs)``: encode, draw t and eps, per-example losses, batch mean.

    Its ``state_dict`` (the timestep sampler's loss history, if any) goes into checkpoints for exact resume.
    """

    def __init__(self, cfg: Config, process: GaussianProcess, space):
        from ldmkit.diffusion import create_timestep_sampler

        self.cfg, self.process, self.space = cfg, process, space
        self.timesteps = create_timestep_sampler(cfg.diffusion.timestep_sampler, process.num_timesteps)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        from ldmkit.conditioning.class_label import drop_condition
        from ldmkit.diffusion import training_losses

        d = self.cfg.diffusion
        with torch.no_grad():
            x0 = self.space.encode(batch.images)
        t, weights = self.timesteps.sample(x0.shape[0], device=x0.device)
        cond = make_cond(self.cfg, batch)
        if cond is not None and d.cond_drop_prob > 0:
            cond = drop_condition(cond, d.cond_drop_prob, self.cfg.unet.num_classes)
        terms = training_losses(model, self.process, x0, t, cond=cond, loss_type=d.loss_type,
                                variance_type=d.variance_type, prediction_type=d.prediction_type,
                                vlb_weight=d.vlb_weight, min_snr_gamma=d.min_snr_gamma)
        self.timesteps.update_with_losses(t, terms["loss"].detach())
        logs = {k: v.detach().mean() for k, v in terms.items() if k != "loss"}
        return (terms["loss"] * weights).mean(), logs

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.timesteps.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.timesteps.load_state_dict(state)


def make_loss_fn(cfg: Config, process: GaussianProcess, space) -> DiffusionLoss:
    return DiffusionLoss(cfg, process, space)


def sampler_options(cfg: Config, sampler: str, eta: float) -> dict[str, Any]:
    """Options of each sampler that follow from the model (variance type, clipping in pixel space)."""
    clip = cfg.first_stage is None
    options: dict[str, dict[str, Any]] = {
        "ddpm": {"variance_type": cfg.diffusion.variance_type, "clip_denoised": clip},
        "ddim": {"eta": eta, "clip_denoised": clip},
        "dpmpp_2m": {"clip_denoised": clip},
    }
    return lookup(options, sampler, "sampler")


@torch.no_grad()
def generate(denoiser: torch.nn.Module, process: GaussianProcess, cfg: Config, *, n: int, space=None,
             sampler: str = "ddim", steps: int | None = 50, eta: float = 0.0, seed: int = 0,
             labels: torch.Tensor | None = None, guidance_scale: float = 1.0, batch_size: int = 64,
             progress: Callable[[int], None] | None = None) -> torch.Tensor:
    """``n`` images in [-1, 1] ``[n, C, H, W]``; image ``i`` depends only on ``seed + i`` (and settings)."""
    space = space or PixelSpace()
    sample = lookup(SAMPLERS, sampler, "sampler")
    options = sampler_options(cfg, sampler, eta)
    # DPM-Solver++ is accurate on a grid uniform in log-SNR, not in t (see benchmarks/sampler_accuracy.py)
    grid = make_timestep_grid(DEFAULT_GRID[sampler], process.num_timesteps, steps or process.num_timesteps,
                              alphas_cumprod=process.alphas_cumprod)
    model = denoiser if guidance_scale == 1.0 else ClassifierFreeGuidance(denoiser, guidance_scale)
    device = next(denoiser.parameters()).device
    shape = sample_shape(cfg, space)
    out = []
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        gens = make_generators([seed + i for i in idx], device)
        x_T = randn((len(idx), *shape), gens, device=device)
        cond = None if labels is None else Cond(class_labels=labels[start:start + len(idx)].to(device))
        z = sample(model, x_T, grid, process, cond=cond, generator=gens, **options)
        out.append(space.decode(z).clamp(-1, 1).cpu())
        if progress is not None:
            progress(len(idx))
    return torch.cat(out)


def make_grid_fn(cfg: Config, process: GaussianProcess, space) -> Callable[[torch.nn.Module, int], Any]:
    """The training loop's ``sample_fn``: a grid of ``sample.num_images`` from the EMA model."""
    from ldmkit.images import make_grid

    def sample_fn(ema_model: torch.nn.Module, step: int):
        n = cfg.sample.num_images
        labels = None
        if cfg.unet.num_classes is not None:
            labels = torch.arange(n) % cfg.unet.num_classes
        images = generate(ema_model, process, cfg, n=n, space=space, sampler=cfg.sample.sampler,
                          steps=cfg.sample.steps, eta=cfg.sample.eta, seed=cfg.sample.seed, labels=labels,
                          guidance_scale=cfg.sample.guidance_scale)
        return make_grid(images, nrow=math.ceil(math.sqrt(n)))

    return sample_fn


@dataclass
class LoadedModel:
    config: Config
    denoiser: Denoiser
    process: GaussianProcess
    space: Any
    step: int
    path: Path


def load_model(path: str | Path, *, ema: bool = True, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild a trained denoiser from a checkpoint folder (or a run folder -> latest checkpoint)."""
    from ldmkit.training import checkpoint as ckpt_io

    ckpt = ckpt_io.resolve_checkpoint(path)
    meta = ckpt_io.load_checkpoint_config(ckpt)
    cfg = config_from_data(meta["config"], source=str(ckpt / "config.json"))
    process = build_process(cfg)
    denoiser = build_denoiser(cfg, process)
    weights = ckpt / ("ema.safetensors" if ema and (ckpt / "ema.safetensors").is_file() else "model.safetensors")
    denoiser.load_state_dict(ckpt_io.read_tensors(weights))
    denoiser.to(device).eval()
    return LoadedModel(cfg, denoiser, process, build_space(cfg, device), int(meta["step"]), ckpt)


def config_dict(cfg: Config) -> dict:
    """The JSON form stored in checkpoints (round-trips through :func:`ldmkit.config.config_from_data`)."""
    return to_dict(cfg)
