"""Typed run configuration: one dataclass per component, strict YAML loading, dotted CLI overrides.

A config file (``configs/ddpm_fmnist.yaml``) has the sections of :class:`Config`: ``data``
(:class:`ldmkit.data.DataConfig`), ``unet`` (:class:`ldmkit.networks.UNetConfig`, or ``preset:`` plus keys),
``diffusion``, ``train``, ``sample`` and the optional ``first_stage``. Loading is strict: an unknown key,
a value of the wrong type or a value outside a ``Literal`` is a :class:`ConfigError` naming the file, the
dotted key, the value and what is allowed. Overrides such as ``--train.lr=2e-4`` are parsed as YAML
scalars and checked the same way. Registries are plain literal dicts; :func:`lookup` names the valid keys.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ldmkit.data import DataConfig
from ldmkit.diffusion import SCHEDULES, TIMESTEP_SAMPLERS, LossType, PredictionType, VarianceType
from ldmkit.networks.unet import UNET_PRESETS, UNetConfig

LRSchedule = Literal["constant", "cosine"]
SamplerName = Literal["ddpm", "ddim", "dpmpp_2m"]


class ConfigError(ValueError):
    """An unknown key, a wrong type or a disallowed value; the message names key, value and what is allowed."""


# ------------------------------------------------------------------------------------------- sections
@dataclass
class DiffusionConfig:
    """The forward process and the training objective (Ho et al. 2020; Nichol & Dhariwal 2021).

    Attributes:
        schedule: a name in ``ldmkit.diffusion.SCHEDULES`` (``linear``: Ho et al.; ``cosine``: Nichol &
            Dhariwal Eq. 17).
        num_timesteps: T.
        prediction_type: what the network outputs (``eps``, ``x0`` or ``v``).
        variance_type: ``fixed_small`` (beta-tilde), ``fixed_large`` (beta), ``learned`` (log-variance) or
            ``learned_range`` (interpolation v, Nichol & Dhariwal Eq. 15).
        loss_type: ``simple`` (L_simple), ``vlb`` (L_vlb) or ``hybrid`` (L_simple + lambda L_vlb).
        vlb_weight: lambda of L_hybrid (Nichol & Dhariwal use 0.001).
        min_snr_gamma: weight the MSE by min-SNR-gamma (Hang et al. 2023); ``None`` = off.
        timestep_sampler: ``uniform`` or ``loss_second_moment`` (importance sampling, N&D Eq. 18).
        cond_drop_prob: probability of replacing an example's condition by the null condition during
            training (classifier-free guidance, Ho & Salimans 2022); 0 for unconditional models.
    """

    schedule: str = "linear"
    num_timesteps: int = 1000
    prediction_type: PredictionType = "eps"
    variance_type: VarianceType = "fixed_large"
    loss_type: LossType = "simple"
    vlb_weight: float = 0.001
    min_snr_gamma: float | None = None
    timestep_sampler: str = "uniform"
    cond_drop_prob: float = 0.0

    def __post_init__(self):
        lookup(SCHEDULES, self.schedule, "diffusion.schedule")
        lookup(TIMESTEP_SAMPLERS, self.timestep_sampler, "diffusion.timestep_sampler")
        if self.num_timesteps < 1:
            raise ValueError(f"num_timesteps={self.num_timesteps} must be >= 1")
        if not 0.0 <= self.cond_drop_prob <= 1.0:
            raise ValueError(f"cond_drop_prob={self.cond_drop_prob} must be in [0, 1]")
        learned = self.learn_variance
        if (self.loss_type == "simple" and learned) or (self.loss_type == "hybrid" and not learned):
            raise ValueError(f"loss_type={self.loss_type!r} does not fit variance_type={self.variance_type!r}: "
                             "'simple' goes with fixed_small/fixed_large, 'hybrid' with learned/learned_range")

    @property
    def learn_variance(self) -> bool:
        return self.variance_type in ("learned", "learned_range")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping of the training loop.

    Attributes:
        lr: peak AdamW learning rate, reached after ``warmup_steps`` of linear warm-up.
        lr_schedule: after warm-up, ``constant`` or ``cosine`` decay to ``min_lr_ratio * lr`` at ``max_steps``.
        batch_size: the global batch per optimizer step (split over processes and accumulation steps).
        grad_accum: micro-batches accumulated per optimizer step.
        grad_clip: maximum global gradient norm (0 disables clipping).
        ema_decay, ema_warmup: EMA of the weights; warm-up uses ``min(decay, (1+n)/(10+n))``.
        log_every, sample_every, checkpoint_every: periods in optimizer steps (0 disables sampling).
        max_minutes: optional wall-clock budget of this invocation: when it is spent the loop writes a
            checkpoint and stops early (``--resume`` continues); ``None`` = run to ``max_steps``.
        keep_last: how many checkpoints to keep (at least 1).
        bf16: autocast the forward pass to bfloat16 (off by default; fp32 on CPU).
        compile: wrap the model in ``torch.compile``.
        device: ``auto`` (accelerator if present, else CPU) or a torch device string.
    """

    lr: float = 2e-4
    weight_decay: float = 0.0
    adam_betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 500
    lr_schedule: LRSchedule = "constant"
    min_lr_ratio: float = 0.0
    batch_size: int = 64
    grad_accum: int = 1
    grad_clip: float = 1.0
    ema_decay: float = 0.9999
    ema_warmup: bool = True
    max_steps: int = 10000
    max_minutes: float | None = None
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 1000
    keep_last: int = 3
    seed: int = 0
    bf16: bool = False
    compile: bool = False
    device: str = "auto"

    def __post_init__(self):
        bad = [f"{k}={getattr(self, k)} must be positive" for k in
               ("lr", "batch_size", "grad_accum", "max_steps", "log_every", "checkpoint_every", "keep_last")
               if getattr(self, k) <= 0]
        bad += [f"{k}={getattr(self, k)} must be >= 0" for k in
                ("weight_decay", "warmup_steps", "grad_clip", "sample_every", "seed") if getattr(self, k) < 0]
        if self.max_minutes is not None and self.max_minutes <= 0:
            bad.append(f"max_minutes={self.max_minutes} must be positive (or null)")
        if not 0.0 <= self.ema_decay < 1.0:
            bad.append(f"ema_decay={self.ema_decay} must be in [0, 1)")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            bad.append(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if self.batch_size > 0 and self.grad_accum > 0 and self.batch_size % self.grad_accum:
            bad.append(f"batch_size={self.batch_size} must be divisible by grad_accum={self.grad_accum}")
        if bad:
            raise ValueError("; ".join(bad))


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

    sampler: SamplerName = "ddim"
    steps: int | None = 50
    eta: float = 0.0
    num_images: int = 64
    seed: int = 0
    guidance_scale: float = 1.0


@dataclass
class Config:
    """A whole run: every section, plus the optional first stage (autoencoder checkpoint folder) for LDMs."""

    data: DataConfig = field(default_factory=DataConfig)
    unet: UNetConfig = field(default_factory=UNetConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    first_stage: str | None = None
    # The first stage's scale_factor when this model was trained (set by `ldmkit train`); a later
    # `ae-stats` on that autoencoder must not silently change how the model's latents decode.
    first_stage_scale_factor: float | None = None

    def __post_init__(self):
        if self.unet.learn_variance and not self.diffusion.learn_variance:
            raise ValueError(f"unet.learn_variance is set by diffusion.variance_type "
                             f"({self.diffusion.variance_type!r} is fixed); leave it unset")


# Sections that define the model: a resumed run must not change them.
MODEL_SECTIONS = ("unet", "diffusion", "first_stage", "first_stage_scale_factor", "data.name", "data.pad_to", "data.image_size",
                  "data.channels")


# ------------------------------------------------------------------------------------------ registries
def lookup(registry: dict[str, Any], name: str, what: str) -> Any:
    """``registry[name]``, or a :class:`ConfigError` listing the valid names (and the closest one)."""
    if name in registry:
        return registry[name]
    close = difflib.get_close_matches(str(name), list(registry), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown {what} {name!r}; valid: {', '.join(sorted(registry))}{hint}")


# -------------------------------------------------------------------------------------- strict parsing
_FLOAT_RE = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?(inf|nan)$", re.IGNORECASE)


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(tp))
    if tp is type(None):
        return "null"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    if origin in (list, tuple):
        return f"a list ({tp})".replace("typing.", "")
    return getattr(tp, "__name__", str(tp))


def _coerce(tp: Any, value: Any, key: str) -> Any:
    """Check ``value`` against the annotation ``tp``; returns the value converted (lists -> tuples etc.)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)

    def bad(extra: str = "") -> ConfigError:
        return ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r} ({type(value).__name__}){extra}")

    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, key)
    if origin is Literal:
        if value not in args or isinstance(value, bool) != any(isinstance(a, bool) for a in args):
            close = difflib.get_close_matches(str(value), [str(a) for a in args], n=1)
            raise bad(f"; did you mean {close[0]!r}?" if close else "")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, key)
            except ConfigError:
                pass
        raise bad()
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool):
            raise bad()
        if isinstance(value, (int, float)):
            return float(value)
        # YAML 1.1 reads "2e-4" (no dot) as a string; accept any plain float literal.
        if isinstance(value, str) and _FLOAT_RE.match(value.strip()):
            return float(value)
        raise bad()
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise bad()
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise bad(f"; expected {len(args)} items")
            return tuple(_coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
        item = args[0] if args else Any
        items = [_coerce(item, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise bad()
        vt = args[1] if args else Any
        return {str(k): _coerce(vt, v, f"{key}.{k}") for k, v in value.items()}
    raise ConfigError(f"{key}: unsupported annotation {tp!r} in a config dataclass")


def from_dict(cls: type, data: Any, key: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping, strictly (unknown keys and wrong types raise)."""
    where = key or "the config"
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping of {cls.__name__} keys, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for k, v in data.items():
        path = f"{key}.{k}" if key else str(k)
        if k not in names:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{path}: unknown key{hint}; valid keys in {where}: {', '.join(names)}")
        kwargs[k] = _coerce(hints[k], v, path)
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:  # a component's own __post_init__ validation
        raise ConfigError(f"{where}: {e}") from e


def to_dict(obj: Any) -> Any:
    """A dataclass as plain JSON/YAML data (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


# ---------------------------------------------------------------------------------------- overrides
def parse_override(text: str) -> tuple[list[str], Any]:
    """``"--train.lr=2e-4"`` -> (["train", "lr"], 2e-4 or "2e-4"); the value is parsed as a YAML scalar."""
    body = text.removeprefix("--")
    if "=" not in body:
        raise ConfigError(f"override {text!r}: expected --section.key=value")
    name, raw = body.split("=", 1)
    parts = name.split(".")
    if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) for p in parts):
        raise ConfigError(f"override {text!r}: {name!r} is not a dotted key such as train.lr")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"override {text!r}: cannot parse value {raw!r} ({e})") from e
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Set each ``--a.b=value`` in a nested dict (a copy); keys are checked later by :func:`from_dict`."""
    import copy

    out = copy.deepcopy(data)
    for text in overrides:
        parts, value = parse_override(text)
        node = out
        for i, p in enumerate(parts[:-1]):
            child = node.get(p)
            if child is None:
                child = node[p] = {}
            elif not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(parts[:i + 1])} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return out


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
