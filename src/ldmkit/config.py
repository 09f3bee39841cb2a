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
from ldmkit.diffusion.config import DiffusionConfig
from ldmkit.networks.unet import UNET_PRESETS, UNetConfig
from ldmkit.registry import ConfigError, lookup
from ldmkit.samplers import SAMPLERS
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
    if tp in (bool, int, str):
        if not isinstance(value, tp) or (tp is int and isinstance(value, bool)):  # True is an int in Python
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
