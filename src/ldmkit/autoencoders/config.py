"""Typed configuration of an autoencoder run, loaded strictly from YAML/JSON dictionaries.

A config file has four sections, each a dataclass below: ``model``, ``loss``, ``data``, ``train``. An
unknown key, a wrong type or an invalid value is an error that names the file, the dotted key and the value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ldmkit.data import DataConfig, image_shape
from ldmkit.registry import ConfigError
from ldmkit.schema import apply_overrides, from_dict, to_dict
from ldmkit.training.config import TrainConfig

ModelType = Literal["kl", "vq"]
PerceptualType = Literal["none", "fmnist", "lpips_vgg"]
PosteriorChoice = Literal["sample", "mode"]


@dataclass
class VQConfig:
    """Vector quantiser (van den Oord et al. 2017) options.

    Attributes:
        num_codes: codebook size K.
        beta: commitment-loss weight.
        ema: update the codebook by exponential moving averages (no codebook loss) instead of gradients.
        decay: EMA decay.
        restart_dead: replace codes whose usage EMA falls below ``dead_threshold`` with encoder outputs.
        dead_threshold: usage EMA (expected assignments per batch) under which a code counts as dead.
        usage_decay: decay of the per-code usage EMA used for dead-code detection.
    """

    num_codes: int = 256
    beta: float = 0.25
    ema: bool = True
    decay: float = 0.99
    restart_dead: bool = True
    dead_threshold: float = 0.03
    usage_decay: float = 0.99


@dataclass
class ModelConfig:
    """Autoencoder architecture. ``f = 2 ** (len(channel_mult) - 1)``; latents are ``[z_channels, H/f, W/f]``.

    For ``type: vq`` the latent dimension ``z_channels`` is also the codebook vector dimension.
    """

    type: ModelType = "kl"
    in_channels: int = 1
    channels: int = 32
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 1
    z_channels: int = 4
    mid_attention: bool = True
    dropout: float = 0.0
    vq: VQConfig = field(default_factory=VQConfig)

    @property
    def factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)


@dataclass
class LossConfig:
    """Autoencoder training loss (Rombach et al. 2022, Eq. 25; Esser et al. 2021, Eq. 5-7).

    L = rec_weight * L1 + perceptual_weight * L_perc + adaptive_weight * disc_weight * L_adv + L_reg, where
    L_reg = kl_weight * KL / (C*H*W) (KL summed over latent dims per image, normalised like the per-pixel L1;
    with this normalisation ``kl_weight = 1e-6`` matches Rombach's summed-loss balance) or
    codebook_weight * (codebook + beta * commitment) for VQ.
    """

    rec_weight: float = 1.0
    perceptual: PerceptualType = "fmnist"
    perceptual_weight: float = 1.0
    lpips_path: str | None = None
    lpips_sha256: str | None = None
    kl_weight: float = 1.0e-6
    codebook_weight: float = 1.0
    disc_start: int = 2000
    disc_weight: float = 0.5
    disc_layers: int = 2
    disc_channels: int = 64
    max_adaptive_weight: float = 1.0e4


@dataclass
class AETrainConfig(TrainConfig):
    """The training engine's ``TrainConfig`` with the autoencoder's defaults and three fields of its own.

    Both Adam optimizers (autoencoder, discriminator) follow ``lr_schedule`` / ``warmup_steps`` scaled to their
    own rate. No EMA is kept of an autoencoder (``ema_decay`` must stay 0).

    Attributes:
        disc_lr: Adam learning rate of the discriminator (``lr`` is the autoencoder's).
        limit: train on the first ``limit`` images only (None: all).
        sample_posterior: KL models decode a posterior sample (True, Rombach et al.) or its mode.
    """

    max_steps: int = 3000
    batch_size: int = 64
    lr: float = 2.0e-4
    adam_betas: tuple[float, float] = (0.5, 0.9)  # GAN practice
    warmup_steps: int = 0
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    log_every: int = 100
    sample_every: int = 1000
    checkpoint_every: int = 1000
    keep_last: int = 2
    disc_lr: float = 2.0e-4
    limit: int | None = None
    sample_posterior: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.ema_decay != 0.0:
            raise ValueError(f"ema_decay={self.ema_decay}: train-ae keeps no EMA of the autoencoder; leave it 0")
        if self.disc_lr <= 0:
            raise ValueError(f"disc_lr={self.disc_lr} must be positive")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit={self.limit} must be >= 1 (or null for all images)")


@dataclass
class AutoencoderRunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: AETrainConfig = field(default_factory=AETrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)


def validate(cfg: AutoencoderRunConfig, where: str) -> AutoencoderRunConfig:
    """Value checks that types alone cannot express."""
    m = cfg.model
    if not 1 <= len(m.channel_mult) <= 4:
        raise ConfigError(f"{where}: model.channel_mult must have 1-4 entries (f = 1, 2, 4, 8), "
                          f"got {m.channel_mult}")
    for key, val in (("model.channels", m.channels), ("model.z_channels", m.z_channels),
                     ("model.num_res_blocks", m.num_res_blocks), ("model.vq.num_codes", m.vq.num_codes),
                     ("train.max_steps", cfg.train.max_steps), ("train.batch_size", cfg.train.batch_size)):
        if val < 1:
            raise ConfigError(f"{where}: {key} must be >= 1, got {val}")
    lc = cfg.loss
    for key, val in (("loss.rec_weight", lc.rec_weight), ("loss.perceptual_weight", lc.perceptual_weight),
                     ("loss.kl_weight", lc.kl_weight), ("loss.codebook_weight", lc.codebook_weight),
                     ("loss.disc_weight", lc.disc_weight), ("loss.disc_start", lc.disc_start),
                     ("model.vq.beta", m.vq.beta), ("model.dropout", m.dropout)):
        if val < 0:
            raise ConfigError(f"{where}: {key} must be >= 0, got {val}")
    if lc.disc_layers < 1 or lc.disc_channels < 1:
        raise ConfigError(f"{where}: loss.disc_layers and loss.disc_channels must be >= 1, got "
                          f"{lc.disc_layers} and {lc.disc_channels}")
    if not 0.0 < m.vq.decay < 1.0:
        raise ConfigError(f"{where}: model.vq.decay must be in (0, 1), got {m.vq.decay}")
    size = cfg.data.image_size or cfg.data.pad_to or 28
    if cfg.data.hflip:
        raise ConfigError(f"{where}: data.hflip is not supported by train-ae; set it to false")
    if size % m.factor:
        raise ConfigError(f"{where}: image size {size} (data.pad_to) is not divisible by f = {m.factor} "
                          f"(model.channel_mult has {len(m.channel_mult)} levels); use data.pad_to: 32")
    if cfg.loss.perceptual == "lpips_vgg" and not cfg.loss.lpips_path:
        raise ConfigError(f"{where}: loss.perceptual is 'lpips_vgg' but loss.lpips_path is not set")
    if cfg.data.name != "folder" or cfg.data.image_size is not None:  # reads no file
        channels = image_shape(cfg.data)[0]
        if m.in_channels != channels:
            raise ConfigError(f"{where}: model.in_channels={m.in_channels} but the images of data.name="
                              f"{cfg.data.name!r} have {channels} channels; set model.in_channels: {channels}")
        if lc.perceptual == "fmnist" and lc.perceptual_weight > 0 and channels != 1:
            raise ConfigError(f"{where}: loss.perceptual='fmnist' (a Fashion-MNIST classifier) needs 1-channel "
                              f"images, but data.name={cfg.data.name!r} has {channels}; set loss.perceptual: none "
                              "(or lpips_vgg with loss.lpips_path)")
    return cfg


def load_config(path: str | Path | None, overrides: list[str] | None = None,
                data: dict | None = None, source: str | None = None) -> AutoencoderRunConfig:
    """Load an autoencoder run config from a YAML file (or ``data``), apply overrides, validate strictly.
    Error messages start with ``source`` (default: the path, or ``<dict>``)."""
    import yaml

    where = source or (str(path) if path is not None else "<dict>")
    if data is None:
        if path is None:
            raise ConfigError("load_config needs a path or a dict")
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: config file not found")
        try:
            data = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: the top level must be a mapping of sections (model, loss, data, train)")
    try:
        cfg = from_dict(AutoencoderRunConfig, apply_overrides(data, list(overrides or [])))
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return validate(cfg, where)
