"""The whole flow on one page: config -> data, space, process, denoiser -> training loss -> generation.

The first stage trains through the same engine with the GAN train step: ``train_autoencoder(ae_cfg, out)``.

    space   = build_space(cfg)                 # PixelSpace, or an autoencoder's LatentSpace (first_stage)
    process = build_process(cfg)               # GaussianProcess(cfg.diffusion.betas()): schedule, T
    cond_of = build_conditioner(cfg)           # class labels / text / layout / concat -> Cond (tau_theta)
    model   = build_denoiser(cfg, process, cond_of)   # Denoiser(UNet(cfg.unet), ..., context_encoder)
    loss_fn = make_loss_fn(cfg, process, space, cond_of)   # DiffusionLoss: x0 = encode(images); t, eps; losses
    Trainer(LossStep(model, loss_fn, cfg.train), build_data(cfg), cfg.train, out, ...).run()   # = train(cfg, out)
    images  = generate(model, process, space, sample_shape(cfg, space), n=64, sampler="ddim", steps=50)
              # x_T -> sampler -> decode; load_model(path).generate(n=64) does the same for a checkpoint
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ldmkit.conditioning import Conditioner
from ldmkit.config import MODEL_SECTIONS, Config, config_from_data, lookup, to_dict
from ldmkit.data import build_dataset, collate, data_padding
from ldmkit.data import image_shape as data_image_shape
from ldmkit.denoiser import ClassifierFreeGuidance, Denoiser
from ldmkit.diffusion.config import DiffusionConfig
from ldmkit.diffusion.process import GaussianProcess
from ldmkit.latent import CachedLatents, latent_space_for
from ldmkit.networks import UNet
from ldmkit.registry import ConfigError
from ldmkit.samplers import SAMPLERS, make_generators, make_timestep_grid, randn
from ldmkit.training.data_order import DatasetData, TensorData
from ldmkit.types import Batch, Cond

log = logging.getLogger(__name__)


def image_shape(cfg: Config) -> tuple[int, int, int]:
    """``[C, H, W]`` of the training images (pixel space, ``data.pad_to`` included), as the dataset reports it."""
    return data_image_shape(cfg.data)


def build_space(cfg: Config, device: torch.device | str = "cpu"):
    """Where diffusion runs: ``PixelSpace`` or the first stage's latent space (``first_stage: DIR``); its
    ``decode`` returns images at the data's own size (what ``data.pad_to`` added is removed).

    Raises:
        ValueError: when ``unet.in_channels`` differs from the channels of that space.
    """
    space = latent_space_for(cfg.first_stage, device, padding=data_padding(cfg.data))
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
    return cfg.diffusion.build_process()


def build_conditioner(cfg: Config) -> Conditioner:
    """``ldmkit.conditioning.build_conditioner`` with what the data knows: class names and default prompts."""
    from ldmkit.conditioning import build_conditioner as build
    from ldmkit.data import class_names
    from ldmkit.data.captions import default_prompts

    prompts = default_prompts(cfg.data) if cfg.cond.context == "text" else None
    size = tuple(image_shape(cfg)[1:]) if cfg.cond.context == "layout" else None
    return build(cfg, class_names=class_names(cfg.data), prompts=prompts, image_size=size)


def build_denoiser(cfg: Config, process: GaussianProcess, conditioner: Conditioner | None = None) -> Denoiser:
    """The U-Net (output channels doubled when the variance is learned) behind the parameterization, with
    the conditioner's trainable context encoder (``conditioner`` default: ``build_conditioner(cfg)``)."""
    conditioner = build_conditioner(cfg) if conditioner is None else conditioner
    unet_cfg = dataclasses.replace(cfg.unet, learn_variance=cfg.diffusion.learn_variance)
    return Denoiser(UNet(unet_cfg), process.alphas_cumprod, cfg.diffusion.prediction_type,
                    learn_variance=cfg.diffusion.learn_variance, context_encoder=conditioner.context_encoder)


def build_data(cfg: Config):
    """The training data as a BatchSource; Fashion-MNIST takes the in-memory fast path (captions included)."""
    if cfg.data.name == "fashion-mnist" and not cfg.data.hflip:
        from ldmkit.data.captions import CaptionedSource

        data = TensorData(*build_dataset(dataclasses.replace(cfg.data, captions=False)).tensors())
        return CaptionedSource(data, cfg.data.seed) if cfg.data.captions else data
    return DatasetData(build_dataset(cfg.data), collate=collate)


def make_cond(cfg: Config, batch: Batch, conditioner: Conditioner | None = None) -> Cond | None:
    """The condition a batch gives the denoiser of ``cfg`` (``conditioner.from_batch``, before dropout)."""
    conditioner = build_conditioner(cfg) if conditioner is None else conditioner
    return conditioner.from_batch(batch)


class DiffusionLoss:
    """``loss_fn(model, batch) -> (loss, logs)``: encode, draw t and eps, per-example losses, batch mean.

    Args:
        process: the forward process; space: where diffusion runs (pixels or a first stage's latents).
        diffusion: the ``diffusion`` section (objective, variance, timestep sampler, condition dropout).
        conditioner: makes each batch's :class:`Cond` (``build_conditioner``); ``None``: class labels when
            ``num_classes`` is set, else unconditional.
        num_classes: classes of a class-conditional denoiser (``None``: unconditional).

    Its ``state_dict`` (the timestep sampler's loss history, if any) goes into checkpoints for exact resume.
    """

    def __init__(self, process: GaussianProcess, space, diffusion: DiffusionConfig, *,
                 conditioner: Conditioner | None = None, num_classes: int | None = None):
        from ldmkit.conditioning import ClassKind
        from ldmkit.diffusion import create_timestep_sampler

        if conditioner is None:
            conditioner = Conditioner({"class": None if num_classes is None else ClassKind(num_classes)},
                                      num_classes)
        num_classes = conditioner.num_classes
        if diffusion.cond_drop_prob > 0 and not conditioner.is_conditional:
            raise ValueError(f"diffusion.cond_drop_prob={diffusion.cond_drop_prob} needs a conditional model "
                             "(neither unet.num_classes nor cond.context is set)")
        self.conditioner = conditioner
        if diffusion.num_timesteps != process.num_timesteps:
            raise ValueError(f"diffusion.num_timesteps={diffusion.num_timesteps} but the process has "
                             f"{process.num_timesteps} steps")
        self.process, self.space, self.diffusion, self.num_classes = process, space, diffusion, num_classes
        self.timesteps = create_timestep_sampler(diffusion.timestep_sampler, process.num_timesteps)

    def __call__(self, model: torch.nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, Any]]:
        from ldmkit.conditioning.class_label import drop_condition
        from ldmkit.diffusion import training_losses

        d = self.diffusion
        with torch.no_grad():
            cached = batch.extra.get("latent_params")  # latent caching (data.cache_latents, CachedLatents)
            if cached is None:
                x0 = self.space.encode(batch.images)
            else:
                device = batch.images.device
                x0 = self.space.sample_from_params(cached[0].to(device),
                                                   None if cached[1] is None else cached[1].to(device))
        t, weights = self.timesteps.sample(x0.shape[0], device=x0.device)
        cond = self.conditioner.from_batch(batch, self.space)
        if cond is not None and d.cond_drop_prob > 0:
            cond = drop_condition(cond, d.cond_drop_prob, self.num_classes)
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


def make_loss_fn(cfg: Config, process: GaussianProcess, space, conditioner: Conditioner | None = None) -> DiffusionLoss:
    """The training loss of the run config ``cfg`` (``conditioner`` default: ``build_conditioner(cfg)``)."""
    conditioner = build_conditioner(cfg) if conditioner is None else conditioner
    return DiffusionLoss(process, space, cfg.diffusion, conditioner=conditioner)


def sampler_options(sampler: str, *, variance_type: str, clip_denoised: bool, eta: float) -> dict[str, Any]:
    """The options that follow from the model (variance type, clipping in pixel space, eta), restricted
    to those the sampler takes (its ``SamplerSpec.options``)."""
    spec = lookup(SAMPLERS, sampler, "sampler")
    model_options = {"variance_type": variance_type, "clip_denoised": clip_denoised, "eta": eta}
    return {k: v for k, v in model_options.items() if k in spec.options}


@torch.no_grad()
def generate(denoiser: torch.nn.Module, process: GaussianProcess, space, shape: tuple[int, ...], *, n: int,
             sampler: str = "ddim", steps: int | None = 50, eta: float = 0.0, variance_type: str = "fixed_large",
             seed: int = 0, cond: Cond | None = None, guidance_scale: float = 1.0,
             batch_size: int = 64, progress: Callable[[int], None] | None = None,
             callback: Callable[[dict], None] | None = None) -> torch.Tensor:
    """``n`` images in [-1, 1] ``[n, C, H, W]``; image ``i`` depends only on ``seed + i`` (and settings).

    Args:
        space: where ``x_t`` lives (``PixelSpace`` clips x0 to [-1, 1]; a latent space decodes at the end).
        shape: one ``x_t``, ``[C, h, w]`` (see :func:`sample_shape`); larger than the training size works
            for a convolutional denoiser.
        steps: denoiser evaluations (the grid length; ``None``: all T).
        variance_type: the model's (``ddpm`` uses it; the other samplers ignore it).
        cond: the condition of all ``n`` images (``Conditioner.from_request``); its tokens, if any, are
            encoded once here (``Denoiser.encode_context``), then it is sliced per batch.
        guidance_scale: classifier-free guidance against ``null_condition(cond)`` (1 = off).
        callback: called once per sampler step of each batch with the sampler's dict (``x``: the new state,
            ``i``, ``t``, ``prediction``) plus ``x_t`` (the state the step started from) and ``start`` (the
            batch's first image index); ``ldmkit.visualize`` records the reverse process with it.
    """
    spec = lookup(SAMPLERS, sampler, "sampler")
    options = sampler_options(sampler, variance_type=variance_type, clip_denoised=space.clip_denoised,
                              eta=eta)
    grid = make_timestep_grid(spec.grid, process.num_timesteps, steps or process.num_timesteps,
                              alphas_cumprod=process.alphas_cumprod)
    model = denoiser if guidance_scale == 1.0 else ClassifierFreeGuidance(denoiser, guidance_scale)
    device = next(denoiser.parameters()).device
    if cond is not None:
        sizes = {v.shape[0] for f in dataclasses.fields(Cond) if (v := getattr(cond, f.name)) is not None}
        if sizes != {n}:
            raise ValueError(f"generate: cond holds {sorted(sizes)} examples for n={n} images")
        cond = cond.to(device)
        if hasattr(denoiser, "encode_context"):
            cond = denoiser.encode_context(cond)
    out = []
    for start in range(0, n, batch_size):
        idx = range(start, min(n, start + batch_size))
        gens = make_generators([seed + i for i in idx], device)
        x_T = randn((len(idx), *shape), gens, device=device)
        part = None if cond is None else cond.index(slice(start, start + len(idx)))
        hook = None
        if callback is not None:
            state = {"x": x_T}

            def hook(info, state=state, start=start):
                callback({**info, "x_t": state["x"], "start": start})
                state["x"] = info["x"]

        z = spec.fn(model, x_T, grid, process, cond=part, generator=gens, callback=hook, **options)
        out.append(space.decode(z).clamp(-1, 1).cpu())
        if progress is not None:
            progress(len(idx))
    return torch.cat(out)


def make_grid_fn(cfg: Config, process: GaussianProcess, space,
                 conditioner: Conditioner | None = None) -> Callable[[torch.nn.Module, int], Any]:
    """The training loop's ``sample_fn``: a grid of ``sample.num_images`` from the EMA model, conditioned on
    the conditioner's default request (class-balanced labels, default prompts). A concat model (super-
    resolution, inpainting) has no default input image: its condition comes from the first ``num_images``
    training images, as in training (``from_batch``, no dropout, no flips), the same at every preview."""
    from ldmkit.images import make_grid

    conditioner = build_conditioner(cfg) if conditioner is None else conditioner

    def preview_cond(n: int) -> Cond | None:
        if cfg.cond.concat == "none":
            return conditioner.from_request(n, space=space)
        dataset = build_dataset(dataclasses.replace(cfg.data, hflip=False))
        batch = collate([dataset[i] for i in range(min(n, len(dataset)))])
        return conditioner.from_batch(batch, space)

    def sample_fn(ema_model: torch.nn.Module, step: int):
        cond = preview_cond(cfg.sample.num_images)
        sizes = {v.shape[0] for f in dataclasses.fields(Cond) if (v := getattr(cond, f.name, None)) is not None}
        n = sizes.pop() if len(sizes) == 1 else cfg.sample.num_images  # a dataset may hold fewer images
        images = generate(ema_model, process, space, sample_shape(cfg, space), n=n, sampler=cfg.sample.sampler,
                          steps=cfg.sample.steps, eta=cfg.sample.eta, variance_type=cfg.diffusion.variance_type,
                          seed=cfg.sample.seed, cond=cond, guidance_scale=cfg.sample.guidance_scale)
        return make_grid(images, nrow=math.ceil(math.sqrt(n)))

    return sample_fn


@dataclass
class LoadedModel:
    """A trained model as :func:`load_model` rebuilds it."""

    config: Config
    denoiser: Denoiser
    process: GaussianProcess
    space: Any
    step: int
    path: Path
    conditioner: Conditioner | None = None

    def make_cond(self, n: int, *, labels=None, prompts=None, layouts=None, images=None, masks=None) -> Cond | None:
        """The condition of ``n`` images from a request (``Conditioner.from_request``; errors name the value)."""
        conditioner = self.conditioner or build_conditioner(self.config)
        return conditioner.from_request(n, space=self.space, device=next(self.denoiser.parameters()).device,
                                        labels=labels, prompts=prompts, layouts=layouts, images=images,
                                        masks=masks)

    def generate(self, n: int, *, shape: tuple[int, ...] | None = None, labels=None, prompts=None, layouts=None,
                 images=None, masks=None, cond: Cond | None = None, **kwargs) -> torch.Tensor:
        """:func:`generate` with this model's denoiser, process, space and variance type; ``shape`` of one
        ``x_t`` defaults to the training size (:func:`sample_shape`).

        Args:
            labels: class names or indices (repeated to ``n``; default class-balanced ``i mod K``);
            prompts: strings (repeated to ``n``; ``""`` = unconditional); layouts, images, masks: for the
                models that take them. ``cond``: a ready condition instead of those.
        """
        kwargs.setdefault("variance_type", self.config.diffusion.variance_type)
        shape = sample_shape(self.config, self.space) if shape is None else shape
        if cond is None:
            cond = self.make_cond(n, labels=labels, prompts=prompts, layouts=layouts, images=images, masks=masks)
        return generate(self.denoiser, self.process, self.space, shape, n=n, cond=cond, **kwargs)


def load_model(path: str | Path, *, ema: bool = True, device: torch.device | str = "cpu") -> LoadedModel:
    """Rebuild a trained denoiser from a checkpoint folder (or a run folder -> latest checkpoint)."""
    from ldmkit.training import checkpoint as ckpt_io

    ckpt = ckpt_io.resolve_checkpoint(path)
    meta = ckpt_io.load_checkpoint_config(ckpt)
    cfg = config_from_data(meta["config"], source=str(ckpt / "config.json"))
    process = build_process(cfg)
    conditioner = build_conditioner(cfg)
    denoiser = build_denoiser(cfg, process, conditioner)
    weights = ckpt / ("ema.safetensors" if ema and (ckpt / "ema.safetensors").is_file() else "model.safetensors")
    # size + sha256 checked against config.json; NaN/Inf weights refused, naming the file and tensor
    denoiser.load_state_dict(ckpt_io.read_checkpoint_tensors(ckpt, weights.name, meta, finite=True))
    denoiser.to(device).eval()
    return LoadedModel(cfg, denoiser, process, build_space(cfg, device), int(meta["step"]), ckpt, conditioner)


def config_dict(cfg: Config) -> dict:
    """The JSON form stored in checkpoints (round-trips through :func:`ldmkit.config.config_from_data`)."""
    return to_dict(cfg)


# ------------------------------------------------------------------------------------------- training
def train(cfg: Config, out_dir: str | Path, *, resume: bool | str = False, data=None, progress: bool = True,
          resume_hint: str | None = None):
    """Train the diffusion model of ``cfg`` into ``out_dir`` with the one engine (torchrun-aware).

    The first stage's ``scale_factor`` is recorded in the stored config (``first_stage_scale_factor``), so a
    later ``ae-stats`` cannot silently change how this model's latents decode. Returns a ``TrainResult``.
    """
    from ldmkit.training import LossStep, Trainer
    from ldmkit.training.distributed import init_distributed, shutdown

    info = init_distributed(cfg.train.device)
    try:
        torch.manual_seed(cfg.train.seed)  # the same initial weights on every rank
        space = build_space(cfg, info.device)
        if cfg.first_stage is not None and cfg.first_stage_scale_factor is None:
            cfg = dataclasses.replace(cfg, first_stage_scale_factor=space.scale_factor)
        process = build_process(cfg)
        conditioner = build_conditioner(cfg)
        model = build_denoiser(cfg, process, conditioner)
        step = LossStep(model, make_loss_fn(cfg, process, space, conditioner), cfg.train)
        data = build_data(cfg) if data is None else data
        if cfg.data.cache_latents:
            if cfg.first_stage is None:
                raise ConfigError("data.cache_latents=true needs a first stage (first_stage: DIR): pixel-space "
                                  "diffusion has no latents to cache")
            data = CachedLatents(data, space)
        trainer = Trainer(step, data, cfg.train, out_dir,
                          config=config_dict(cfg), config_defaults=config_dict(Config()),
                          sample_fn=make_grid_fn(cfg, process, space, conditioner),
                          dist=info,
                          progress=progress, model_sections=MODEL_SECTIONS, resume_hint=resume_hint)
        if info.is_main:
            from ldmkit.config import dump_yaml

            Path(out_dir).mkdir(parents=True, exist_ok=True)
            (Path(out_dir) / "config.yaml").write_text(dump_yaml(cfg))
            log.info("training %.2fM parameters, %d steps of batch %d on %s x %d -> %s",
                     sum(p.numel() for p in model.parameters()) / 1e6, cfg.train.max_steps,
                     cfg.train.batch_size, info.device, info.world_size, out_dir)
        return trainer.run(resume=resume)
    finally:
        shutdown(info)


AE_MODEL_SECTIONS = ("model", "data.pad_to")  # what a resumed autoencoder run may not change


def autoencoder_images(cfg, split: str | None = None, limit: int | None = None) -> torch.Tensor:
    """Images ``[N, C, S, S]`` in [-1, 1] of an autoencoder run config's dataset (``split`` overrides
    ``data.split``; the first ``limit`` only, default ``train.limit``)."""
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


def train_autoencoder(cfg, out_dir: str | Path, *, resume: bool | str = False, images: torch.Tensor | None = None,
                      progress: bool = True, resume_hint: str | None = None):
    """Train a first-stage autoencoder (``AutoencoderRunConfig``) with the one engine: the GAN train step.

    Args:
        images: training images ``[N, C, S, S]`` in [-1, 1] (default: the config's dataset).
    Returns a ``TrainResult``; checkpoints hold ``model.safetensors`` (the autoencoder alone) and a
    ``config.json`` of kind ``autoencoder`` whose ``scale_factor`` stays null until ``ldmkit ae-stats``.
    """
    from ldmkit.autoencoders import build_autoencoder
    from ldmkit.autoencoders.checkpoint import checkpoint_meta
    from ldmkit.autoencoders.losses import (
        NLayerDiscriminator,
        discriminator_loss,
        generator_loss,
        short_gan_warning,
    )
    from ldmkit.autoencoders.perceptual import build_perceptual
    from ldmkit.images import make_grid
    from ldmkit.training import GANStep, Trainer
    from ldmkit.training.distributed import init_distributed, shutdown

    tc, lc = cfg.train, cfg.loss
    info = init_distributed(tc.device)
    try:
        torch.manual_seed(tc.seed)
        ae = build_autoencoder(cfg.model)
        disc = NLayerDiscriminator(cfg.model.in_channels, lc.disc_channels, lc.disc_layers)
        perceptual = build_perceptual(lc.perceptual, lc.lpips_path, lc.lpips_sha256)
        if perceptual is not None:
            perceptual = perceptual.to(info.device)

        def g_loss(model, discriminator, batch, step):
            recon, posterior = model(batch.images, sample_posterior=tc.sample_posterior)
            loss, logs = generator_loss(batch.images, recon, posterior, last_layer=ae.last_layer,
                                        discriminator=discriminator, perceptual=perceptual, step=step, cfg=lc)
            return loss, logs, recon

        def d_loss(discriminator, batch, recon, step):
            return discriminator_loss(batch.images, recon, discriminator=discriminator, step=step, cfg=lc)

        data = TensorData(autoencoder_images(cfg) if images is None else images)
        preview = data.images[:8]

        def sample_fn(model, step):  # originals above their reconstructions
            model.eval()
            recon, _ = model(preview.to(info.device), sample_posterior=False)
            return make_grid(torch.cat([preview, recon.clamp(-1, 1).cpu()]), nrow=len(preview))

        step = GANStep(ae, disc, g_loss, d_loss, lr=tc.lr, disc_lr=tc.disc_lr, betas=tc.adam_betas)
        trainer = Trainer(step, data, tc, out_dir, config=cfg.to_dict(), sample_fn=sample_fn, dist=info,
                          progress=progress, model_sections=AE_MODEL_SECTIONS,
                          checkpoint_meta=checkpoint_meta(), resume_hint=resume_hint)
        result = trainer.run(resume=resume)
        warning = short_gan_warning(lc, result.step)
        if warning and info.is_main and result.stopped_by not in ("SIGINT", "SIGTERM"):
            log.warning("%s", warning)
        return result
    finally:
        shutdown(info)
