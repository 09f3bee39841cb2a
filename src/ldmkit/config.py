"""Typed run configuration: one dataclass per component, strict YAML loading, dotted CLI overrides.

A config file (``configs/ddpm_fmnist.yaml``) has the sections of :class:`Config`: ``data``
(:class:`ldmkit.data.DataConfig`), ``unet`` (:class:`ldmkit.networks.UNetConfig`, or ``preset:`` plus keys),
``diffusion``, ``train``, ``sample``, ``cond`` (:class:`ldmkit.conditioning.config.CondConfig`) and the optional
``first_stage``. Loading is strict: an unknown key,
a value of the wrong type or a value outside a ``Literal`` is a :class:`ConfigError` naming the file, the
dotted key, the value and what is allowed. Overrides such as ``--train.lr=2e-4`` are parsed as YAML
scalars and checked the same way. Registries are plain literal dicts; :func:`lookup` names the valid keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ldmkit.conditioning.config import CondConfig
from ldmkit.data import DataConfig
from ldmkit.diffusion.config import DiffusionConfig
from ldmkit.networks.unet import UNET_PRESETS, UNetConfig
from ldmkit.registry import ConfigError, lookup
from ldmkit.samplers import SAMPLERS
from ldmkit.schema import apply_overrides, from_dict, parse_override, to_dict  # noqa: F401 (re-exported)
from ldmkit.training.config import TrainConfig


# ------------------------------------------------------------------------------------------- sections
@dataclass
class SampleConfig:
    """Sampling defaults of ``ldmkit sample`` and of the grids drawn during training.

    Attributes:
        sampler: a name in ``ldmkit.samplers.SAMPLERS``.
        steps: number of denoising steps (``None``: all T steps).
        eta: DDIM stochasticity (0 = deterministic).
        num_images: images per grid during training.
        seed: base seed; image i uses its own generator seeded from (seed, i).
        guidance_scale: classifier-free guidance scale (1 = off).
    """

    sampler: str = "ddim"
    steps: int | None = 50
    eta: float = 0.0
    num_images: int = 64
    seed: int = 0
    guidance_scale: float = 1.0

    def __post_init__(self):
        lookup(SAMPLERS, self.sampler, "sample.sampler")
        # steps=0 once fell through `steps or T` and silently ran all T steps: refuse it here.
        bad = [] if self.steps is None or self.steps >= 1 else [f"steps={self.steps} must be >= 1 (or null: all T)"]
        if not 0.0 <= self.eta <= 1.0:
            bad.append(f"eta={self.eta} must be in [0, 1]")
        if self.num_images < 1:
            bad.append(f"num_images={self.num_images} must be >= 1")
        if not self.guidance_scale >= 0.0:  # also refuses NaN
            bad.append(f"guidance_scale={self.guidance_scale} must be >= 0 (1 = off)")
        if bad:
            raise ValueError("; ".join(bad))


@dataclass
class Config:
    """A whole run: every section, plus the optional first stage (autoencoder checkpoint folder) for LDMs."""

    data: DataConfig = field(default_factory=DataConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    cond: CondConfig = field(default_factory=CondConfig)
    first_stage: str | None = None
    # The first stage's scale_factor when this model was trained (set by `ldmkit train`); a later
    # `ae-stats` on that autoencoder must not silently change how the model's latents decode.
    first_stage_scale_factor: float | None = None

    def __post_init__(self):
        if self.unet.learn_variance and not self.diffusion.learn_variance:
            raise ValueError(f"unet.learn_variance is set by diffusion.variance_type "
                             f"({self.diffusion.variance_type!r} is fixed); leave it unset")


# Sections that define the model: a resumed run must not change them.
MODEL_SECTIONS = ("unet", "diffusion", "cond", "first_stage", "first_stage_scale_factor", "data.name", "data.pad_to", "data.image_size",
                  "data.channels")


# ------------------------------------------------------------------------------------------- loading
def expand_unet_preset(data: dict) -> dict:
    """``unet: {preset: fmnist_small, dropout: 0.0}`` -> the preset's keys updated by the explicit ones."""
    unet = data.get("unet")
    if not isinstance(unet, dict) or "preset" not in unet:
        return data
    rest = {k: v for k, v in unet.items() if k != "preset"}
    preset = lookup(UNET_PRESETS, unet["preset"], "unet.preset")
    return {**data, "unet": {**{k: list(v) if isinstance(v, tuple) else v for k, v in preset.items()}, **rest}}


def config_from_data(data: Any, overrides: list[str] | None = None, source: str = "config") -> Config:
    """Strictly build a :class:`Config` from parsed YAML/JSON plus overrides; errors start with ``source``."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        data = expand_unet_preset(apply_overrides(data, overrides or []))
        return from_dict(Config, data)
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Load a YAML config file strictly and apply dotted overrides."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config file ({e.strerror or e})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML ({e})") from None
    return config_from_data(data, overrides, source=str(path))


def dump_yaml(cfg: Config) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)
